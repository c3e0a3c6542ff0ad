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
