"""Console output owned by the CLI: a rich progress bar on a terminal, plain log lines otherwise.

Library code reports progress through the `ProgressReporter` callables it is given and never
prints, so the same functions run quietly inside tests, CI and notebooks.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Protocol

from robota.errors import RobotaError

logger = logging.getLogger("robota")


class ProgressReporter(Protocol):
    """Receives `advance(count, **fields)` calls from a running phase."""

    def advance(self, count: int = 1, **fields: object) -> None: ...


class _PlainProgress:
    """Logs one line at every tenth of the total, for logs and CI."""

    def __init__(self, description: str, total: int):
        self.description = description
        self.total = max(total, 1)
        self.done = 0
        self._next_report = 0

    def advance(self, count: int = 1, **fields: object) -> None:
        self.done += count
        if self.done >= self._next_report or self.done >= self.total:
            extra = " ".join(f"{k}={_format_field(v)}" for k, v in fields.items())
            logger.info("%s: %d/%d %s", self.description, self.done, self.total, extra)
            self._next_report = self.done + max(self.total // 10, 1)


class _RichProgress:
    def __init__(self, progress, task_id):
        self._progress = progress
        self._task_id = task_id

    def advance(self, count: int = 1, **fields: object) -> None:
        extra = " ".join(f"{k}={_format_field(v)}" for k, v in fields.items())
        self._progress.update(self._task_id, advance=count, fields_text=extra)


def _format_field(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def use_rich() -> bool:
    """Return whether stderr is a terminal and rich is installed."""
    if not sys.stderr.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[ProgressReporter]:
    """Show progress of one phase: a rich bar on a terminal, plain log lines otherwise."""
    if not use_rich():
        yield _PlainProgress(description, total)
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[fields_text]}"),
    )
    with Progress(*columns, transient=False) as bar:
        task_id = bar.add_task(description, total=total, fields_text="")
        yield _RichProgress(bar, task_id)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at each record, not the stream it was created with.

    Background threads (roslibpy's reactor, inference workers) may log after the caller has
    swapped or closed the stream it had when logging was configured, for example in tests.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbose: bool = False) -> None:
    """Send robota's log lines to stderr: through rich on a terminal, plain text otherwise."""
    level = logging.DEBUG if verbose else logging.INFO
    if use_rich():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("robota")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def run_command(args: argparse.Namespace) -> int:
    """Configure logging, run `args.handler(args)` and return the exit status.

    A `RobotaError` (bad input or a failed check) prints as one line and gives status 2;
    an interrupt gives 130.
    """
    configure_logging(getattr(args, "verbose", False))
    try:
        return args.handler(args)
    except RobotaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
