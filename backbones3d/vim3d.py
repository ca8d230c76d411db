"""Vision Mamba (Vim) for volumes: bidirectional selective-scan blocks over the flattened 3-D patch tokens.

Zhu et al. (ICML 2024), released ``vim_*_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2``, 3-D patches::

    tokens = PatchEmbed(x) (strided Conv3d, L = (D/p_d)(H/p_h)(W/p_w), flattened in D, H, W order)
    r      = insert(tokens, cls, at L // 2) + pos_embed                                  (N, L + 1, C)
    r      ← r + DropPath(BiMamba(Norm(r)))     depth times, r in >= float32, Norm = RMSNorm or LN
    BiMamba(h) = out_proj((y_fwd(x, z) + flip(y_bwd(flip(x), flip(z)))) / 2),  x, z = in_proj(h)
    u      = SiLU(conv1d_causal(x)),  Δ, B, C from x_proj(u) (Δ through dt_proj and softplus)
    y_dir  = selective_scan(u, Δ, A = -exp(A_log), B, C, D) * silu(z)
    logits = head(norm_f(r)[:, L // 2])                    (global_pool="token")

Shapes: ``forward_features`` ``(N, in_chans, D, H, W) -> (N, L + 1, embed_dim)``, ``forward`` ``(N, num_classes)``.
Scan: :func:`spectral3d.ops.selective_scan.selective_scan`; Vim's init (benchmarks/results/model_notes.md#vim3d).

- *(ours)* tokens are flattened in ``D, H, W`` order (a raster scan, as Vim scans ``H, W``).
- *(ours)* another grid resamples the patch position embedding trilinearly; the class entry moves to the middle.
- *(ours)* ``global_pool``: ``"token"`` (Vim's), ``"avg"`` / ``"max"`` over patch tokens, or ``""``, as ``vit3d``.
- *(ours)* stochastic depth rises linearly to ``drop_path_rate``; ``drop_rate`` is dropout before the head.
- *(ours)* class defaults are ``vim_tiny_3d`` at ``img_size=(64, 96, 96)`` (4 × 6 × 6 = 144 patch tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, lecun_normal_, trunc_normal_
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import FlatHeadContract, check_int, check_rate, linear_drop_path_rates, run_blocks
from backbones3d._registry import register_model
from spectral3d.checks import check_channels, check_ndim, to_3tuple_int
from spectral3d.layers.heads import POOL_TYPES, check_global_pool
from spectral3d.layers.patch_embed import PatchEmbed3d
from spectral3d.ops.selective_scan import selective_scan

__all__ = ["BiMambaMixer", "VimBlock3d", "VisionMamba3d"]


class BiMambaMixer(nn.Module):
    """Vim's "bimamba v2" mixer (module docstring): ``(N, L, dim)``; ``dt_rank=None`` gives ``ceil(dim / 16)``.

    Shared ``in_proj``, ``out_proj``; backward ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D`` end in ``_b``.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        chunk_size: int = 16,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            check_int(value, name)
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.dim, self.d_state, self.d_conv, self.expand = dim, d_state, d_conv, expand
        self.d_inner = expand * dim
        self.dt_rank = math.ceil(dim / 16) if dt_rank is None else dt_rank
        self.chunk_size = chunk_size
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        for suffix in ("", "_b"):
            conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
            x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            # Mamba's Δ initialisation: weights ±dt_rank^-0.5, bias = softplus⁻¹(Δ), Δ log-uniform in [dt_min, dt_max]
            nn.init.uniform_(dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            with torch.no_grad():
                dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]
            A_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1)
            setattr(self, f"conv1d{suffix}", conv)
            setattr(self, f"x_proj{suffix}", x_proj)
            setattr(self, f"dt_proj{suffix}", dt_proj)
            setattr(self, "A_log" if suffix == "" else "A_b_log", nn.Parameter(A_log))
            setattr(self, f"D{suffix}", nn.Parameter(torch.ones(self.d_inner)))
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)

    def _scan_direction(self, x: torch.Tensor, z: torch.Tensor, backward: bool) -> torch.Tensor:
        """One direction on ``x``, ``z`` ``(N, d_inner, L)`` already in that direction's token order."""
        suffix = "_b" if backward else ""
        conv: nn.Conv1d = getattr(self, f"conv1d{suffix}")
        x_proj: nn.Linear = getattr(self, f"x_proj{suffix}")
        dt_proj: nn.Linear = getattr(self, f"dt_proj{suffix}")
        A_log = self.A_b_log if backward else self.A_log
        D = self.D_b if backward else self.D
        length = x.shape[-1]
        x = F.silu(conv(x)[..., :length])  # causal: output t sees inputs t-d_conv+1 .. t
        dt, B, C = x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)  # the bias is added inside the scan, before softplus
        return selective_scan(
            x,
            delta,
            -torch.exp(A_log),
            B.transpose(1, 2),
            C.transpose(1, 2),
            D,
            z,
            delta_bias=dt_proj.bias,
            delta_softplus=True,
            chunk_size=self.chunk_size,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x).transpose(1, 2)  # (N, 2·d_inner, L)
        x_in, z = xz.chunk(2, dim=1)
        y_fwd = self._scan_direction(x_in, z, backward=False)
        y_bwd = self._scan_direction(x_in.flip(-1), z.flip(-1), backward=True).flip(-1)
        return self.out_proj(((y_fwd + y_bwd) / 2).transpose(1, 2))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, "
            f"dt_rank={self.dt_rank}, chunk_size={self.chunk_size}"
        )


class VimBlock3d(nn.Module):
    """Vim block ``r ← r + DropPath(BiMambaMixer(Norm(r)))``: ``(N, L, dim)``, dtype ``promote_types(x, float32)``."""

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        rms_norm: bool = True,
        norm_eps: float = 1e-5,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=norm_eps) if rms_norm else nn.LayerNorm(dim, eps=norm_eps)
        self.mixer = BiMambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        residual = residual.to(torch.promote_types(residual.dtype, torch.float32))
        return residual + self.drop_path(self.mixer(self.norm(residual.to(self.norm.weight.dtype))))


class VisionMamba3d(FlatHeadContract):
    """Vision Mamba (Vim, bimamba v2) over 3-D patch tokens with a middle class token (module docstring).

    Args:
        img_size: the ``(D, H, W)`` (or int) the position embedding is stored for; other tiled sizes resample it.
        d_state, d_conv, expand: as in :class:`BiMambaMixer`.
        rms_norm: ``RMSNorm`` (Vim) rather than ``LayerNorm`` in the blocks and the final norm.
        norm_eps: epsilon of the norms.
        in_chans, num_classes, global_pool, patch_size, embed_dim, depth, drop_rate, pos_drop_rate, drop_path_rate:
            see :class:`~backbones3d._contract.HeadContract`.

    Example::

        >>> model = VisionMamba3d(img_size=32, patch_size=8, embed_dim=32, depth=2, d_state=8)
        >>> model(torch.randn(2, 3, 32, 32, 32)).shape, model.forward_features(torch.randn(1, 3, 16, 32, 48)).shape
        (torch.Size([2, 2]), torch.Size([1, 49, 32]))
    """

    classifier_name = "head"
    global_pools = ("token", *POOL_TYPES)

    def __init__(
        self,
        img_size: int | Sequence[int] = (64, 96, 96),
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        num_classes: int = 2,
        global_pool: str = "token",
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        rms_norm: bool = True,
        norm_eps: float = 1e-5,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_global_pool(global_pool, allowed=self.global_pools)
        for name, value in (("in_chans", in_chans), ("embed_dim", embed_dim), ("depth", depth)):
            check_int(value, name)
        check_int(num_classes, "num_classes", minimum=0)
        self.in_chans, self.num_classes, self.global_pool = in_chans, num_classes, global_pool
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.grad_checkpointing = False
        self.img_size = to_3tuple_int(img_size, "img_size")
        self.patch_embed = PatchEmbed3d(patch_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size(self.img_size)
        num_patches = math.prod(self.grid_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(check_rate(pos_drop_rate, "pos_drop_rate"))
        rates = linear_drop_path_rates(drop_path_rate, (depth,))[0]
        self.layers = nn.ModuleList(
            VimBlock3d(embed_dim, d_state, d_conv, expand, rms_norm, norm_eps, drop_path=rate) for rate in rates
        )
        self.norm_f = nn.RMSNorm(embed_dim, eps=norm_eps) if rms_norm else nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(check_rate(drop_rate, "drop_rate"))
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
        for module in self.modules():
            bias = module.bias if isinstance(module, nn.Linear) else None
            if bias is not None and not getattr(bias, "_no_reinit", False):
                nn.init.zeros_(bias)
        for block in self.layers:  # GPT-2-style rescaling of the residual branch's last projection
            nn.init.kaiming_uniform_(block.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                block.mixer.out_proj.weight /= math.sqrt(depth)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters excluded from weight decay: position embedding, class token and the ``A_log``s."""
        names = {n for n, _ in self.named_parameters() if n.endswith(("A_log", "A_b_log"))}
        return {"pos_embed", "cls_token"} | names

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's convention)."""
        blocks = [(r"^layers\.(\d+)", None), (r"^norm_f", (99999,))]
        return dict(stem=r"^cls_token|^pos_embed|^patch_embed", blocks=blocks)

    def position_embedding(self, grid: Sequence[int]) -> torch.Tensor:
        """``(1, prod(grid) + 1, embed_dim)`` for a patch grid ``(d, h, w)``, class entry at ``prod(grid) // 2``."""
        grid = tuple(grid)
        if grid == self.grid_size:
            return self.pos_embed
        mid = math.prod(self.grid_size) // 2
        cls_pos = self.pos_embed[:, mid : mid + 1]
        patch_pos = torch.cat([self.pos_embed[:, :mid], self.pos_embed[:, mid + 1 :]], dim=1)
        patch_pos = patch_pos.reshape(1, *self.grid_size, self.embed_dim).permute(0, 4, 1, 2, 3)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="trilinear", align_corners=False)
        patch_pos = patch_pos.flatten(2).transpose(1, 2)
        new_mid = math.prod(grid) // 2
        return torch.cat([patch_pos[:, :new_mid], cls_pos, patch_pos[:, new_mid:]], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, D, H, W) -> (N, L + 1, embed_dim)``: normalised tokens, class token at ``L // 2``."""
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        grid = self.patch_embed.grid_size(x.shape[2:])
        x = self.patch_embed(x)
        mid = x.shape[1] // 2
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([x[:, :mid], cls, x[:, mid:]], dim=1)
        residual = self.pos_drop(x + self.position_embedding(grid).to(x.dtype))
        residual = run_blocks(self.layers, residual, self.grad_checkpointing)
        return self.norm_f(residual.to(self.norm_f.weight.dtype))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens and classify; ``pre_logits=True`` returns the pooled ``(N, embed_dim)``."""
        mid = (x.shape[1] - 1) // 2
        if self.global_pool == "token":
            x = x[:, mid]
        elif self.global_pool in ("avg", "max"):
            patches = torch.cat([x[:, :mid], x[:, mid + 1 :]], dim=1)
            x = patches.mean(dim=1) if self.global_pool == "avg" else patches.amax(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def gradcam_target_layers(self) -> dict[str, list[list[nn.Module]]]:
        """Grad-CAM candidate layers (``spectral3d.gradcam``): the blocks, deepest first."""
        return {"input": [[block] for block in reversed(self.layers)]}

    def gradcam_reshape(self, tokens: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """A block's tokens ``(N, L + 1, C)`` for an input of ``size`` ``(D, H, W)`` -> ``(N, C, d, h, w)``
        on the patch grid, the middle class token (index ``L // 2``) dropped."""
        grid = self.patch_embed.grid_size(size)
        n_patch = math.prod(grid)
        if tokens.ndim != 3 or tokens.shape[1] != n_patch + 1:
            raise ValueError(
                f"tokens: expected (N, {n_patch} + 1, C) for the patch grid {tuple(grid)}, got {tuple(tokens.shape)}"
            )
        mid = n_patch // 2
        patches = torch.cat([tokens[:, :mid], tokens[:, mid + 1 :]], dim=1)
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        **kwargs,
    }


default_cfgs = {
    "vim_tiny_3d": _cfg(),
    "vim_small_3d": _cfg(),
    "test_vim_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_vim3d(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionMamba3d:
    return build_model_with_cfg(VisionMamba3d, variant, pretrained, **kwargs)


@register_model
def vim_tiny_3d(pretrained: bool = False, **kwargs: Any) -> VisionMamba3d:
    """Vim-Ti 3D: width 192, depth 24, d_state 16, expand 2 (Vim's ``vim_tiny_patch16_224_bimambav2...``)."""
    args = dict(patch_size=16, embed_dim=192, depth=24, d_state=16, expand=2)
    return _create_vim3d("vim_tiny_3d", pretrained, **dict(args, **kwargs))


@register_model
def vim_small_3d(pretrained: bool = False, **kwargs: Any) -> VisionMamba3d:
    """Vim-S 3D: width 384, depth 24, d_state 16, expand 2 (Vim's ``vim_small_patch16_224_bimambav2...``)."""
    args = dict(patch_size=16, embed_dim=384, depth=24, d_state=16, expand=2)
    return _create_vim3d("vim_small_3d", pretrained, **dict(args, **kwargs))


@register_model
def test_vim_3d(pretrained: bool = False, **kwargs: Any) -> VisionMamba3d:
    """A tiny Vim for tests: 32³ input, patch 8 (64 tokens), width 64, depth 2, d_state 8."""
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, d_state=8, expand=2)
    return _create_vim3d("test_vim_3d", pretrained, **dict(args, **kwargs))
