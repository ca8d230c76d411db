"""DRLM, the Decoupled Representation Learning Module (paper Eq. 3–5, Fig. 4; DESIGN.md §7); no classifier::

    U_i    = Enc_u^i(f_i)                                  f_i: (N, d), S ≥ 2 (a list or (N, S, d))     (Eq. 3)
    S_ij   = Enc_s(f_i, f_j)            for i < j          shared part of a pair           (Eq. 3)
    SRF_i  = SDec_i(U_i, mean_{j != i} S_ij)               self-reconstruction             (Eq. 4)
    CRF_i  = CDec_i(U_i, mean_{j<k; j,k != i} S_jk)        cross-reconstruction            (Eq. 4)
    L_self = mean_i L1(SRF_i, f_i),   L_cross = mean_i L1(CRF_i, f_i)                      (Eq. 5)
    representation = concat[U_1, ..., U_S, mean_{i<j} S_ij]          (N, S * unique_dim + shared_dim)

All *(ours)*: one ``Enc_u`` per sequence (``share_unique_encoder=True``: the paper's one); ``Enc_s`` symmetric;
decoders take the mean of their shared vectors; MLPs Linear → GELU → Linear; S = 2: cross uses ``Enc_s(f_j, f_j)``;
targets ``f_i.detach()`` (``detach_targets``); only enabled decoders (Table 3); benchmarks/results/library_notes.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from torch import nn

from spectral3d.checks import check_int

__all__ = ["DRLM", "DRLMOutput", "SymmetricPairEncoder"]


class DRLMOutput(NamedTuple):
    """``representation`` ``(N, S * unique_dim + shared_dim)``; ``losses`` scalar L1, keys ``"self"``/``"cross"``."""

    representation: torch.Tensor
    losses: dict[str, torch.Tensor]


class SymmetricPairEncoder(nn.Module):
    """``Enc_s(a, b) = fc2(GELU(fc1(a) + fc1(b)))``, ``in_dim → hidden_dim → out_dim``, symmetric in a, b.

    Example::

        >>> enc, (a, b) = SymmetricPairEncoder(16, 32, 8), torch.randn(2, 2, 16); torch.allclose(enc(a, b), enc(b, a))
        True
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(a) + self.fc1(b)))


class DRLM(nn.Module):
    """``unique_dim``/``shared_dim``/``hidden_dim``: ``U_i``, ``S_ij``, MLP widths (d); ``*_reconstruction``: build it.

    Example::

        >>> out = DRLM(num_sequences=3, dim=32)(torch.randn(4, 3, 32)); out.representation.shape, sorted(out.losses)
        (torch.Size([4, 128]), ['cross', 'self'])
    """

    def __init__(
        self,
        num_sequences: int,
        dim: int,
        unique_dim: int | None = None,
        shared_dim: int | None = None,
        hidden_dim: int | None = None,
        share_unique_encoder: bool = False,
        detach_targets: bool = True,
        self_reconstruction: bool = True,
        cross_reconstruction: bool = True,
    ) -> None:
        super().__init__()
        check_int(num_sequences, "num_sequences", minimum=2)
        for name, value in (
            ("dim", dim),
            ("unique_dim", unique_dim),
            ("shared_dim", shared_dim),
            ("hidden_dim", hidden_dim),
        ):
            if value is not None:
                check_int(value, name)
        self.num_sequences = num_sequences
        self.dim = dim
        self.unique_dim = unique_dim or dim
        self.shared_dim = shared_dim or dim
        self.hidden_dim = hidden_dim or dim
        self.share_unique_encoder = share_unique_encoder
        self.detach_targets = detach_targets
        self.out_dim = num_sequences * self.unique_dim + self.shared_dim
        self.pairs: tuple[tuple[int, int], ...] = tuple(combinations(range(num_sequences), 2))

        n_unique = 1 if share_unique_encoder else num_sequences
        self.unique_encoders = nn.ModuleList(
            Mlp(dim, self.hidden_dim, self.unique_dim, act_layer=nn.GELU) for _ in range(n_unique)
        )
        self.shared_encoder = SymmetricPairEncoder(dim, self.hidden_dim, self.shared_dim)
        dec_in = self.unique_dim + self.shared_dim
        self.self_decoders = (
            nn.ModuleList(Mlp(dec_in, self.hidden_dim, dim, act_layer=nn.GELU) for _ in range(num_sequences))
            if self_reconstruction
            else None
        )
        self.cross_decoders = (
            nn.ModuleList(Mlp(dec_in, self.hidden_dim, dim, act_layer=nn.GELU) for _ in range(num_sequences))
            if cross_reconstruction
            else None
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def _as_list(self, features: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        s, d = self.num_sequences, self.dim
        if isinstance(features, torch.Tensor):
            if features.ndim != 3:
                raise ValueError(
                    f"features: expected a 3-D tensor (N, S={s}, d={d}) or a list of S (N, d) tensors, "
                    f"got shape {tuple(features.shape)}"
                )
            if features.shape[1] != s or features.shape[2] != d:
                raise ValueError(f"features: expected shape (N, S={s}, d={d}), got {tuple(features.shape)}")
            return list(features.unbind(1))
        if not isinstance(features, (list, tuple)):
            raise TypeError(
                f"features: expected a tensor (N, S, d) or a list of tensors, got {type(features).__name__}"
            )
        if len(features) != s:
            raise ValueError(f"features: expected S={s} tensors (one per sequence), got {len(features)}")
        for i, f in enumerate(features):
            if not isinstance(f, torch.Tensor):
                raise TypeError(f"features[{i}]: expected a torch.Tensor (N, d={d}), got {type(f).__name__}")
            if f.ndim != 2 or f.shape[1] != d:
                raise ValueError(f"features[{i}]: expected shape (N, d={d}), got {tuple(f.shape)}")
            if f.shape[0] != features[0].shape[0]:
                raise ValueError(
                    f"features[{i}]: batch size {f.shape[0]} differs from features[0]'s {features[0].shape[0]}"
                )
        return list(features)

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor]) -> DRLMOutput:
        f = self._as_list(features)
        s = self.num_sequences
        unique = [self.unique_encoders[0 if self.share_unique_encoder else i](f[i]) for i in range(s)]
        shared = {(i, j): self.shared_encoder(f[i], f[j]) for i, j in self.pairs}
        representation = torch.cat([*unique, torch.stack(list(shared.values()), 0).mean(0)], dim=-1)

        targets = [t.detach() for t in f] if self.detach_targets else f
        losses: dict[str, torch.Tensor] = {}
        if self.self_decoders is not None:
            srf = [self.self_decoders[i](self._decoder_input(unique[i], self._self_pairs(i, shared))) for i in range(s)]
            losses["self"] = self._l1(srf, targets)
        if self.cross_decoders is not None:
            crf = [
                self.cross_decoders[i](self._decoder_input(unique[i], self._cross_pairs(i, shared, f)))
                for i in range(s)
            ]
            losses["cross"] = self._l1(crf, targets)
        return DRLMOutput(representation, losses)

    @staticmethod
    def _decoder_input(unique: torch.Tensor, shared: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([unique, torch.stack(shared, 0).mean(0)], dim=-1)

    @staticmethod
    def _self_pairs(i: int, shared: dict[tuple[int, int], torch.Tensor]) -> list[torch.Tensor]:
        return [v for pair, v in shared.items() if i in pair]

    def _cross_pairs(
        self, i: int, shared: dict[tuple[int, int], torch.Tensor], f: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        if self.num_sequences == 2:
            j = 1 - i
            return [self.shared_encoder(f[j], f[j])]
        return [v for pair, v in shared.items() if i not in pair]

    @staticmethod
    def _l1(reconstructions: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        # In float32 at least (bf16 autocast), float64 stays float64.
        per_sequence = []
        for r, t in zip(reconstructions, targets):
            dtype = torch.promote_types(torch.promote_types(r.dtype, t.dtype), torch.float32)
            per_sequence.append(F.l1_loss(r.to(dtype), t.to(dtype)))
        return torch.stack(per_sequence).mean()

    def extra_repr(self) -> str:
        return (
            f"num_sequences={self.num_sequences}, dim={self.dim}, unique_dim={self.unique_dim}, "
            f"shared_dim={self.shared_dim}, out_dim={self.out_dim}, "
            f"share_unique_encoder={self.share_unique_encoder}, detach_targets={self.detach_targets}"
        )
