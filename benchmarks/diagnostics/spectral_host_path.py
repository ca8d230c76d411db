"""Host path of the spectral ops, counted and timed on a CPU: what one eager call costs besides its kernels.

Runs the Triton path through Triton's interpreter (``TRITON_INTERPRET=1`` is set here, before Triton is
imported) with :func:`spectral3d.ops.testing.skip_launches`: every launcher allocates, checks and
builds its arguments, then the kernel is not run. So the times below are the Python/dispatcher host
path of one call (custom-op or ``autograd.Function`` dispatch, argument checks, allocations, autograd)
*without* Triton's own launch (argument binding and the driver call, which needs a GPU: measured by
``benchmarks/gpu_spectral.py`` as ``host_us``). Per op and ``f_m`` form, on a tiny input (host time
does not depend on size): launches and aten ops per forward + backward (``count_aten_ops``, ops that
launch no kernel listed apart), and median µs per call of

- ``eager``: the public function on plain tensors (the fast path),
- ``custom op``: ``torch.ops.spectral3d.*`` called directly (what compiled graphs and dispatch modes run),
- ``autograd ref``: the PyTorch reference formulas under autograd (``use_kernels("autograd")``).

    python benchmarks/diagnostics/spectral_host_path.py [--out FILE.json]

One thread, process CPU time (``time.process_time``: what other jobs on a shared machine take is
not counted, their cache and clock effects are), rounds of the three variants interleaved. Results and
machine: ``benchmarks/results/spectral_host_path_cpu.md``.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from spectral3d.ops import spectral_features, spectral_modulation, use_kernels  # noqa: E402
from spectral3d.ops.testing import (  # noqa: E402
    NO_KERNEL_OPS,
    count_aten_ops,
    count_launches,
    make_modulation_inputs,
    skip_launches,
)

SHAPE = (2, 4, 8, 8, 8)


def _calls(form: str) -> dict:
    """``{variant: (forward, forward + backward)}`` closures for one form (or ``"features"``)."""
    if form == "features":
        X = make_modulation_inputs("channel", SHAPE, requires_grad=True)[0][0]
        g = torch.randn(SHAPE[0], 3 * SHAPE[1], *X.shape[2:])
        Xd = X.detach()

        def make(fn):
            def fwd() -> None:
                with torch.no_grad():
                    fn(Xd)

            return fwd, lambda: torch.autograd.grad(fn(X), X, g)

        return {"eager": make(spectral_features), "custom op": make(torch.ops.spectral3d.spectral_features)}
    leaves, band = make_modulation_inputs(form, SHAPE, requires_grad=True)
    plain = [t.detach() for t in leaves]
    g = torch.randn_like(leaves[0])

    def make(fn):
        def fwd() -> None:
            with torch.no_grad():
                fn(*plain, band)

        return fwd, lambda: torch.autograd.grad(fn(*leaves, band), leaves, g)

    return {"eager": make(spectral_modulation), "custom op": make(torch.ops.spectral3d.spectral_modulation)}


def _median_us(fns: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median µs per call of each ``(kernel mode, closure)``, rounds interleaved, launches skipped."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with skip_launches():
        for r in range(rounds + 1):
            for name, (mode, fn) in fns.items():
                with use_kernels(mode):
                    start = time.process_time()
                    for _ in range(calls if r else 20):  # round 0: warm-up
                        fn()
                    if r:
                        times[name].append((time.process_time() - start) / calls * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def measure(rounds: int = 7, calls: int = 200) -> list[dict]:
    rows = []
    for form in ("channel", "band", "full", "features"):
        with use_kernels("triton"), skip_launches():
            variants = _calls(form)
            variants["eager"][1]()  # first call: allocates the cached tickets
            with count_aten_ops() as ops, count_launches() as launches:
                variants["eager"][1]()
        variants["autograd ref"] = _calls(form)["eager"]
        fns = {
            f"{name} {kind}": ("autograd" if name == "autograd ref" else "triton", pair[i])
            for name, pair in variants.items()
            for i, kind in enumerate(("fwd", "fwd+bwd"))
        }
        us = _median_us(fns, rounds, calls)
        kernels = {k: v for k, v in ops.items() if k not in NO_KERNEL_OPS and not k.startswith("spectral3d.")}
        rows.append(
            {
                "op": "spectral_features" if form == "features" else "spectral_modulation",
                "f_m": None if form == "features" else form,
                "launches_fwd_bwd": sum(launches.values()),
                "kernel_aten_ops_fwd_bwd": dict(kernels),
                "no_kernel_aten_ops_fwd_bwd": {k: v for k, v in ops.items() if k in NO_KERNEL_OPS},
                "host_us": {k: round(v, 1) for k, v in us.items()},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.rounds)
    if args.out:
        meta = {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "shape": SHAPE,
        }
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
