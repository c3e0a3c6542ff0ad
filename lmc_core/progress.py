"""Progress bars that go to the terminal of whoever runs the study, never into a notebook.

Inside a Jupyter kernel (papermill included) ``sys.stderr`` is captured into the cell's
outputs, so a bar written there ends up in the book. ``sys.__stderr__`` is the kernel process's
own stderr, which papermill's kernel inherits from the command that started it: the bar shows on
that terminal (or in CI's log) and the executed notebook stays clean. Outside a kernel the two
are the same stream. ``disable=None`` keeps tqdm's rule: no bar when that stream is not a tty.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.std import tqdm


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on the process's own stderr (see the module docstring)."""
    kwargs.setdefault("file", sys.__stderr__ if sys.__stderr__ is not None else sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
