"""The one exception type of ``spectral3d.data``: :class:`DataError`, a ``ValueError`` naming the case and files.

A CLI prints ``str(err)`` without a traceback; ``skip_bad=True`` records a :class:`SkippedCase` instead, so no case
is dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["DataError", "SkippedCase"]


class DataError(ValueError):
    """A problem with one case (or the cohort table), naming the case and the files.

    Args:
        message: what is wrong, in words.
        case_id: the case it concerns (``""`` for cohort-wide problems such as a bad header).
        paths: the files or folders involved, most relevant first.

    Example::

        >>> err = DataError("file not found", case_id="c01", paths=["/data/c01/t1.nii.gz"])
        >>> str(err)
        "case 'c01' (/data/c01/t1.nii.gz): file not found"
    """

    def __init__(self, message: str, case_id: str = "", paths: tuple[str | os.PathLike, ...] | list = ()) -> None:
        self.message = message
        self.case_id = case_id
        self.paths = tuple(str(p) for p in paths)
        where = []
        if case_id:
            where.append(f"case {case_id!r}")
        if self.paths:
            where.append("(" + ", ".join(self.paths) + ")")
        prefix = " ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def __reduce__(self):  # keeps the error picklable across DataLoader worker processes
        return (type(self), (self.message, self.case_id, self.paths))


@dataclass(frozen=True)
class SkippedCase:
    """A case left out under ``skip_bad=True``: its id, the reason and the files involved."""

    case_id: str
    reason: str
    paths: tuple[str, ...] = ()

    @classmethod
    def from_error(cls, err: DataError) -> SkippedCase:
        """The record of a :class:`DataError` (keeps its case id, message and paths)."""
        return cls(err.case_id, err.message, err.paths)

    def __str__(self) -> str:
        files = f" ({', '.join(self.paths)})" if self.paths else ""
        return f"{self.case_id}{files}: {self.reason}"
