"""Terminal output: rich consoles that stay readable when piped (no 80-column wrapping)."""

from __future__ import annotations

import sys

from rich.console import Console

__all__ = ["console"]


def console(*, stderr: bool = False) -> Console:
    """A console; when the stream is not a terminal, wide enough that table cells do not wrap."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, width=width)
