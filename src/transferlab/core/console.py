"""What a long stage says while it works: one line per step of progress, plain in a log, styled on a
terminal (rich decides from the stream), always to stderr so that stdout stays the stage's result."""

from __future__ import annotations

from rich.console import Console

_console = Console(stderr=True, highlight=False, soft_wrap=True)


def progress_line(text: str) -> None:
    """e.g. "small_similar/finetune_all b150: trial 7/8 of the search (lr=0.003,two_phase): ..."."""
    _console.print(text, markup=False)
