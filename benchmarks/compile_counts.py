"""What ``torch.compile`` did, so that a silent fall-back to eager shows in every compiled row.

``fresh()`` resets Dynamo (its caches, recompile budget, counters and compilation metrics) before a
compiled variant; ``counts()`` then reports ``graphs`` (graphs compiled), ``graph_breaks`` (breaks
met while tracing, recompiles included), ``recompiles`` (frames compiled again after a guard failed:
past ``torch._dynamo.config.recompile_limit`` Dynamo runs the frame eagerly) and ``failed_frames``
(frames Dynamo gave up on, which run eagerly). A fully compiled model shows 1 graph (2 with a training
step's optimizer), 0 breaks, 0 recompiles and 0 failed frames.
"""

from __future__ import annotations

import torch

__all__ = ["counts", "fresh"]


def fresh() -> None:
    """Reset Dynamo and its statistics before compiling a new variant."""
    from torch._dynamo import utils

    torch._dynamo.reset()
    utils.counters.clear()
    if hasattr(utils, "clear_compilation_metrics"):
        utils.clear_compilation_metrics()


def counts() -> dict[str, int]:
    """Graphs, graph breaks, recompiles and failed frames since the last :func:`fresh`."""
    from torch._dynamo import utils

    metrics = utils.get_compilation_metrics() if hasattr(utils, "get_compilation_metrics") else []
    return {
        "graphs": int(utils.counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(utils.counters["graph_break"].values())),
        "recompiles": sum(1 for m in metrics if getattr(m, "recompile_reason", None)),
        "failed_frames": sum(1 for m in metrics if getattr(m, "fail_type", None)),
    }
