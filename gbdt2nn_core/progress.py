"""Progress reporting for long steps: silent by default, a rich progress bar in the CLI."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["NullProgress", "Progress", "RichProgress"]


class Progress(Protocol):
    """Receives the steps of a distillation; ``total`` is in arbitrary units (epochs, batches)."""

    def step(self, description: str, total: float | None = None) -> contextlib.AbstractContextManager[None]:
        """Context manager around one named step."""

    def advance(self, amount: float = 1.0, **fields: Any) -> None:
        """Report progress inside the current step."""


class NullProgress:
    """Reports nothing."""

    @contextlib.contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[None]:
        yield

    def advance(self, amount: float = 1.0, **fields: Any) -> None:
        pass


class RichProgress:
    """A rich progress bar per step on stderr, with the elapsed time of every finished step."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._progress: Any = None
        self._task: Any = None

    @contextlib.contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[None]:
        from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

        start = time.perf_counter()
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        from rich.progress import Progress as _Progress

        with _Progress(*columns, console=self.console, transient=True, disable=not sys.stderr.isatty()) as progress:
            self._progress = progress
            self._task = progress.add_task(description, total=total)
            try:
                yield
            finally:
                self._progress, self._task = None, None
        self.console.print(f"[green]✓[/] {description} [dim]({time.perf_counter() - start:.1f} s)[/]")

    def advance(self, amount: float = 1.0, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)
            if fields:
                detail = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
                description = self._progress.tasks[0].description.split(" · ")[0]
                self._progress.update(self._task, description=f"{description} · {detail}")
