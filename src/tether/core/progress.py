"""Progress bars with ETA for long work, quiet when output is not a terminal or under tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_enabled() -> bool:
    """Bars only on an interactive terminal, and never when ``TETHER_NO_PROGRESS`` is set."""
    return sys.stderr.isatty() and not os.environ.get("TETHER_NO_PROGRESS")


class _Bar:
    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: int = 1, **fields: object) -> None:
        """Move the bar forward; ``fields`` show after it (e.g. ``loss=0.42``)."""
        if self._progress is not None and self._task is not None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            self._progress.update(self._task, advance=amount, info=info)


@contextmanager
def progress_bar(description: str, total: int, *, completed: int = 0) -> Iterator[_Bar]:
    """A rich progress bar with elapsed time and ETA on stderr; a no-op off a terminal."""
    if not progress_enabled():
        yield _Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, info="")
        yield _Bar(progress, task)
