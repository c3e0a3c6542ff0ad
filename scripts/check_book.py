#!/usr/bin/env python
"""Open every page of the built book in real headless Chromium and check what a reader sees.

    python scripts/check_book.py book/_build/html [--toc book/_toc.yml]

For the root page and every chapter in the toc:
- the DOM Chromium builds (``--dump-dom``) has the page's title (its first '# ' heading) in
  <title> and in an <h1>;
- the page's content has at least as many <img> as the chapter's notebook has PNG figure
  outputs, and every content <img> points to a file that exists and is a valid, non-empty PNG;
- it has at least as many <table> as the notebook has markdown outputs holding a pipe table;
- when it has equations, MathJax (served locally) typeset them;
- at 1280 px no table is wider than the text column (a table that scrolls sideways hides
  columns from a reader);
- the notebook's outputs hold no traceback, no progress bar and nothing written to stderr
  (warnings): progress belongs on the terminal of whoever runs the study;
- a screenshot (``--screenshot``, 1280x2000) is not blank (more than one colour);
no page loads scripts, styles or images from the web (the book must work offline), and a
link to the book's PDF reaches a real PDF.
Exits 1 with the list of failures, 0 when every page passes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                  "chrome")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    "--virtual-time-budget=5000",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM when it is set ("none", or any name that is not an
    executable, hides every browser), else the first of CHROMIUM_NAMES on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


# ---------------------------------------------------------------- HTML parsing

class _PageParser(HTMLParser):
    """Collects <title>, <h1> texts, content <img> srcs and remote asset references."""

    CONTENT_TAGS = ("main", "article")
    VOID = {"img", "link", "meta", "br", "hr", "input", "source", "area", "base", "col",
            "embed", "param", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.h1: list[str] = []
        self.images: list[str] = []
        self.tables = 0
        self.equations = 0  # Sphinx's math spans/divs
        self.typeset = 0  # <mjx-container> elements MathJax made of them
        self.remote: list[str] = []
        self._stack: list[str] = []
        self._in_title = False
        self._h1_depth: int | None = None
        self._content_depth: int | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title" and not self.title:  # the page's; icons' SVG <title>s come later
            self._in_title = True
        elif tag == "h1" and self._h1_depth is None:
            self._h1_depth = len(self._stack)
            self.h1.append("")
        elif tag in self.CONTENT_TAGS and self._content_depth is None:
            self._content_depth = len(self._stack)
        if tag == "table" and self._content_depth is not None:
            self.tables += 1
        if tag in ("span", "div") and "math" in (a.get("class") or "").split():
            self.equations += 1
        elif tag == "mjx-container":
            self.typeset += 1
        if tag == "img":
            src = a.get("src") or ""
            if self._content_depth is not None:
                self.images.append(src)
            if _is_remote(src):
                self.remote.append(f"<img src={src}>")
        elif tag == "script" and _is_remote(a.get("src") or ""):
            self.remote.append(f"<script src={a['src']}>")
        elif tag == "link" and _is_remote(a.get("href") or ""):
            rel = (a.get("rel") or "").lower()
            if any(r in rel for r in ("stylesheet", "preload", "modulepreload", "icon")):
                self.remote.append(f"<link rel={rel} href={a['href']}>")
        elif tag in ("iframe", "source", "video", "audio") and _is_remote(a.get("src") or ""):
            self.remote.append(f"<{tag} src={a['src']}>")
        if tag not in self.VOID:
            self._stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID and self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag in self.VOID:
            return
        while self._stack:  # tolerate unclosed tags
            top = self._stack.pop()
            depth = len(self._stack)
            if self._h1_depth is not None and depth <= self._h1_depth:
                self._h1_depth = None
            if self._content_depth is not None and depth <= self._content_depth:
                self._content_depth = None
            if top == tag:
                break

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._h1_depth is not None:
            self.h1[-1] += data


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "//"))


def parse_page(html: str) -> _PageParser:
    p = _PageParser()
    p.feed(html)
    p.close()
    return p


_SMART_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'})


def _norm(text: str) -> str:
    """Text for comparison: Sphinx's smart quotes made plain, anchors and spacing dropped."""
    text = text.translate(_SMART_QUOTES).replace("¶", " ").replace("#", " ")
    return " ".join(text.split()).casefold()


def external_assets(html_dir: Path) -> list[str]:
    """'page: <tag ...>' for every script/style/image a built page would fetch from the web."""
    found = []
    for page in sorted(Path(html_dir).rglob("*.html")):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        parsed = parse_page(page.read_text(encoding="utf-8", errors="replace"))
        found += [f"{page.relative_to(html_dir)}: {r}" for r in parsed.remote]
    return found


# ---------------------------------------------------------------- PNG checks

def png_problem(path: Path) -> str | None:
    """None for a valid, non-empty PNG; else what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    if not data:
        return "empty file"
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        return f"PNG of size {width}x{height}"
    try:  # decode it fully: catches truncated files
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    except ImportError:  # no Pillow: check the chunks' CRCs instead
        pos = 8
        while pos + 8 <= len(data):
            (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
            body = data[pos + 8:pos + 8 + length]
            crc = data[pos + 8 + length:pos + 12 + length]
            if len(crc) < 4 or zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
                return "corrupt PNG chunk"
            if kind == b"IEND":
                return None
            pos += 12 + length
        return "truncated PNG"
    except Exception as exc:  # PIL raises many kinds
        return f"cannot decode PNG ({exc})"
    return None


def blank_problem(path: Path) -> str | None:
    """None when the screenshot shows something (more than one colour)."""
    bad = png_problem(path)
    if bad:
        return f"screenshot: {bad}"
    try:
        from PIL import Image
    except ImportError:
        return None
    with Image.open(path) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1)
    if colours is not None:  # at most one colour
        return f"screenshot is blank (a single colour {colours[0][1]})"
    return None


# ---------------------------------------------------------------- pages from the toc

@dataclass
class Page:
    docname: str
    html: Path
    source: Path | None
    title: str
    figures: int  # PNG outputs in the source notebook
    tables: int = 0  # markdown outputs holding a pipe table (display_table)
    output_problems: list[str] = field(default_factory=list)  # see notebook_output_problems


@dataclass
class Report:
    pages: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _source_file(book_dir: Path, docname: str) -> Path | None:
    for suffix in (".ipynb", ".md", ".rst"):
        p = book_dir / f"{docname}{suffix}"
        if p.is_file():
            return p
    p = book_dir / docname
    return p if p.is_file() else None


_PIPE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.M)


_PROGRESS_BAR = re.compile(r"\d+%\||it/s\]|s/it\]|\r")
MAX_PRINTED_LINE = 100  # characters of monospace output that fit the text column at 1280 px
_WARNING = re.compile(r"\b\w*Warning\b:|^WARNING\b", re.M)


def notebook_output_problems(cells: list[dict]) -> list[str]:
    """What a reader must never see in a shown cell's outputs: a traceback, a progress bar, a
    warning, anything on stderr, a printed line the page clips. One line per problem, naming the
    cell."""
    problems: dict[tuple[int, str], str] = {}  # one line per cell and kind (papermill streams in many pieces)
    for index, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or any(t in tags for t in ("remove-output", "remove-cell")):
            continue
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            plain = out.get("data", {}).get("text/plain", "")
            text += "".join(plain) if isinstance(plain, list) else plain
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")[:80]
            if kind == "error" or "Traceback (most recent call last)" in text:
                problems.setdefault((index, "traceback"), f"cell {index}: a traceback ({out.get('ename', first)})")
            elif _PROGRESS_BAR.search(text):
                problems.setdefault((index, "bar"), f"cell {index}: a progress bar in the output ({first!r})")
            elif kind == "stream" and out.get("name") == "stderr":
                problems.setdefault((index, "stderr"), f"cell {index}: output on stderr ({first!r})")
            elif _WARNING.search(text):
                problems.setdefault((index, "warning"), f"cell {index}: a warning in the output ({first!r})")
            elif kind == "stream" and any(len(line) > MAX_PRINTED_LINE for line in text.splitlines()):
                long = next(line for line in text.splitlines() if len(line) > MAX_PRINTED_LINE)
                problems.setdefault((index, "long"), f"cell {index}: a printed line of {len(long)} characters "
                                    f"is clipped by the page ({long[:40]!r}…): print less, or display Markdown")
    return list(problems.values())


def source_title_and_figures(source: Path | None) -> tuple[str, int, int]:
    """The first '# ' heading of a page's source and, for a notebook, its PNG outputs and its
    markdown outputs that hold a pipe table."""
    if source is None:
        return "", 0, 0
    if source.suffix == ".ipynb":
        import json

        nb = json.loads(source.read_text(encoding="utf-8"))
        title, figures, tables = "", 0, 0
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "markdown" and not title:
                for line in "".join(cell.get("source", [])).splitlines():
                    if line.startswith("# "):
                        title = line[2:].strip()
                        break
            tags = cell.get("metadata", {}).get("tags", [])
            if any(t in tags for t in ("remove-output", "remove-cell")):
                continue
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if "image/png" in data:
                    figures += 1
                markdown = data.get("text/markdown", "")
                markdown = "".join(markdown) if isinstance(markdown, list) else markdown
                if _PIPE_SEPARATOR.search(markdown):
                    tables += 1
        return title or source.stem, figures, tables
    for line in source.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip(), 0, 0
    return source.stem, 0, 0


def _toc_docnames(toc: dict) -> list[str]:
    names = [toc["root"]] if toc.get("root") else []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                names.append(node["file"])
            for key in ("chapters", "sections", "parts"):
                walk(node.get(key))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return names


def toc_pages(html_dir: Path, toc_path: Path, book_dir: Path | None = None) -> list[Page]:
    import yaml

    book_dir = book_dir or toc_path.parent
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    pages = []
    for docname in _toc_docnames(toc):
        docname = str(Path(docname).with_suffix("")) if Path(docname).suffix in (
            ".ipynb", ".md", ".rst") else docname
        source = _source_file(book_dir, docname)
        title, figures, tables = source_title_and_figures(source)
        problems = []
        if source is not None and source.suffix == ".ipynb":
            import json

            problems = notebook_output_problems(json.loads(source.read_text(encoding="utf-8"))["cells"])
        pages.append(Page(docname, html_dir / f"{docname}.html", source, title, figures, tables,
                          problems))
    return pages


# ---------------------------------------------------------------- Chromium

def _chromium(exe: str, extra: list[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# Run in the page after load, at the window's width: every content table wider than the text
# column (or than a scrolling wrapper around it) is reported on <body data-lmc-overflow>.
_OVERFLOW_SCRIPT = """<script>
window.addEventListener("load", function () {
  var found = [];
  document.querySelectorAll("main table, article table").forEach(function (table, i) {
    var column = table.closest("article") || table.closest("main");
    var wrapper = table.parentElement;
    var width = Math.max(table.scrollWidth, table.getBoundingClientRect().width);
    if (width > column.clientWidth + 1 || wrapper.scrollWidth > wrapper.clientWidth + 1) {
      var head = table.querySelector("tr");
      found.push("table " + (i + 1) + " is " + Math.round(width) + " px wide, the column "
                 + column.clientWidth + " px, its box " + wrapper.clientWidth + " px ("
                 + (head ? head.innerText.replace(/\\s+/g, " ").slice(0, 60) : "") + ")");
    }
  });
  document.body.setAttribute("data-lmc-overflow", JSON.stringify(found));
});
</script>"""
_OVERFLOW_ATTR = re.compile(r'data-lmc-overflow="([^"]*)"')


def table_overflows(page_html: Path, exe: str, timeout: float, width: int = 1280) -> list[str] | None:
    """Tables of the page wider than its text column at ``width`` px (None: not measured)."""
    import html as html_lib
    import json

    probe = page_html.with_name(f".lmc-overflow-{page_html.name}")
    text = page_html.read_text(encoding="utf-8")
    cut = text.lower().rfind("</body>")
    probe.write_text(text[:cut] + _OVERFLOW_SCRIPT + text[cut:] if cut >= 0 else text + _OVERFLOW_SCRIPT,
                     encoding="utf-8")
    try:
        dom = _chromium(exe, ["--dump-dom", f"--window-size={width},2000"], probe.resolve().as_uri(), timeout)
    finally:
        probe.unlink(missing_ok=True)
    found = _OVERFLOW_ATTR.search(dom.stdout)
    return None if found is None else json.loads(html_lib.unescape(found.group(1)))


def check_page(page: Page, exe: str, shots_dir: Path, timeout: float = 120) -> list[str]:
    """Failures of one page (empty when it passes)."""
    fails = [f"{page.docname}: {p}" for p in page.output_problems]
    if not page.html.is_file():
        return [f"{page.docname}: {page.html} was not built"]
    url = page.html.resolve().as_uri()
    try:
        dom = _chromium(exe, ["--dump-dom"], url, timeout)
    except subprocess.TimeoutExpired:
        return [f"{page.docname}: chromium --dump-dom timed out after {timeout:.0f} s"]
    if dom.returncode != 0 or "<html" not in dom.stdout.lower():
        tail = "\n    ".join(dom.stderr.strip().splitlines()[-5:])
        return [f"{page.docname}: chromium --dump-dom failed (exit {dom.returncode})\n    {tail}"]
    parsed = parse_page(dom.stdout)
    if page.title:
        want = _norm(page.title)
        if want not in _norm(parsed.title):
            fails.append(f"{page.docname}: <title> {parsed.title.strip()!r} lacks the page "
                         f"title {page.title!r}")
        if not any(want in _norm(h) for h in parsed.h1):
            fails.append(f"{page.docname}: no <h1> with the title {page.title!r} "
                         f"(h1: {[h.strip() for h in parsed.h1]})")
    pngs = 0
    for src in parsed.images:
        target = urlparse(src)
        if target.scheme in ("http", "https") or src.startswith("//"):
            fails.append(f"{page.docname}: <img> from the web: {src}")
            continue
        if target.scheme == "data":
            continue
        path = (Path(unquote(target.path)) if target.scheme == "file"
                else (page.html.parent / unquote(target.path)).resolve())
        if not path.is_file():
            fails.append(f"{page.docname}: <img src={src!r}>: {path} does not exist")
            continue
        if path.suffix.lower() == ".png":
            problem = png_problem(path)
            if problem:
                fails.append(f"{page.docname}: <img src={src!r}>: {problem}")
            else:
                pngs += 1
    if pngs < page.figures:
        fails.append(f"{page.docname}: {pngs} valid PNG <img> in the page, but the notebook has "
                     f"{page.figures} figure output(s)")
    if parsed.tables < page.tables:
        fails.append(f"{page.docname}: {parsed.tables} <table> in the page, but the notebook has "
                     f"{page.tables} markdown table output(s) (rendered as plain text?)")
    if parsed.equations and not parsed.typeset:
        fails.append(f"{page.docname}: {parsed.equations} equation(s) but MathJax typeset none "
                     f"(is book/_static/mathjax there? see scripts/book_assets.py)")
    fails += [f"{page.docname}: loads from the web: {r}" for r in parsed.remote]
    try:
        overflows = table_overflows(page.html, exe, timeout)
    except subprocess.TimeoutExpired:
        overflows = None
    if overflows is None:
        fails.append(f"{page.docname}: could not measure the tables' width in chromium")
    else:
        fails += [f"{page.docname}: at 1280 px, {o}" for o in overflows]

    shot = shots_dir / (page.docname.replace("/", "__") + ".png")
    try:
        res = _chromium(exe, [f"--screenshot={shot}", "--window-size=1280,2000"], url, timeout)
    except subprocess.TimeoutExpired:
        return fails + [f"{page.docname}: chromium --screenshot timed out after {timeout:.0f} s"]
    if not shot.is_file():
        tail = "\n    ".join(res.stderr.strip().splitlines()[-5:])
        fails.append(f"{page.docname}: no screenshot (exit {res.returncode})\n    {tail}")
    else:
        problem = blank_problem(shot)
        if problem:
            fails.append(f"{page.docname}: {problem}")
    return fails


def check_book(html_dir: Path, toc: Path | None = None, *, chromium: str | None = None,
               shots_dir: Path | None = None, log=print) -> Report:
    """Check every toc page of the built book at ``html_dir``; see the module docstring."""
    html_dir = Path(html_dir)
    report = Report()
    if toc is None:
        book_dir = html_dir.parent.parent  # <book>/_build/html
        toc = book_dir / "_toc.yml"
    toc = Path(toc)
    exe = chromium or find_chromium()
    if exe is None:
        report.failures.append("chromium not found (apt-get install -y chromium)")
        return report
    if not (html_dir / "index.html").is_file():
        report.failures.append(f"{html_dir / 'index.html'} does not exist: build the book first")
        return report
    if not toc.is_file():
        report.failures.append(f"{toc} does not exist")
        return report
    pages = toc_pages(html_dir, toc)
    if len(pages) < 1:
        report.failures.append(f"{toc} lists no pages")
    own_tmp = shots_dir is None
    shots = Path(tempfile.mkdtemp(prefix="book-shots-")) if own_tmp else Path(shots_dir)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        for page in pages:
            fails = check_page(page, exe, shots)
            report.pages.append(page.docname)
            report.failures += fails
            log(f"  {'ok  ' if not fails else 'FAIL'} {page.docname} "
                f"({page.figures} figure(s), {page.tables} table(s))")
    finally:
        if own_tmp:
            shutil.rmtree(shots, ignore_errors=True)
    report.failures += [f"loads from the web: {r}" for r in external_assets(html_dir)
                        if not any(r.startswith(p + ".html") for p in report.pages)]
    report.failures += pdf_link_problems(html_dir)
    return report


def pdf_link_problems(html_dir: Path) -> list[str]:
    """Every link from a page to a .pdf beside it must reach a real PDF (the book's download)."""
    fails = []
    for page in sorted(Path(html_dir).glob("*.html")):
        for href in set(re.findall(r'href="([^":#?]+\.pdf)"', page.read_text(encoding="utf-8", errors="replace"))):
            target = page.parent / unquote(href)
            head = target.read_bytes()[:5] if target.is_file() else b""
            if head != b"%PDF-":
                fails.append(f"{page.name}: links {href}, which is "
                             + ("not a PDF" if target.is_file() else "missing (make pdf prints it)"))
    return fails


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html_dir", type=Path, nargs="?", default=Path("book/_build/html"))
    ap.add_argument("--toc", type=Path, help="default: <html_dir>/../../_toc.yml")
    ap.add_argument("--screenshots", type=Path, help="keep the screenshots in this directory")
    args = ap.parse_args(argv)
    exe = find_chromium()
    print(f"checking {args.html_dir} with {exe or 'no chromium'}")
    report = check_book(args.html_dir, args.toc, chromium=exe, shots_dir=args.screenshots)
    if report.failures:
        print(f"\n{len(report.failures)} failure(s):", file=sys.stderr)
        for f in report.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"all {len(report.pages)} page(s) pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
