"""DeSamba: the decoupled spectral-adaptive multi-sequence classifier (paper Fig. 1, Fig. 4, Eq. 5; DESIGN.md §6–§8).

Input: ``x: (N, S, D, H, W)`` or a dict ``{name: (N, D, H, W) or (N, 1, D, H, W)}`` holding exactly the model's
sequence names, and optionally ``tabular: (N, F)`` (NaN = missing; ``None`` = all missing). Per sequence ``i``::

    a_i = SAMNet_i(x_i).stages        four maps, CNN encoder (CE); SAMBlocks with FP, ConvNeXtV2 blocks without
    b_i = MambaOut3d_i(x_i).stages    four maps, Mamba encoder (ME)
    f_i = MultiScaleFusion_i(a_i, b_i)                        (N, feature_dim)
    r   = DRLM(f_1..f_S).representation  with De, else concat[f_1..f_S]
    t   = TabularEncoder(tabular)                             with TE
    logits = head(concat[r, t])       head = LayerNorm → dropout → Linear
    L = CE(logits, y) + 0.5 L_self + 0.5 L_cross              (Eq. 5, DeSambaLoss)

:class:`DeSambaConfig` holds Table 3's seven flags; the model and its ten ablation rows are registered per dataset
(``desamba_spine_ablation_<row>``). Entry points take ``scale="paper" | "small" | "tiny"`` (``"small"``: SAMNet-Tiny,
MambaOut-Femto; ``"tiny"``: one block per stage, widths 16-128, input (S, 32, 32, 32)) and ``literal=True`` (the
paper's reading wherever it gives one, docs/paper_literal.md). With CE every axis must be a positive multiple of 32.

- *(ours)* ``"paper"`` widths (the paper gives none) fit its 433.82 M parameters and 308.32 G MACs
  (``PAPER_SCALE_MEASURED``); evidence: benchmarks/results/model_notes.md#desamba
- ``"tiny"``/``"small"`` keep the paper's SAMBlock skip and multi-scale fusion (re-selected on validation AUC:
  benchmarks/results/tiny_defaults.md)
- *(ours)* the fusion block, tabular encoder, DRLM's encoder/decoder forms (their modules) and the head's LayerNorm.
- *(ours)* rows without TE accept and ignore ``tabular`` (one training loop serves every row).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import HeadContract
from backbones3d._registry import register_model
from backbones3d.mambaout3d import MambaOut3d
from backbones3d.samnet import SAMNet
from spectral3d.checks import check_bool, check_divisible, check_floating, check_int
from spectral3d.layers.drlm import DRLM
from spectral3d.layers.fusion import MultiScaleFusion
from spectral3d.layers.heads import ClassifierHead3d
from spectral3d.layers.tabular import TabularEncoder

__all__ = ["DeSamba", "DeSambaConfig", "DeSambaLoss", "SequenceEncoder"]

FLAGS = ("tabular_encoder", "cnn_encoder", "frequency_pathway", "mamba_encoder", "decouple", "cross_loss", "self_loss")


@dataclass(frozen=True)
class DeSambaConfig:
    """Everything that defines a DeSamba network; the defaults are ``desamba_spine`` at paper scale.

    Table 3's flags: TE ``tabular_encoder``, CE ``cnn_encoder`` (a SAMNet per sequence), FP ``frequency_pathway``
    (SAMBlocks, else ConvNeXtV2 blocks), ME ``mamba_encoder``, De ``decouple``, C ``cross_loss``, S ``self_loss``.

    Attributes:
        sequences: sequence names, in the order of the input's axis 1.
        num_classes, num_tabular: classes K, clinical features F.
        cnn_depths, cnn_dims, mamba_depths, mamba_dims: SAMNet and MambaOut3d stages.
        feature_dim, tabular_dim: widths of each fused sequence feature ``f_i`` (d) and of the tabular embedding ``t``.
        drlm_dim, drlm_hidden_dim: width of DRLM's unique/shared vectors and of its MLPs (default ``feature_dim``).
        fm_mode, num_bands, band_embedding: SAMB's modulation form, radial bands, band embedding (``False``: paper).
        spectral_stem: SAMNet's band-energy front end (needs FP).
        samblock_residual: SAMBlock's skip, ``"paper"`` (``0.5·x + 0.5·F_out``) or ``"identity"`` (``x + F_out``).
        fusion_stages: the fusion pools ``"all"`` stage outputs of both branches or only the ``"last"`` one of each.
        drlm_share_unique_encoder: one ``Enc_u`` for every sequence (the paper's notation).
        drlm_detach_targets: DRLM reconstructs ``f_i.detach()`` (``False``: ``f_i``, the paper's form).
        share_encoders: *(ours)* one CNN/Mamba/fusion encoder for every sequence, run as one batch.
        global_pool: fusion pooling, ``"avg"`` or ``"max"``.
        drop_rate, drop_path_rate: dropout before the classifier (and in the tabular MLP), encoders' stochastic depth.

    Example::

        >>> DeSambaConfig(sequences=("t1", "t2"), decouple=False, cross_loss=False, self_loss=False).flags
        {'TE': True, 'CE': True, 'FP': True, 'ME': True, 'De': False, 'C': False, 'S': False}
    """

    sequences: tuple[str, ...] = ("t1", "t2", "t2fs")
    num_classes: int = 6
    num_tabular: int = 8
    tabular_encoder: bool = True
    cnn_encoder: bool = True
    frequency_pathway: bool = True
    mamba_encoder: bool = True
    decouple: bool = True
    cross_loss: bool = True
    self_loss: bool = True
    cnn_depths: tuple[int, ...] = (3, 4, 6, 3)
    cnn_dims: tuple[int, ...] = (192, 384, 544, 640)
    mamba_depths: tuple[int, ...] = (6, 6, 9, 3)
    mamba_dims: tuple[int, ...] = (256, 352, 384, 448)
    feature_dim: int = 512
    tabular_dim: int = 128
    drlm_dim: int | None = None
    drlm_hidden_dim: int | None = None
    fm_mode: str = "band"
    num_bands: int = 8
    band_embedding: bool = True
    spectral_stem: bool = False
    samblock_residual: str = "paper"
    fusion_stages: str = "all"
    drlm_share_unique_encoder: bool = False
    drlm_detach_targets: bool = True
    share_encoders: bool = False
    global_pool: str = "avg"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        seqs = tuple(self.sequences)
        object.__setattr__(self, "sequences", seqs)
        for name in ("cnn_depths", "cnn_dims", "mamba_depths", "mamba_dims"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not seqs or not all(isinstance(s, str) and s for s in seqs) or len(set(seqs)) != len(seqs):
            raise ValueError(f"sequences: expected distinct non-empty names, got {seqs!r}")
        if not (self.cnn_encoder or self.mamba_encoder):
            raise ValueError("cnn_encoder, mamba_encoder: at least one image encoder (CE or ME) must be on")
        if self.frequency_pathway and not self.cnn_encoder:
            raise ValueError("frequency_pathway: the frequency pathway (FP) lives in the CNN encoder; it needs CE")
        if self.spectral_stem and not self.frequency_pathway:
            raise ValueError("spectral_stem: the spectral stem is part of the frequency pathway; it needs FP")
        if (self.cross_loss or self.self_loss) and not self.decouple:
            raise ValueError("cross_loss, self_loss: the reconstruction losses (C, S) need DRLM (decouple=True)")
        if self.decouple and len(seqs) < 2:
            raise ValueError(f"decouple: DRLM needs at least 2 sequences, got {len(seqs)} ({seqs})")
        if self.tabular_encoder and self.num_tabular < 1:
            raise ValueError(f"num_tabular: the tabular encoder (TE) needs at least 1 feature, got {self.num_tabular}")
        check_int(self.num_classes, "num_classes", minimum=0)
        check_int(self.num_tabular, "num_tabular", minimum=0)

    @property
    def flags(self) -> dict[str, bool]:
        """The seven Table 3 flags by their paper names."""
        return dict(zip(("TE", "CE", "FP", "ME", "De", "C", "S"), (getattr(self, f) for f in FLAGS)))


class SequenceEncoder(nn.Module):
    """One sequence's encoder (CE, FP, ME of ``config``), fused (Fig. 4): ``(N, 1, D, H, W) -> (N, feature_dim)``."""

    def __init__(self, config: DeSambaConfig) -> None:
        super().__init__()
        c = config
        self.cnn = (
            SAMNet(
                in_chans=1,
                depths=c.cnn_depths,
                dims=c.cnn_dims,
                frequency=c.frequency_pathway,
                fm_mode=c.fm_mode,
                num_bands=c.num_bands,
                band_embedding=c.band_embedding,
                spectral_stem=c.spectral_stem,
                residual=c.samblock_residual,
                drop_path_rate=c.drop_path_rate,
                features_only=True,
            )
            if c.cnn_encoder
            else None
        )
        self.mamba = (
            MambaOut3d(
                in_chans=1,
                depths=c.mamba_depths,
                dims=c.mamba_dims,
                drop_path_rate=c.drop_path_rate,
                features_only=True,
            )
            if c.mamba_encoder
            else None
        )
        dims_cnn = c.cnn_dims if c.cnn_encoder else None
        dims_mamba = c.mamba_dims if c.mamba_encoder else None
        self.fusion = MultiScaleFusion(
            dims_cnn or dims_mamba,
            dims_mamba if dims_cnn else None,
            out_dim=c.feature_dim,
            global_pool=c.global_pool,
            stages=c.fusion_stages,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = []
        if self.cnn is not None:
            branches.append(self.cnn.forward_stages(x))
        if self.mamba is not None:
            branches.append(self.mamba.forward_stages(x))
        return self.fusion(*branches)


class DeSamba(HeadContract):
    """DeSamba (paper Fig. 1): per-sequence SAMNet + MambaOut3d encoders, fusion, DRLM, tabular encoder.

    Args:
        config: a :class:`DeSambaConfig` (default: ``desamba_spine`` at paper scale).
        **kwargs: :class:`DeSambaConfig` fields overriding ``config``; timm's ``in_chans`` must equal S.

    Shapes: ``forward(x, tabular=None)``, ``x`` as in the module docstring, ``tabular: (N, F)`` → ``(N, K)``.

    Example::

        >>> model, x = desamba_spine_tiny(), torch.randn(2, 3, 32, 32, 32)
        >>> model(x).shape, sorted(model.forward_with_aux(x, tabular=torch.randn(2, 8))[1])
        (torch.Size([2, 6]), ['cross', 'self'])
    """

    def __init__(self, config: DeSambaConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        in_chans = kwargs.pop("in_chans", None)
        config = dataclasses.replace(config or DeSambaConfig(), **kwargs)
        if in_chans is not None and in_chans != len(config.sequences):
            raise ValueError(
                f"in_chans: DeSamba takes one channel per sequence; expected {len(config.sequences)} for sequences "
                f"{list(config.sequences)}, got {in_chans} (pass sequences=... to change them)"
            )
        self.config = config
        self.sequences: tuple[str, ...] = config.sequences
        self.in_chans = len(config.sequences)
        self.num_classes = config.num_classes
        self.num_tabular = config.num_tabular
        self.grad_checkpointing = False
        self.size_multiple = 4 * 2 ** (len(config.cnn_depths) - 1) if config.cnn_encoder else 1

        names = ("shared",) if config.share_encoders else config.sequences
        self.encoders = nn.ModuleDict({name: SequenceEncoder(config) for name in names})
        s, d = len(config.sequences), config.feature_dim
        self.drlm = (
            DRLM(
                s,
                d,
                unique_dim=config.drlm_dim,
                shared_dim=config.drlm_dim,
                hidden_dim=config.drlm_hidden_dim,
                share_unique_encoder=config.drlm_share_unique_encoder,
                detach_targets=config.drlm_detach_targets,
                self_reconstruction=config.self_loss,
                cross_reconstruction=config.cross_loss,
            )
            if config.decouple
            else None
        )
        self.tabular = (
            TabularEncoder(config.num_tabular, config.tabular_dim, drop_rate=config.drop_rate)
            if config.tabular_encoder
            else None
        )
        image_features = self.drlm.out_dim if self.drlm is not None else s * d
        self.num_features = self.head_hidden_size = image_features + (config.tabular_dim if self.tabular else 0)
        # LayerNorm → dropout → Linear on the (N, num_features) vector (pooling is a no-op there)
        self.head = ClassifierHead3d(
            self.num_features, config.num_classes, drop_rate=config.drop_rate, norm_layer=nn.LayerNorm
        )
        self._init_classifier()

    # ----- timm model contract (HeadContract: get_classifier, forward_head, set_grad_checkpointing) ------
    def _init_classifier(self) -> None:
        if isinstance(self.head.fc, nn.Linear):
            nn.init.trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` (0: identity); ``global_pool`` sets the fusion pooling."""
        if global_pool is not None:
            for encoder in self.encoders.values():
                encoder.fusion.set_global_pool(global_pool)
        self.head.reset(num_classes)
        self.num_classes = num_classes
        self._init_classifier()

    def gradcam_target_layers(self) -> dict[str, list[list[nn.Module]]]:
        """Grad-CAM candidates per sequence (``spectral3d.gradcam``), deepest first: level ``k`` holds stage ``k``
        of the CNN and of the Mamba encoder (those the ablation row has), averaged into one map per sequence."""
        levels = {}
        for name in self.sequences:
            encoder = self.encoders["shared" if self.config.share_encoders else name]
            stage_lists = [list(branch.stages) for branch in (encoder.cnn, encoder.mamba) if branch is not None]
            depth = min(len(s) for s in stage_lists)
            levels[name] = [[s[len(s) - depth + k] for s in stage_lists] for k in reversed(range(depth))]
        return levels

    def gradcam_rows(self) -> dict[str, tuple[int, int]]:
        """``{sequence: (i, S)}`` with ``share_encoders`` (else ``{}``): the one encoder runs
        ``x.reshape(N * S, 1, D, H, W)``, so rows ``i::S`` of its activations belong to sequence ``i``."""
        if not self.config.share_encoders:
            return {}
        return {name: (i, len(self.sequences)) for i, name in enumerate(self.sequences)}

    # ----- input handling ------------------------------------------------------------------------
    def _stack(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        s = len(self.sequences)
        if isinstance(x, Mapping):
            given, wanted = set(x), set(self.sequences)
            if given != wanted:
                raise ValueError(
                    f"x: expected exactly the sequences {list(self.sequences)}, got {sorted(given)} "
                    f"(missing {sorted(wanted - given)}, unknown {sorted(given - wanted)})"
                )
            vols = []
            for name in self.sequences:
                v = x[name]
                if not isinstance(v, torch.Tensor):
                    raise TypeError(f"x[{name!r}]: expected a torch.Tensor (N, D, H, W), got {type(v).__name__}")
                if v.ndim == 5 and v.shape[1] == 1:
                    v = v[:, 0]
                if v.ndim != 4:
                    raise ValueError(
                        f"x[{name!r}]: expected shape (N, D, H, W) or (N, 1, D, H, W), got {tuple(v.shape)}"
                    )
                if vols and v.shape != vols[0].shape:
                    raise ValueError(
                        f"x[{name!r}]: shape {tuple(v.shape)} differs from x[{self.sequences[0]!r}]'s "
                        f"{tuple(vols[0].shape)}; resample the sequences onto one grid"
                    )
                vols.append(v)
            x = torch.stack(vols, dim=1)
        elif not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a tensor (N, S, D, H, W) or a dict of sequences, got {type(x).__name__}")
        if x.ndim != 5:
            raise ValueError(f"x: expected a 5-D tensor (N, S={s}, D, H, W), got shape {tuple(x.shape)} ({x.ndim}-D)")
        if x.shape[1] != s:
            raise ValueError(
                f"x: expected S={s} sequences {list(self.sequences)} on axis 1, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        check_floating(x)
        if self.size_multiple > 1:
            m = self.size_multiple
            check_divisible(
                tuple(x.shape[2:]),
                (m, m, m),
                name="x spatial size",
                what=f"the CNN encoder (SAMNet's stride-4 stem and {len(self.config.cnn_depths) - 1} stride-2 "
                "downsamplings)",
            )
        return x

    def _check_tabular(self, tabular: torch.Tensor | None, batch: int) -> None:
        if tabular is None:
            return
        if not isinstance(tabular, torch.Tensor):
            raise TypeError(
                f"tabular: expected a torch.Tensor (N, {self.num_tabular}) or None, got {type(tabular).__name__}"
            )
        if tabular.ndim != 2 or tabular.shape[1] != self.num_tabular:
            raise ValueError(f"tabular: expected shape (N, F={self.num_tabular}), got {tuple(tabular.shape)}")
        if tabular.shape[0] != batch:
            raise ValueError(f"tabular: batch size {tabular.shape[0]} differs from the images' {batch}")

    # ----- forward -------------------------------------------------------------------------------
    def _encode_sequences(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, S, D, H, W) -> (N, S, feature_dim)``."""
        n, s = x.shape[:2]
        if self.config.share_encoders:
            f = self.encoders["shared"](x.reshape(n * s, 1, *x.shape[2:]))
            return f.reshape(n, s, -1)
        return torch.stack([self.encoders[name](x[:, i : i + 1]) for i, name in enumerate(self.sequences)], dim=1)

    def _features_and_aux(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], tabular: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self._stack(x)
        self._check_tabular(tabular, x.shape[0])
        f = self._encode_sequences(x)
        aux: dict[str, torch.Tensor] = {}
        if self.drlm is not None:
            representation, aux = self.drlm(f)
        else:
            representation = f.flatten(1)
        if self.tabular is not None:
            t = self.tabular(tabular, batch_size=x.shape[0])
            representation = torch.cat([representation, t.to(representation.dtype)], dim=-1)
        return representation, aux

    def forward_features(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], tabular: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The classifier's input ``(N, num_features)``: DRLM representation (or concat[f_i]) and ``t``."""
        return self._features_and_aux(x, tabular)[0]

    def forward(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], tabular: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, tabular))

    def forward_with_aux(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], tabular: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the reconstruction losses whose flags are on (``{}`` without DRLM), for :class:`DeSambaLoss`."""
        features, aux = self._features_and_aux(x, tabular)
        return self.forward_head(features), aux


class DeSambaLoss(nn.Module):
    """Paper Eq. 5: ``L = CE(logits, y) + self_weight * L_self + cross_weight * L_cross``.

    Args:
        self_weight, cross_weight: weights of DRLM's self- and cross-reconstruction losses (paper: 0.5, 0.5).
        label_smoothing, weight: passed to the cross-entropy (``weight``: per-class ``(K,)``, e.g. inverse frequencies).

    ``forward(logits, target, aux)`` returns ``(total, parts)`` (detached terms for logging); absent aux terms add 0.

    Example::

        >>> logits, aux = desamba_spine_tiny().forward_with_aux(torch.randn(2, 3, 32, 32, 32))
        >>> sorted(DeSambaLoss()(logits, torch.tensor([0, 5]), aux)[1])
        ['cls', 'cross', 'self']
    """

    def __init__(
        self,
        self_weight: float = 0.5,
        cross_weight: float = 0.5,
        label_smoothing: float = 0.0,
        weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.weights = {"self": float(self_weight), "cross": float(cross_weight)}
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, aux: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        aux = dict(aux or {})
        unknown = set(aux) - set(self.weights)
        if unknown:
            raise ValueError(f"aux: expected only the keys {sorted(self.weights)}, got unknown {sorted(unknown)}")
        cls = F.cross_entropy(logits, target, weight=self.class_weight, label_smoothing=self.label_smoothing)
        total = cls
        parts = {"cls": cls.detach()}
        for name, value in aux.items():
            total = total + self.weights[name] * value
            parts[name] = value.detach()
        return total, parts

    def extra_repr(self) -> str:
        return f"self_weight={self.weights['self']}, cross_weight={self.weights['cross']}"


# ----- configs and entry points ------------------------------------------------------------------
SCALES: dict[str, dict[str, Any]] = {
    "paper": {},  # the DeSambaConfig defaults
    "small": dict(
        cnn_dims=(48, 96, 192, 384),
        mamba_depths=(3, 3, 9, 3),
        mamba_dims=(48, 96, 192, 288),
        feature_dim=256,
        tabular_dim=64,
    ),
    # tiny: widths 16-128, one block per stage (benchmarks/results/fusion_ablation.md); skip and fusion are the
    # paper's (benchmarks/results/tiny_defaults.md)
    "tiny": dict(
        cnn_depths=(1, 1, 1, 1),
        cnn_dims=(16, 32, 64, 128),
        mamba_depths=(1, 1, 1, 1),
        mamba_dims=(16, 32, 64, 128),
        feature_dim=64,
        tabular_dim=16,
    ),
}
DATASETS: dict[str, dict[str, Any]] = {
    "spine": dict(sequences=("t1", "t2", "t2fs"), num_classes=6, num_tabular=8),
    "spondylitis": dict(sequences=("t1", "t2fs"), num_classes=2, num_tabular=8),
}
# Table 3 rows: which of TE, CE, FP, ME, De, C, S are on.
ABLATION_ROWS: dict[str, tuple[int, ...]] = {
    "cnv2": (0, 1, 0, 0, 0, 0, 0),
    "samnet": (0, 1, 1, 0, 0, 0, 0),
    "mo": (0, 0, 0, 1, 0, 0, 0),
    "desn": (0, 1, 1, 0, 1, 1, 1),
    "demo": (0, 0, 0, 1, 1, 1, 1),
    "samba": (0, 1, 1, 1, 0, 0, 0),
    "tf": (1, 1, 1, 1, 0, 0, 0),
    "de_c": (1, 1, 1, 1, 1, 1, 0),
    "de_s": (1, 1, 1, 1, 1, 0, 1),
    "full": (1, 1, 1, 1, 1, 1, 1),
}
# literal=True: the paper's reading wherever it gives one (docs/paper_literal.md); explicit kwargs still win
LITERAL: dict[str, Any] = dict(
    fm_mode="channel",
    band_embedding=False,
    spectral_stem=False,
    samblock_residual="paper",
    fusion_stages="all",
    drlm_share_unique_encoder=True,
    drlm_detach_targets=False,
)
# What the paper scale reaches (desamba_spine, batch 1, input (3, 64, 96, 96), meta device; FFT excluded).
PAPER_SCALE_MEASURED = {"params_M": 430.69, "macs_G": 305.29, "paper_params_M": 433.82, "paper_macs_G": 308.32}


def _first_convs(sequences: Sequence[str], flags: Sequence[int]) -> list[str]:
    _, ce, _, me, *_ = flags
    convs = []
    for name in sequences:
        if ce:
            convs.append(f"encoders.{name}.cnn.stem.0")
        if me:
            convs.append(f"encoders.{name}.mamba.stem.conv1")
    return convs


def _cfg(dataset: str, flags: Sequence[int] = ABLATION_ROWS["full"], size: int = 64, **kwargs: Any) -> dict[str, Any]:
    seqs = DATASETS[dataset]["sequences"]
    hw = 96 if size == 64 else size
    return {
        "input_size": (len(seqs), size, hw, hw),
        "num_classes": DATASETS[dataset]["num_classes"],
        "first_conv": _first_convs(seqs, flags),
        "classifier": "head.fc",
        "sequences": list(seqs),
        "num_tabular": DATASETS[dataset]["num_tabular"],
        **kwargs,
    }


default_cfgs = {
    "desamba_spine": _cfg("spine"),
    "desamba_spondylitis": _cfg("spondylitis"),
    "desamba_spine_tiny": _cfg("spine", size=32),
    "desamba_spondylitis_tiny": _cfg("spondylitis", size=32),
    "test_desamba_3d": _cfg("spine", size=32, first_conv=_first_convs(("shared",), ABLATION_ROWS["full"])),
    **{
        f"desamba_{dataset}_ablation_{row}": _cfg(dataset, flags)
        for dataset in DATASETS
        for row, flags in ABLATION_ROWS.items()
    },
}


def _create_desamba(
    variant: str, pretrained: bool, dataset: str, scale: str, flags: Sequence[int], **kwargs: Any
) -> DeSamba:
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {sorted(SCALES)}, got {scale!r}")
    literal = check_bool(kwargs.pop("literal", False), "literal")
    args: dict[str, Any] = {
        **SCALES[scale],
        **(LITERAL if literal else {}),
        **DATASETS[dataset],
        **dict(zip(FLAGS, map(bool, flags))),
    }
    model = build_model_with_cfg(DeSamba, variant, pretrained, **dict(args, **kwargs))
    if scale == "tiny":  # the registered cfg describes the paper scale; tiny runs at 32³
        model.pretrained_cfg["input_size"] = (model.in_chans, 32, 32, 32)
    return model


@register_model
def desamba_spine(pretrained: bool = False, scale: str = "paper", **kwargs: Any) -> DeSamba:
    """DeSamba for spinal metastasis: t1, t2, t2fs → 6 primary sites, 8 clinical features (paper Table 1)."""
    return _create_desamba("desamba_spine", pretrained, "spine", scale, ABLATION_ROWS["full"], **kwargs)


@register_model
def desamba_spondylitis(pretrained: bool = False, scale: str = "paper", **kwargs: Any) -> DeSamba:
    """DeSamba for spondylitis: t1, t2fs → tuberculous vs pyogenic, 8 clinical features (paper Table 2)."""
    return _create_desamba("desamba_spondylitis", pretrained, "spondylitis", scale, ABLATION_ROWS["full"], **kwargs)


@register_model
def desamba_spine_tiny(pretrained: bool = False, **kwargs: Any) -> DeSamba:
    """``desamba_spine(scale="tiny")``: CPU-trainable, input (3, 32, 32, 32)."""
    return _create_desamba("desamba_spine_tiny", pretrained, "spine", "tiny", ABLATION_ROWS["full"], **kwargs)


@register_model
def desamba_spondylitis_tiny(pretrained: bool = False, **kwargs: Any) -> DeSamba:
    """``desamba_spondylitis(scale="tiny")``: CPU-trainable, input (2, 32, 32, 32)."""
    return _create_desamba(
        "desamba_spondylitis_tiny", pretrained, "spondylitis", "tiny", ABLATION_ROWS["full"], **kwargs
    )


# Table 3's rows as registered presets, for both datasets: desamba_{spine,spondylitis}_ablation_<row>.
ABLATION_ROW_DOCS: dict[str, str] = {
    "cnv2": "Table 3 row CNV2: CE only (ConvNeXtV2 encoders, no frequency pathway).",
    "samnet": "Table 3 row SN: CE + FP (SAMNet encoders).",
    "mo": "Table 3 row MO: ME only (MambaOut encoders).",
    "desn": "Table 3 row De+SN: CE + FP + De with both reconstruction losses.",
    "demo": "Table 3 row De+MO: ME + De with both reconstruction losses.",
    "samba": "Table 3 row SN+MO: CE + FP + ME, no decoupling.",
    "tf": "Table 3 row w/ clinical features: TE + CE + FP + ME, no decoupling.",
    "de_c": "Table 3 row w/ Decouple (no Self): everything but the self-reconstruction loss.",
    "de_s": "Table 3 row w/ Decouple (no Cross): everything but the cross-reconstruction loss.",
    "full": "Table 3 last row: the full DeSamba (same as ``desamba_{dataset}``).",
}


def _register_ablation(dataset: str, row: str) -> None:
    name = f"desamba_{dataset}_ablation_{row}"

    def entrypoint(pretrained: bool = False, scale: str = "paper", **kwargs: Any) -> DeSamba:
        return _create_desamba(name, pretrained, dataset, scale, ABLATION_ROWS[row], **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f"{ABLATION_ROW_DOCS[row].format(dataset=dataset)} Sequences {DATASETS[dataset]['sequences']}."
    globals()[name] = register_model(entrypoint)


for _dataset in DATASETS:
    for _row in ABLATION_ROWS:
        _register_ablation(_dataset, _row)


@register_model
def test_desamba_3d(pretrained: bool = False, **kwargs: Any) -> DeSamba:
    """A tiny DeSamba for the test-suite: ``desamba_spine_tiny`` with one encoder shared by the sequences (1.50 M)."""
    kwargs = dict(dict(share_encoders=True), **kwargs)
    return _create_desamba("test_desamba_3d", pretrained, "spine", "tiny", ABLATION_ROWS["full"], **kwargs)
