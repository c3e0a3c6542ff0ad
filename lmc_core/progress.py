"""Progress bars that go to the terminal of whoever runs the study, never into a notebook.

Inside a Jupyter kernel (papermill included) everything written to stderr is captured into the
cell's outputs, even at the file-descriptor level (ipykernel redirects fd 2 too), so a bar
written there ends up in the book. ipykernel keeps a duplicate of the kernel's original stderr
(`_original_stdstream_copy`, the stream papermill's kernel inherited from the command that
started it): bars go there, to that terminal or CI log. In a kernel without it they are off.
Outside a kernel they go to stderr as usual. ``disable=None`` keeps tqdm's rule: no bar when the
stream is not a terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm.std import tqdm

_terminal: IO[str] | None = None


def _kernel_terminal() -> IO[str] | None:
    """The kernel's original stderr (a line-buffered text stream on a duplicate of ipykernel's
    saved descriptor), opened once; None outside a kernel or when ipykernel saved none."""
    global _terminal
    saved = getattr(sys.stderr, "_original_stdstream_copy", None)
    if saved is None:
        return None
    if _terminal is None or _terminal.closed:
        _terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    return _terminal


def _in_kernel() -> bool:
    return type(sys.stderr).__module__.startswith("ipykernel")


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on the terminal running the study (see the module docstring)."""
    if "file" not in kwargs:
        terminal = _kernel_terminal()
        if terminal is not None:
            kwargs["file"] = terminal
        elif _in_kernel():
            kwargs["disable"] = True
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
