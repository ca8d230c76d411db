"""Shared machinery of ``pytest benchmarks/``: options, settings, timing, memory, the results file.

Options (``pytest benchmarks/ --help``, group "spectral3d benchmarks"):

- ``--bench-full``: the PERF.md sizes (batch 8 at 96³ and batch 4 at 128³) for every registered
  non-test model; meant for a GPU. Without it, *quick* mode: tiny inputs, seconds per model.
- ``--bench-models PATTERNS``: comma-separated ``fnmatch`` patterns selecting the models of the
  train/inference benchmarks (quick default: ``test_*,desamba_*_tiny``; full default: every model except
  ``test_*``). Parameters and FLOPs are always reported for every registered model.
- ``--bench-compile``: also ``torch.compile`` (default: on in full mode on CUDA only; compiling on
  a shared 2-core CPU costs minutes), with ``test_bench_compile.py``'s interleaved eager-vs-compiled
  rows; every compiled row carries Dynamo's graph, graph-break and recompile counts.
- ``--bench-results DIR``: where the JSON/markdown/PNG go. Default: ``.benchmarks/spectral3d/``
  (git-ignored), so a plain ``pytest`` run leaves the tracked files alone; ``--bench-save`` writes
  over the committed ``benchmarks/results/bench_*`` instead (do it on purpose, with the machine
  named in the commit).

Every test appends rows (one per model × metric) through the ``record`` fixture; at session end
:func:`pytest_sessionfinish` writes ``bench_<device>_<mode>.json`` (device, versions, date, git
commit) and renders it with ``benchmarks/report.py`` to ``.md`` and ``.png``. Benchmarks never
assert speed; they fail only on errors (a model that cannot be built or counted).

Measurements *(choices ours)*:

- time: median of ``rounds`` timed calls after ``warmup`` calls, each ending with
  ``torch.cuda.synchronize()`` on CUDA; throughput = batch / median seconds (volumes/s).
- peak memory: the memory one call needs *on top of* the resting state (weights, gradients
  buffers and optimizer state already allocated, which :func:`state_bytes` reports): on CUDA
  ``max_memory_allocated() - memory_allocated()`` after ``reset_peak_memory_stats()``; on Linux
  CPU the peak resident-set growth: ``malloc_trim(0)``, reset of the kernel's high-water mark
  (``/proc/self/clear_refs`` ← 5), then ``VmHWM - VmRSS(before)``. (``tracemalloc`` does not see
  torch's allocations.) Elsewhere: ``None`` (reported as n/a).
- CUDA: bf16 autocast, ``channels_last_3d`` for the convolutional families in
  :data:`CHANNELS_LAST_PATTERNS`; CPU: float32, contiguous.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import fnmatch
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import compile_counts  # one module, however this conftest is imported (pyproject: pythonpath ".")

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"  # committed tables: written only with --bench-save
SCRATCH_DIR = BENCH_DIR.parent / ".benchmarks" / "spectral3d"  # git-ignored default
QUICK_PATTERNS = ("test_*", "desamba_*_tiny")
FULL_EXCLUDE = ("test_*",)
QUICK_MAX_SIZE = 32
QUICK_BATCH = 2
FULL_SHAPES = ((8, 96), (4, 128))  # (batch, cube side): PERF.md
# Families whose convolutions run faster channels-last on CUDA (cuDNN NDHWC kernels).
CHANNELS_LAST_PATTERNS = ("resnet*", "resnext*", "densenet*", "efficientnet*", "convnextv2*", "mambaout*")


# --------------------------------------------------------------------------------------------
# options and settings
# --------------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spectral3d benchmarks")
    group.addoption("--bench-full", action="store_true", help="PERF.md sizes for every model (GPU)")
    group.addoption("--bench-models", default=None, help="comma-separated fnmatch patterns of models to time")
    group.addoption("--bench-compile", action="store_true", help="also time torch.compile (default: full mode on CUDA)")
    group.addoption(
        "--bench-backends",
        default=None,
        help="backends to time, comma-separated: 'eager' and/or 'compile' (overrides --bench-compile and full mode)",
    )
    group.addoption(
        "--bench-results", default=None, help=f"directory for the JSON, markdown and PNG (default {SCRATCH_DIR})"
    )
    group.addoption(
        "--bench-save", action="store_true", help=f"write over the committed tables in {RESULTS_DIR} instead"
    )


@dataclass(frozen=True)
class BenchSettings:
    """What a run measures, from the command line and the machine."""

    full: bool
    device: torch.device
    patterns: tuple[str, ...]
    exclude: tuple[str, ...]
    backends: tuple[str, ...]
    rounds: int
    warmup: int
    results_dir: Path

    @property
    def mode(self) -> str:
        return "full" if self.full else "quick"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def selected(self, names: list[str]) -> list[str]:
        """The registry names matched by the patterns (and not excluded)."""
        return [
            n
            for n in names
            if any(fnmatch.fnmatchcase(n, p) for p in self.patterns)
            and not any(fnmatch.fnmatchcase(n, p) for p in self.exclude)
        ]

    def shapes(self, cfg_size: tuple[int, ...]) -> list[tuple[int, tuple[int, int, int, int]]]:
        """``(batch, (C, D, H, W))`` pairs to time a model at."""
        channels = int(cfg_size[0])
        if self.full:
            return [(b, (channels, s, s, s)) for b, s in FULL_SHAPES]
        spatial = tuple(min(int(s), QUICK_MAX_SIZE) for s in cfg_size[1:])
        # batch 2: BatchNorm in training needs more than one value per channel at a 1³ last stage
        return [(QUICK_BATCH, (channels, *spatial))]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def dtype_name(self) -> str:
        return "bf16-autocast" if self.cuda else "float32"


def _settings(config: pytest.Config) -> BenchSettings:
    full = bool(config.getoption("--bench-full", False))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raw = config.getoption("--bench-models", None)
    if raw:
        patterns, exclude = tuple(p.strip() for p in raw.split(",") if p.strip()), ()
    elif full:
        patterns, exclude = ("*",), FULL_EXCLUDE
    else:
        patterns, exclude = QUICK_PATTERNS, ()
    compile_on = bool(config.getoption("--bench-compile", False)) or (full and device.type == "cuda")
    backends: tuple[str, ...] = ("eager", "compile") if compile_on else ("eager",)
    raw_backends = config.getoption("--bench-backends", None)
    if raw_backends:
        backends = tuple(b.strip() for b in raw_backends.split(",") if b.strip())
        unknown = sorted(set(backends) - {"eager", "compile"})
        if unknown or not backends:
            raise pytest.UsageError(f"--bench-backends: expected 'eager' and/or 'compile', got {raw_backends!r}")
    return BenchSettings(
        full=full,
        device=device,
        patterns=patterns,
        exclude=exclude,
        backends=backends,
        rounds=10 if full else 2,
        warmup=3 if full else 1,
        results_dir=_results_dir(config),
    )


def _results_dir(config: pytest.Config) -> Path:
    explicit = config.getoption("--bench-results", None)
    if explicit:
        return Path(explicit)
    return RESULTS_DIR if config.getoption("--bench-save", False) else SCRATCH_DIR


def registered_models() -> list[str]:
    """Every registered model (empty when ``backbones3d`` cannot be imported)."""
    try:
        import backbones3d
    except ImportError:
        return []
    return list(backbones3d.list_models())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``model_name``: every registered model; ``bench_model``: the ones ``--bench-models`` selects;
    ``backend``: ``eager``, plus ``compile`` with ``--bench-compile`` (or full mode on CUDA)."""
    if "model_name" in metafunc.fixturenames:
        metafunc.parametrize("model_name", registered_models())
    if "shape_index" in metafunc.fixturenames:
        n = len(FULL_SHAPES) if _settings(metafunc.config).full else 1
        metafunc.parametrize("shape_index", range(n))
    if "bench_model" in metafunc.fixturenames:
        metafunc.parametrize("bench_model", _settings(metafunc.config).selected(registered_models()))
    if "backend" in metafunc.fixturenames:  # torch.compile variants exist only when they will run
        metafunc.parametrize("backend", _settings(metafunc.config).backends)
    if "compile_model" in metafunc.fixturenames:  # test_bench_compile.py; deselected unless compile runs
        settings = _settings(metafunc.config)
        metafunc.parametrize("compile_model", settings.selected(list(metafunc.module.models(settings.full))))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Compiled-vs-eager rows run only where compiled rows run (``--bench-compile``, full mode on CUDA)."""
    if "compile" in _settings(config).backends:
        return
    off = [item for item in items if "compile_model" in getattr(item, "fixturenames", ())]
    if off:
        config.hook.pytest_deselected(items=off)
        items[:] = [item for item in items if item not in off]


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest) -> BenchSettings:
    return _settings(request.config)


# --------------------------------------------------------------------------------------------
# timing and memory
# --------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, rounds: int, warmup: int) -> float:
    """Median seconds of ``fn()`` over ``rounds`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_with_benchmark(benchmark: Any, fn: Callable[[], Any], settings: BenchSettings) -> float:
    """Time ``fn`` through pytest-benchmark (its tables, ``--benchmark-json``); median seconds.

    With ``--benchmark-disable`` pytest-benchmark runs ``fn`` once without statistics; the
    median then comes from :func:`time_call`.
    """

    def timed() -> None:
        fn()
        synchronize(settings.device)

    benchmark.pedantic(timed, rounds=settings.rounds, warmup_rounds=settings.warmup, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None or getattr(benchmark, "disabled", False):
        return time_call(fn, settings.device, settings.rounds, 0)
    return float(stats.stats.median)


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_extra_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Bytes ``fn()`` needs above the memory in use before it (see the module docstring)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if not sys.platform.startswith("linux"):
        return None
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _proc_status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    fn()
    return max(0, _proc_status_bytes("VmHWM") - before)


def state_bytes(model: torch.nn.Module, optimizer_slots: int = 2) -> int:
    """Resting training state: parameters + gradients + ``optimizer_slots`` AdamW moments."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) * (2 + optimizer_slots)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass
class Results:
    """Rows collected during the session (one per model × metric × context)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, model: str, metric: str, value: float | int | None, unit: str, **context: Any) -> None:
        row = {"model": model, "metric": metric, "value": value, "unit": unit}
        row.update({k: v for k, v in context.items() if v is not None})
        self.rows.append(row)


_RESULTS = Results()


@pytest.fixture
def record() -> Callable[..., None]:
    """``record(model, metric, value, unit, **context)`` appends a row to the session's results."""
    return _RESULTS.add


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "timm", "monai", "fvcore"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # missing or broken optional package: recorded as absent
            out[name] = None
    return out


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def machine_info(settings: BenchSettings) -> dict[str, Any]:
    """Device, versions, date, git commit, mode: the header of a results file."""
    if settings.cuda:
        device_name = torch.cuda.get_device_name(settings.device)
    else:
        device_name = platform.processor() or platform.machine()
    return {
        "device": settings.device.type,
        "device_name": device_name,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "mode": settings.mode,
        "dtype": settings.dtype_name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "versions": _versions(),
        "host": platform.node(),
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write ``bench_<device>_<mode>.json`` and render it to markdown and PNG."""
    if not _RESULTS.rows:
        return
    settings = _settings(session.config)
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    path = settings.results_dir / f"bench_{settings.device.type}_{settings.mode}.json"
    payload = {"machine": machine_info(settings), "rows": _RESULTS.rows}
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import report

        outputs = report.render(path)
    finally:
        sys.path.remove(str(BENCH_DIR))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"benchmarks: {len(_RESULTS.rows)} rows -> {path}, {', '.join(map(str, outputs))}")


# --------------------------------------------------------------------------------------------
# workloads: a model with its inputs, loss and optimizer
# --------------------------------------------------------------------------------------------
def _desamba_loss() -> Callable[..., Any] | None:
    try:
        from backbones3d.desamba import DeSambaLoss
    except ImportError:
        return None
    return DeSambaLoss()


@dataclass
class Workload:
    """One model ready to time: ``train_step()`` (AdamW) and ``infer_step()`` (inference mode).

    The loss is Eq. 5 (``DeSambaLoss`` on ``forward_with_aux``) for models that have
    ``forward_with_aux`` and cross-entropy otherwise.
    """

    name: str
    model: torch.nn.Module
    args: tuple[torch.Tensor, ...]
    target: torch.Tensor
    settings: BenchSettings
    forward: Callable[..., Any]
    forward_aux: Callable[..., Any] | None
    optimizer: torch.optim.Optimizer
    eq5_loss: Callable[..., Any] | None

    @property
    def batch(self) -> int:
        return int(self.args[0].shape[0])

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.settings.autocast():
            if self.eq5_loss is not None:
                logits, aux = self.forward_aux(*self.args)
                loss, _ = self.eq5_loss(logits.float(), self.target, aux)
            else:
                loss = torch.nn.functional.cross_entropy(self.forward(*self.args).float(), self.target)
        loss.backward()
        self.optimizer.step()

    def infer_step(self) -> None:
        self.model.eval()
        with torch.inference_mode(), self.settings.autocast():
            self.forward(*self.args)


def build_workload(
    model: str | torch.nn.Module,
    batch: int,
    input_size: tuple[int, int, int, int],
    settings: BenchSettings,
    checkpointing: bool = False,
    backend: str = "eager",
    name: str | None = None,
    compile_backend: str = "inductor",
) -> Workload:
    """Build a registry model (or take a module), inputs of ``(batch, *input_size)``, AdamW.

    ``backend="compile"``: ``torch.compile(..., backend=compile_backend)`` after a Dynamo reset
    (``compile_counts.fresh``), so ``compile_counts.counts()`` afterwards describes this workload.
    """
    import backbones3d
    from spectral3d.flops import model_inputs

    if isinstance(model, str):
        name = name or model
        model = backbones3d.create_model(model)
    name = name or type(model).__name__
    model = model.to(settings.device)
    cfg = getattr(model, "pretrained_cfg", None) or {"input_size": input_size}
    args, _ = model_inputs(cfg, input_size, batch, device=settings.device)
    if settings.cuda and any(fnmatch.fnmatchcase(name, p) for p in CHANNELS_LAST_PATTERNS):
        model = model.to(memory_format=torch.channels_last_3d)
        args = (args[0].contiguous(memory_format=torch.channels_last_3d), *args[1:])
    if checkpointing:
        model.set_grad_checkpointing(True)
    num_classes = int(cfg.get("num_classes") or getattr(model, "num_classes", 2))
    target = torch.randint(0, num_classes, (batch,), device=settings.device)
    if backend not in ("eager", "compile"):
        raise ValueError(f"backend: expected 'eager' or 'compile', got {backend!r}")
    compile_fn = (lambda fn: torch.compile(fn, backend=compile_backend)) if backend == "compile" else (lambda fn: fn)
    if backend == "compile":
        # a fresh Dynamo cache per workload: models of one class share their forward's code object,
        # and past Dynamo's recompile limit a "compiled" call silently runs eager
        compile_counts.fresh()
    eq5 = _desamba_loss() if backbones3d.is_multi_sequence(model) else None
    forward_aux = compile_fn(model.forward_with_aux) if eq5 is not None else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return Workload(name, model, args, target, settings, compile_fn(model), forward_aux, optimizer, eq5)


@pytest.fixture
def bench_tools() -> Any:
    """The helpers above, for the test modules (conftest modules are not importable by name)."""

    class Tools:
        time_call = staticmethod(time_call)
        time_with_benchmark = staticmethod(time_with_benchmark)
        peak_extra_memory = staticmethod(peak_extra_memory)
        state_bytes = staticmethod(state_bytes)
        synchronize = staticmethod(synchronize)
        build_workload = staticmethod(build_workload)
        compile_counts = staticmethod(compile_counts.counts)

    return Tools
