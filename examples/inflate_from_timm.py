"""Inflate 2D timm weights into a 3D model with ``backbones3d.inflate_2d``.

By default the 2D source is a *randomly initialised* timm model (so the example runs offline);
pass ``--weights`` with a local timm checkpoint (``.safetensors``, or a ``.pth``/``.bin`` state
dict) of the same architecture to inflate real ImageNet weights.

    python examples/inflate_from_timm.py                                   # mambaout_femto, random 2D weights
    python examples/inflate_from_timm.py --weights mambaout_femto.safetensors
    python examples/inflate_from_timm.py --quick                           # a tiny MambaOut, seconds

Centre inflation (``mode="center"``) puts each 2D kernel in the middle depth slice of the 3D
kernel, so a 3D model fed a depth-1 volume reproduces the 2D model's logits; the check at the
end shows it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch

import backbones3d


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A 2D state dict from a local file, without pickle for safetensors and with ``weights_only`` otherwise."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state.get("model", state))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mambaout_femto", help="the timm 2D name; the 3D one adds '_3d'")
    parser.add_argument("--weights", type=Path, default=None, help="a local 2D checkpoint of --model")
    parser.add_argument("--quick", action="store_true", help="a 1-1-1-1 MambaOut of widths 16-32-48-64")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    if args.quick:  # the tiny MambaOut of the test-suite, in 2D and in 3D
        model2d = timm.models.mambaout.MambaOut(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), num_classes=10)
        model3d = backbones3d.create_model("test_mambaout_3d", num_classes=10)
        name = "test_mambaout"
    else:
        model2d = timm.create_model(args.model, pretrained=False)  # random init: no download
        model3d = backbones3d.create_model(f"{args.model}_3d", num_classes=model2d.num_classes)
        name = args.model
    if args.weights is not None:
        model2d.load_state_dict(load_state_dict(args.weights))
        print(f"2D weights from {args.weights}")

    # inflate_2d matches parameters by name, turns (O, I, kh, kw) kernels into (O, I, kd, kh, kw)
    # and copies everything else; the report lists what was inflated, copied or left out.
    report = backbones3d.inflate_2d(model3d, model2d, mode="center")
    print(f"{name}: {len(report.inflated)} kernels inflated, complete = {report.complete}")

    # Check: a depth-1 volume through the 3D model gives the 2D model's logits.
    model2d.eval()
    model3d.eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y2 = model2d(image)
        y3 = model3d(image.unsqueeze(2))  # (N, C, H, W) -> (N, C, D=1, H, W)
    print(f"max |logits3d - logits2d| on a depth-1 volume: {(y3 - y2).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
