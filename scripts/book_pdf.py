#!/usr/bin/env python
"""The book as one PDF, printed from the built HTML by headless Chromium (no TeX needed).

    python scripts/book_pdf.py [book/_build/html]     # -> book/_build/html/lmc-book.pdf

Each page of the toc (the landing page, then the chapters in order) is printed with Chromium's
``--print-to-pdf`` after MathJax has typeset it (the same virtual-time budget as the page
checks), and the pages are joined with pypdf into one file with a bookmark per chapter. The
file is written atomically beside index.html, where the landing page links to it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from check_book import _chromium, find_chromium, toc_pages  # noqa: E402

PDF_NAME = "lmc-book.pdf"
NO_CHROMIUM = "sudo apt-get install -y chromium, then make pdf"


def build_pdf(html_dir: Path, toc: Path | None = None, *, timeout: float = 180, log=print) -> Path:
    """Print every toc page and join them into ``html_dir / PDF_NAME``; returns its path."""
    from pypdf import PdfReader, PdfWriter

    html_dir = Path(html_dir)
    toc = Path(toc) if toc else html_dir.parent.parent / "_toc.yml"
    exe = find_chromium()
    if exe is None:
        raise RuntimeError(f"no Chromium to print the PDF ({NO_CHROMIUM})")
    writer = PdfWriter()
    with tempfile.TemporaryDirectory(prefix="book-pdf-") as tmp:
        for i, page in enumerate(toc_pages(html_dir, toc)):
            part = Path(tmp) / f"{i:03d}.pdf"
            res = _chromium(exe, [f"--print-to-pdf={part}", "--no-pdf-header-footer"],
                            page.html.resolve().as_uri(), timeout)
            if not part.is_file() or part.stat().st_size == 0:
                raise RuntimeError(f"chromium did not print {page.html} (exit {res.returncode}): "
                                   + " ".join(res.stderr.strip().splitlines()[-3:]))
            start = len(writer.pages)
            for pdf_page in PdfReader(part).pages:
                writer.add_page(pdf_page)
            writer.add_outline_item(title=page.title or page.docname, page_number=start)
            log(f"  {page.docname}: {len(writer.pages) - start} page(s)")
        out = html_dir / PDF_NAME
        partial = out.with_name(f".{PDF_NAME}.partial")
        with open(partial, "wb") as fh:
            writer.write(fh)
        os.replace(partial, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html_dir", type=Path, nargs="?", default=SCRIPTS.parent / "book" / "_build" / "html")
    args = ap.parse_args(argv)
    if not (args.html_dir / "index.html").is_file():
        print(f"error: {args.html_dir / 'index.html'} does not exist: build the book first (make book)",
              file=sys.stderr)
        return 1
    try:
        out = build_pdf(args.html_dir)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"PDF: {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
