"""Assets the book's HTML needs at view time, installed next to it so it works offline.

MathJax renders the equations. Sphinx would load it from a CDN; we fetch the npm package
``mathjax@3.2.2`` once (sha256-pinned, cached in the data directory) and unpack its ``es5``
bundle into ``book/_static/mathjax``. The SVG output (``tex-svg.js``) needs no web fonts, which
Chromium refuses to load from ``file://`` pages.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from lmc_study.data._common import DataIntegrityError, data_dir, npm_pack, sha256_file

MATHJAX_NPM_SPEC = "mathjax@3.2.2"
MATHJAX_TGZ = "mathjax-3.2.2.tgz"
MATHJAX_TGZ_SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
MATHJAX_ENTRY = "tex-svg.js"  # book/_config.yml: sphinx.config.mathjax_path = mathjax/tex-svg.js


def mathjax_tarball() -> Path:
    """The pinned MathJax npm tarball, from the data directory or fetched with npm."""
    cached = data_dir() / MATHJAX_TGZ
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="lmc-mathjax-") as tmp:
            tgz = npm_pack(MATHJAX_NPM_SPEC, Path(tmp),
                           hint=f"place {MATHJAX_TGZ} (from `npm pack {MATHJAX_NPM_SPEC}`) in "
                                f"{cached.parent}")
            shutil.copyfile(tgz, cached.with_suffix(".part"))
            os.replace(cached.with_suffix(".part"), cached)
    digest = sha256_file(cached)
    if digest != MATHJAX_TGZ_SHA256:
        raise DataIntegrityError(f"{cached}: sha256 {digest} != pinned {MATHJAX_TGZ_SHA256}; "
                                 f"delete it and rebuild to fetch {MATHJAX_NPM_SPEC} again")
    return cached


def ensure_mathjax(static_dir: Path) -> Path:
    """``static_dir/mathjax`` holding MathJax's es5 bundle; a no-op when it is already there."""
    target = Path(static_dir) / "mathjax"
    stamp = target / ".source"
    if stamp.is_file() and stamp.read_text() == MATHJAX_TGZ_SHA256 and (target / MATHJAX_ENTRY).is_file():
        return target
    tgz = mathjax_tarball()
    static_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mathjax-", dir=static_dir) as tmp:
        with tarfile.open(tgz, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith("package/es5/") and (m.isfile() or m.isdir())]
            tar.extractall(tmp, members=members, filter="data")
        es5 = Path(tmp) / "package" / "es5"
        (es5 / ".source").write_text(MATHJAX_TGZ_SHA256)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(es5, target)
    return target
