"""`make lab`: the JupyterLab server scripts/lab.py starts, driven headless through its REST and
kernel APIs: it serves the chapters on localhost with a token, runs code in the project's kernel,
and saves notebooks under notebooks/ without outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123"


def _request(port: int, method: str, path: str, body: dict | None = None, token: str | None = TOKEN) -> tuple[int, dict]:
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    request = Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers,
                      data=json.dumps(body).encode() if body is not None else None)
    try:
        with urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else {}
    except HTTPError as err:
        return err.code, {}


def _execute(port: int, kernel_id: str, code: str, timeout: float = 30) -> str:
    """Run ``code`` in the kernel over its websocket channel (Jupyter's messaging protocol); its
    stdout."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels",
                                     header=[f"Authorization: token {TOKEN}"], timeout=timeout)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    ws.close()
    return "".join(out)


@pytest.fixture
def lab(tmp_path):
    """The server as `make lab` starts it, on a free port, serving a copy of two chapters."""
    lab_script = load_script("lab")
    (tmp_path / "notebooks").mkdir()
    for name in ("01_data.ipynb", "03_vit_pairwise.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, tmp_path / "notebooks" / name)
    try:
        lab_script.free_port(0)
    except OSError as err:
        pytest.skip(f"cannot bind a port on 127.0.0.1: {err}")
    env = os.environ | {"LMC_LAB_TOKEN": TOKEN, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
                        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "PYTHONWARNINGS": "ignore"}
    server = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "lab.py"), "--port", "0",
                               "--root", str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    first = server.stdout.readline()  # the address it prints before the server starts
    match = re.search(r"http://127\.0\.0\.1:(\d+)/lab/tree/notebooks\?token=(\S+)", first)
    assert match and match.group(2) == TOKEN, first
    port = int(match.group(1))
    deadline = time.monotonic() + 90  # a busy 2-core machine starts JupyterLab in ~10 s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if _request(port, "GET", "/api/status")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.3)
    else:
        os.killpg(server.pid, signal.SIGKILL)
        pytest.fail(f"the lab did not answer (exit {server.poll()}):\n{server.stdout.read()}")
    yield port, tmp_path, server
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def test_lab_serves_the_chapters_runs_code_and_saves_sources_without_outputs(lab):
    port, root, server = lab
    assert _request(port, "GET", "/api/contents/notebooks", token=None)[0] in (401, 403)  # the token is required
    status, listing = _request(port, "GET", "/api/contents/notebooks")
    assert status == 200 and {"01_data.ipynb", "03_vit_pairwise.ipynb"} <= {f["name"] for f in listing["content"]}
    status, chapter = _request(port, "GET", "/api/contents/notebooks/03_vit_pairwise.ipynb")
    assert status == 200 and chapter["type"] == "notebook"
    assert chapter["content"]["metadata"]["kernelspec"]["name"] == "python3"

    status, kernel = _request(port, "POST", "/api/kernels", {"name": "python3"})
    assert status == 201
    # A cell of a tiny notebook, in the project's kernel: the venv's interpreter, the study importable,
    # the Makefile's offline setting inherited.
    out = _execute(port, kernel["id"], "import sys, os, lmc_study.paper as p\n"
                                       "print(sys.prefix, p.TABLE2['learned_matching']['vit_cifar10'][0],"
                                       " os.environ.get('HF_HUB_OFFLINE'))")
    assert out.split() == [sys.prefix, "0.0", "1"]

    # Saving a chapter that carries outputs stores its source only.
    content = chapter["content"]
    code = next(c for c in content["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "trained\n"}]
    code["execution_count"] = 7
    status, _ = _request(port, "PUT", "/api/contents/notebooks/03_vit_pairwise.ipynb",
                         {"type": "notebook", "format": "json", "content": content})
    assert status == 200
    saved = json.loads((root / "notebooks" / "03_vit_pairwise.ipynb").read_text())
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
               for c in saved["cells"] if c["cell_type"] == "code")
    assert server.poll() is None
    command_line = open(f"/proc/{server.pid}/cmdline", "rb").read().decode(errors="replace")
    assert TOKEN not in command_line  # the token travels in the environment, not in argv

def test_strip_outputs_only_touches_notebooks_under_notebooks():
    strip = load_script("lab").strip_outputs
    cell = {"cell_type": "code", "outputs": [{"output_type": "stream"}], "execution_count": 3,
            "metadata": {"execution": {"iopub.status.busy": "x"}, "tags": ["hide-input"]}}
    elsewhere = {"type": "notebook", "content": {"cells": [json.loads(json.dumps(cell))]}}
    strip(model=elsewhere, path="scratch/try.ipynb")
    assert elsewhere["content"]["cells"][0]["execution_count"] == 3
    model = {"type": "notebook", "content": {"cells": [cell]}}
    strip(model=model, path="notebooks/03_vit_pairwise.ipynb")
    assert cell == {"cell_type": "code", "outputs": [], "execution_count": None, "metadata": {"tags": ["hide-input"]}}
