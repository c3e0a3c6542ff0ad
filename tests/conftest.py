"""Shared test setup: offline hubs, and one data cache for every test run.

Tests read the data from ``$LMC_DATA_DIR`` when it is set (the Makefile exports ./.data), and
otherwise from the repository's ``.data`` folder, the same place ``make data`` fills.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LMC_DATA_DIR", str(Path(__file__).resolve().parents[1] / ".data"))


def pytest_addoption(parser):
    parser.addoption("--torch-threads", type=int, default=None,
                     help="torch.set_num_threads(N) for the whole run: CI runs the suite once more on "
                          "one thread, so no result may depend on how work is split across threads")


def pytest_configure(config):
    threads = config.getoption("--torch-threads")
    if threads:
        import torch

        torch.set_num_threads(threads)
