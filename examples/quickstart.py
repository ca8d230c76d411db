"""Quickstart: create a registered 3D model and run one forward pass on CPU.

    python examples/quickstart.py                      # DeSamba-tiny (spondylitis: t1 + t2fs, 2 classes)
    python examples/quickstart.py --model resnet50_3d  # any name from backbones3d.list_models()

Runs offline; nothing is downloaded.
"""

from __future__ import annotations

import argparse

import torch

import backbones3d


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="desamba_spondylitis_tiny", help="a registered model name")
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry with the other examples")
    args = parser.parse_args(argv)

    # Every model carries its default configuration: input size (C, D, H, W), classes, and for
    # multi-sequence models (DeSamba) the sequence names and the number of clinical features.
    model = backbones3d.create_model(args.model).eval()
    cfg = model.pretrained_cfg
    c, d, h, w = cfg["input_size"]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {n_params / 1e6:.2f} M parameters, input {cfg['input_size']}")

    torch.manual_seed(0)
    x = torch.randn(1, c, d, h, w)  # (N, C, D, H, W); for DeSamba C = number of sequences
    with torch.no_grad():
        if backbones3d.is_multi_sequence(model):
            # DeSamba also takes clinical features (N, F); NaN marks a missing value, None = all missing.
            tabular = torch.randn(1, cfg["num_tabular"])
            tabular[0, 0] = float("nan")
            logits = model(x, tabular)
            print("sequences:", cfg["sequences"])
        else:
            logits = model(x)
    print("logits:", tuple(logits.shape), "probabilities:", [round(p, 3) for p in logits.softmax(-1)[0].tolist()])


if __name__ == "__main__":
    main()
