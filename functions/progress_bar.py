"""A rich progress bar for long transfers: bytes, files and throughput.

Drawn on stderr, and only when stderr is a terminal: in a pod or CI log a
redrawn bar is noise, and the command prints a one-line summary instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loader.progress import Progress


class _RichProgress(Progress):
    def __init__(self, bar: Any, description: str) -> None:
        self._bar = bar
        self._task = bar.add_task(description, total=None, files="0/?")
        self._files = 0
        self._planned = 0

    def planned(self, files: int, total_bytes: int) -> None:
        self._planned = files
        self._bar.update(self._task, total=total_bytes, files=f"0/{files}")

    def advance(self, nbytes: int) -> None:
        self._bar.update(self._task, advance=nbytes)

    def file_done(self, path: str) -> None:
        self._files += 1  # rich's update is locked; this count is only read for display
        self._bar.update(self._task, files=f"{self._files}/{self._planned}")


@contextmanager
def transfer_bar(description: str, enabled: bool | None = None) -> Iterator[Progress]:
    """A Progress that draws a bar; a silent one when disabled or not on a TTY."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield Progress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[files]} files"),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        yield _RichProgress(bar, description)


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
