"""Configuration `make lab` (scripts/lab.py) passes to JupyterLab: notebooks saved under notebooks/
lose their outputs, so the chapters' sources stay output-free."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import strip_outputs  # noqa: E402

c = get_config()  # noqa: F821  (defined by Jupyter when it reads this file)
c.FileContentsManager.pre_save_hook = strip_outputs
