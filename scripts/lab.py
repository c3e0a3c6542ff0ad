#!/usr/bin/env python
"""`make lab`: JupyterLab on the chapters, from the project's environment, on localhost only.

    make lab                          # http://127.0.0.1:8888/lab/tree/notebooks?token=... (printed)
    python scripts/lab.py --port 0    # any free port

The server listens on 127.0.0.1 only, with a token (``$LMC_LAB_TOKEN`` or a random one), opens
``notebooks/`` with the project's kernel ("Python 3 (lmc-book)", the venv's interpreter) and
fetches nothing at start: no news feed or prompt, no update check, a read-only extension manager. Kernels
inherit the Makefile's environment, so the data (``$LMC_DATA_DIR``) and the model cache
(``$LMC_CACHE_DIR``) are the ones ``make book`` / ``make reproduce`` use: a chapter whose models
are cached starts in seconds.

A chapter opened here runs top to bottom as it is: its parameters cell gives the default profile
(smoke) and writes its results and figures to ``book/runs/lab/<profile>/<chapter>/`` (ignored by
git). Edit the parameters cell (profile, overrides) to explore. Saving a notebook under
``notebooks/`` stores it without outputs or execution counts (``strip_outputs``), so the sources
stay output-free.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8888
SOURCES = "notebooks/"  # notebooks saved under this API path lose their outputs


def strip_outputs(model: dict[str, Any], path: str, **_: Any) -> None:
    """Jupyter's pre-save hook: a notebook saved under notebooks/ keeps no outputs, execution
    counts or execution timings (the chapters are sources; papermill writes the executed copies)."""
    if model.get("type") != "notebook" or not path.lstrip("/").startswith(SOURCES):
        return
    for cell in model["content"].get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)


def free_port(preferred: int) -> int:
    """``preferred`` when it can be bound on 127.0.0.1, else any free port (0: any free port)."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def lab_command(root: Path, port: int) -> list[str]:
    """The jupyter lab command line: localhost, notebooks/, the project's kernel, offline. The
    token goes through $JUPYTER_TOKEN, not the command line (which other users can read)."""
    return [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--LabApp.default_url=/lab/tree/notebooks",
        "--MappingKernelManager.default_kernel_name=python3",
        "--LabApp.news_url=None",  # no announcements feed
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # no PyPI queries
        f"--config={Path(__file__).with_name('jupyter_lab_config.py')}",
        *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),  # containers, CI
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=DEFAULT_PORT,
                    help=f"port on 127.0.0.1 (default {DEFAULT_PORT}, or a free one when it is taken; 0: any)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the folder the lab serves (default: the project)")
    args = ap.parse_args(argv)
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        print("error: JupyterLab is not installed in this environment: run `make setup`", file=sys.stderr)
        return 1
    if not (args.root / "notebooks").is_dir():
        print(f"error: {args.root} has no notebooks/ folder", file=sys.stderr)
        return 1
    try:
        port = free_port(args.port)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    token = os.environ.get("LMC_LAB_TOKEN") or secrets.token_urlsafe(24)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # scripts/jupyter/labconfig/page_config.json turns off the news prompt (it would fetch a feed).
    os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).with_name("jupyter")), os.environ.get("JUPYTER_CONFIG_PATH")) if p)
    print(f"JupyterLab on the chapters: http://127.0.0.1:{port}/lab/tree/notebooks?token={token}", flush=True)
    print("(Ctrl-C stops it; chapters run on the profile of their parameters cell, results go to "
          "book/runs/lab/)", flush=True)
    os.environ["JUPYTER_TOKEN"] = token
    command = lab_command(args.root.resolve(), port)
    os.execv(command[0], command)  # the server replaces this process: Ctrl-C reaches it directly
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
