"""A plain-text progress bar on stderr: redrawn in place on a terminal, one line per step else."""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``label [#####.....] done/total note``.

    Args:
        label: What is counted, e.g. ``users``.
        total: How many there are (0 is fine: the bar is then full at once).
        stream: Where to draw (default stderr).
        width: Characters of the bar.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.total, self.width = label, max(total, 0), width
        self.stream = stream if stream is not None else sys.stderr
        self._tty = self.stream.isatty()
        self._last = ""

    def line(self, done: int, note: str = "") -> str:
        """The bar for ``done`` of ``total``."""
        filled = self.width if self.total == 0 else self.width * min(done, self.total) // self.total
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label} [{bar}] {done}/{self.total}" + (f" {note}" if note else "")

    def update(self, done: int, note: str = "") -> None:
        """Draw the bar (in place on a terminal; a new line otherwise, unless unchanged)."""
        text = self.line(done, note)
        if text == self._last:
            return
        self._last = text
        if self._tty:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, done: int, note: str = "") -> None:
        """Draw the final state and end the line."""
        self.update(done, note)
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
