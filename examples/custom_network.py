"""Use spectral3d's blocks in your own 3D network: a SAMBlock and a GatedCNNBlock3d.

``SAMBlock`` (paper Fig. 2b) mixes a spatial ConvNeXtV2 branch with a frequency branch that
re-weights the volume's spectrum per radial band; ``GatedCNNBlock3d`` is MambaOut's gated
convolution block. Both map ``(N, C, D, H, W)`` to the same shape, so they drop into any 3D CNN.

    python examples/custom_network.py            # a few training steps on random data
    python examples/custom_network.py --quick    # fewer steps
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from spectral3d.layers.gated_cnn import GatedCNNBlock3d
from spectral3d.layers.norm import LayerNorm3d
from spectral3d.layers.samblock import SAMBlock


class TinyLesionNet(nn.Module):
    """stem (k4 s4) → SAMBlock → downsample (k2 s2) → GatedCNNBlock3d → pool → linear.

    Shapes: ``(N, in_chans, D, H, W)`` with D, H, W multiples of 8 → ``(N, num_classes)``.
    """

    def __init__(self, in_chans: int = 2, num_classes: int = 2, dims: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm3d(dims[0]))
        # SAMBlock works channels-first, (N, C, D, H, W) in and out.
        self.spectral = SAMBlock(dims[0], num_bands=4)
        self.down = nn.Sequential(LayerNorm3d(dims[0]), nn.Conv3d(dims[0], dims[1], kernel_size=2, stride=2))
        # GatedCNNBlock3d is channels-first too (it permutes internally, as MambaOut's block does).
        self.gated = GatedCNNBlock3d(dims[1])
        self.head = nn.Sequential(nn.LayerNorm(dims[1]), nn.Linear(dims[1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gated(self.down(self.spectral(self.stem(x))))
        return self.head(x.mean(dim=(2, 3, 4)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 steps at 16³ instead of 20 at 32³")
    args = parser.parse_args(argv)
    steps, size = (3, 16) if args.quick else (20, 32)

    torch.manual_seed(0)
    net = TinyLesionNet()
    print(f"TinyLesionNet: {sum(p.numel() for p in net.parameters()):,} parameters")
    # A toy task: class 1 volumes carry a high-frequency texture, class 0 a smooth one.
    y = torch.arange(8) % 2
    smooth = nn.functional.avg_pool3d(torch.randn(8, 2, size, size, size), 5, stride=1, padding=2)
    x = torch.where(y.view(-1, 1, 1, 1, 1).bool(), torch.randn_like(smooth) * 0.3, smooth)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for step in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (0, steps - 1):
            print(f"step {step}: loss {loss.item():.3f}")
    # The frequency branch learned per-band gains: SAMB's modulator is no longer the identity.
    print("SAMBlock branch weights (w1, w2):", [round(v, 3) for v in net.spectral.branch_weights.tolist()])


if __name__ == "__main__":
    main()
