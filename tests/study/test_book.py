"""Screenshot test: a tiny book built with jupyter-book 1.x (execution off) from a fixture notebook
with one figure, opened page by page in real headless Chromium by scripts/check_book.py.

Skipped only when Chromium is missing *and* CI is not set; .ci/run installs Chromium first, so
in CI it always runs."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parents[2]



check_book = load_script("check_book")
build_book = load_script("build_book")
book_pdf = load_script("book_pdf")
rn = load_script("run_notebooks")

needs_chromium = pytest.mark.skipif(
    check_book.find_chromium() is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install -y chromium); CI is not set")


def _png_bytes() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 0.5, 1], [0.2, 1.4, 0.2], marker="o")
    ax.set_xlabel("λ")
    ax.set_ylabel("loss")
    ax.set_title("fixture barrier")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _executed_fixture(path: Path) -> None:
    """An already executed notebook (as papermill leaves it) with one PNG figure output."""
    params = nbformat.v4.new_code_cell('profile = "smoke"', execution_count=1)
    params.metadata["tags"] = ["parameters"]
    fig = nbformat.v4.new_code_cell("plot()", execution_count=2, outputs=[
        nbformat.v4.new_output("display_data", data={
            "image/png": base64.b64encode(_png_bytes()).decode(),
            "text/plain": "<Figure size 400x300 with 1 Axes>"}),
    ])
    table = nbformat.v4.new_code_cell("display_table(rows)", execution_count=3, outputs=[
        nbformat.v4.new_output("display_data", data={
            "text/markdown": "| method | loss barrier |\n| --- | --- |\n| Vanilla | 1.20 |",
            "text/plain": "<IPython.core.display.Markdown object>"}),
    ])
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(
            "# Fixture chapter\n\nA chapter with one figure and the barrier "
            "$B = \\max_\\lambda \\mathcal{L}(\\lambda)$:\n\n"
            "$$\\mathcal{L}(\\lambda) = \\lambda a + (1-\\lambda) b$$"),
        params, nbformat.v4.new_markdown_cell("## The figure"), fig, table])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


ENVIRONMENT = {"torch": "2.14.1", "cpu": "AMD EPYC 9654", "threads": 2, "cpu_capability": "AVX512",
               "data_sha256": {"fashion_mnist.npz": "ab" * 32}}
MODELS = [{"kind": "vit", "seed": 0, "key": "k0", "sha256": "cd" * 32},
          {"kind": "vit", "seed": 1, "key": "k1", "sha256": "ef" * 32}]


def test_the_provenance_note_lets_a_reader_check_the_numbers():
    note = build_book._check_note({"environment": ENVIRONMENT, "models": MODELS})
    assert note.startswith(":::{admonition} Check these numbers: environment, data and 2 model(s)\n:class: dropdown")
    assert "Torch 2.14.1 on AMD EPYC 9654, 2 threads, AVX512 kernels. The same processor" in note
    assert "| fashion_mnist.npz | `abababababababab` |" in note and "| vit | 1 | `efefefefefefefef` |" in note
    assert build_book._check_note({"rows": []}) == ""  # an older run without the record: no note


def _tiny_book_source(base: Path) -> tuple[Path, Path]:
    """(book, notebooks): a book folder with the project's config and one executed smoke chapter."""
    book, notebooks = base / "book", base / "notebooks"
    book.mkdir()
    shutil.copy(ROOT / "book" / "_config.yml", book / "_config.yml")
    _executed_fixture(notebooks / "01_fixture.ipynb")  # the source (only its name matters here)
    run_dir = book / "runs" / "smoke" / "01_fixture"
    _executed_fixture(run_dir / "01_fixture.ipynb")
    (run_dir / "results.json").write_text(json.dumps({
        "notebook": "01_fixture", "dataset": "fashion_mnist", "profile": "smoke",
        "device": "cpu (2 cores)", "commit": "abc1234", "torch": "2", "wall_time_s": 1.0,
        "created": "2025-01-01T00:00:00+00:00", "rows": [], "environment": ENVIRONMENT, "models": MODELS}))
    return book, notebooks


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory) -> Path:
    book, notebooks = _tiny_book_source(tmp_path_factory.mktemp("tinybook"))
    chapters = build_book.choose_runs(book, notebooks)
    assert [c.docname for c in chapters] == ["chapters/01_fixture/01_fixture"]
    for c in chapters:
        build_book.stage_chapter(book, c)
    build_book.write_toc(book, chapters)
    intro = build_book.write_intro(book, chapters).read_text()
    assert "smoke profile" in intro and "not the paper-scale numbers" in intro
    build_book.ensure_mathjax(book / "_static")
    assert build_book.build(book, quiet=True) == 0  # -W -n --keep-going: no warnings
    if check_book.find_chromium() is not None:  # the PDF the first page links to
        book_pdf.build_pdf(book / "_build" / "html", log=lambda *a: None)
    return book / "_build" / "html"


def _run(book: Path, profile: str, name: str, device: str = "cpu (2 cores)") -> Path:
    d = book / "runs" / profile / name
    _executed_fixture(d / f"{name}.ipynb")
    (d / "results.json").write_text(json.dumps({
        "notebook": name, "profile": profile, "device": device, "commit": "abc1234", "rows": []}))
    return d


def test_without_chromium_the_book_is_html_and_one_line(tmp_path, monkeypatch, capsys):
    """A machine without Chromium (CHROMIUM=none hides it, as CI does once) still gets the HTML:
    exit 0, one line saying the PDF was skipped and how to add it, no dead link to a PDF."""
    book, notebooks = _tiny_book_source(tmp_path)
    monkeypatch.setenv("CHROMIUM", "none")
    assert check_book.find_chromium() is None
    code = build_book.main(["--book-dir", str(book), "--notebooks-dir", str(notebooks), "--profiles", "smoke"])
    out = capsys.readouterr().out
    html = book / "_build" / "html"
    assert code == 0 and (html / "index.html").is_file() and not (html / book_pdf.PDF_NAME).exists()
    assert [line for line in out.splitlines() if "PDF" in line] == [
        f"PDF skipped: no Chromium to print it ({book_pdf.NO_CHROMIUM})"]
    assert book_pdf.PDF_NAME not in (html / "intro.html").read_text() and check_book.pdf_link_problems(html) == []
    assert book_pdf.main([str(html)]) == 1  # `make pdf` alone: one line on stderr, no traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install -y chromium" in err and "Traceback" not in err


def test_choose_runs_prefers_full_then_cpu_then_smoke(tmp_path):
    book, notebooks = tmp_path / "book", tmp_path / "notebooks"
    for name in ("01_a", "02_b", "03_c"):
        _executed_fixture(notebooks / f"{name}.ipynb")
    _run(book, "full", "01_a", "NVIDIA H100")
    for name in ("01_a", "02_b"):
        _run(book, "cpu", name)
    for name in ("01_a", "02_b", "03_c"):
        _run(book, "smoke", name)
    chapters = build_book.choose_runs(book, notebooks, log=lambda *a: None)
    assert [(c.name, c.profile) for c in chapters] == [("01_a", "full"), ("02_b", "cpu"), ("03_c", "smoke")]
    text = build_book.runs_statement(chapters)
    assert "1 of 3 chapters show the **full profile**" in text and "on NVIDIA H100, commit `abc1234`" in text
    assert "**cpu profile**" in text and "not the paper-scale numbers" in text
    full_only = build_book.runs_statement(chapters[:1])
    assert "All chapters show the **full profile**" in full_only and "smoke" not in full_only
    only_smoke = build_book.choose_runs(book, notebooks, ("smoke",), log=lambda *a: None)
    assert {c.profile for c in only_smoke} == {"smoke"} and len(only_smoke) == 3


def test_chapter_says_where_its_numbers_come_from_and_when_they_are_stale(tmp_path):
    book, notebooks = tmp_path / "book", tmp_path / "notebooks"
    source = notebooks / "01_a.ipynb"
    _executed_fixture(source)
    run_dir = _run(book, "cpu", "01_a")
    params = {"profile": "cpu", "output_dir": ".", "device": "auto"}
    inputs = rn.stamp_inputs(source, params, "cpu")
    (run_dir / rn.STAMP_FILE).write_text(json.dumps({
        "sha256": rn.inputs_digest(inputs), "parameters": params, "wall_time_s": 12.0,
        "finished": "2026-11-29T12:00:00+0000", "inputs": inputs}))
    (chapter,) = build_book.choose_runs(book, notebooks, log=lambda *a: None)
    assert chapter.changed == [] and not chapter.stale
    staged = json.loads(build_book.stage_chapter(book, chapter).read_text())
    note = "".join(staged["cells"][1]["source"])  # right under the title cell
    assert "**cpu** profile run of commit `abc1234`" in note and "2026-11-29 12:00" in note
    assert "warning" not in note
    assert json.loads((run_dir / "01_a.ipynb").read_text())["cells"][1]["cell_type"] == "code"  # run untouched

    nb = json.loads(source.read_text())  # the notebook changes after the run
    nb["cells"][0]["source"] = "# Fixture chapter, edited\n"
    source.write_text(json.dumps(nb))
    (chapter,) = build_book.choose_runs(book, notebooks, log=lambda *a: None)
    assert chapter.changed == ["notebook"]
    note = "".join(json.loads(build_book.stage_chapter(book, chapter).read_text())["cells"][1]["source"])
    assert "warning" in note and "`notebook` changed" in note
    assert 'make reproduce PROFILE=cpu RUN_ARGS="--only 01_a"' in note
    assert "01_a" in build_book.runs_statement([chapter]).split("changed since these runs")[1]


def test_png_and_blank_checks(tmp_path):
    from PIL import Image

    blank, busy = tmp_path / "blank.png", tmp_path / "busy.png"
    Image.new("RGB", (64, 64), "white").save(blank)
    busy.write_bytes(_png_bytes())
    assert check_book.png_problem(busy) is None
    assert check_book.blank_problem(busy) is None
    assert "blank" in check_book.blank_problem(blank)
    (tmp_path / "cut.png").write_bytes(_png_bytes()[:200])
    assert check_book.png_problem(tmp_path / "cut.png") is not None
    (tmp_path / "empty.png").write_bytes(b"")
    assert check_book.png_problem(tmp_path / "empty.png") == "empty file"


@needs_chromium
def test_book_pages_in_chromium(tiny_book, tmp_path):
    assert (tiny_book / "index.html").is_file()
    assert check_book.external_assets(tiny_book) == []
    shots = tmp_path / "shots"
    report = check_book.check_book(tiny_book, shots_dir=shots, log=lambda *a: None)
    assert report.failures == []
    assert report.pages == ["intro", "chapters/01_fixture/01_fixture"]
    assert len(list(shots.glob("*.png"))) == 2


@needs_chromium
def test_checker_catches_untypeset_equations(tiny_book, tmp_path):
    book = tiny_book.parent.parent
    broken = tmp_path / "html"
    shutil.copytree(tiny_book, broken)
    shutil.rmtree(broken / "_static" / "mathjax")
    page = check_book.toc_pages(broken, book / "_toc.yml", book)[1]
    fails = check_book.check_page(page, check_book.find_chromium(), tmp_path)
    assert any("MathJax typeset none" in f for f in fails), fails


@needs_chromium
def test_checker_catches_a_broken_figure(tiny_book, tmp_path):
    book = tiny_book.parent.parent
    broken = tmp_path / "html"
    shutil.copytree(tiny_book, broken)
    for png in (broken / "_images").glob("*.png"):
        png.write_bytes(b"")  # the page still references it
    page = check_book.toc_pages(broken, book / "_toc.yml", book)[1]
    assert page.figures == 1
    fails = check_book.check_page(page, check_book.find_chromium(), tmp_path)
    assert any("empty file" in f for f in fails), fails


def test_output_problems_traceback_progress_stderr_warning():
    def cell(*outputs, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "outputs": list(outputs)}

    cells = [
        cell({"output_type": "stream", "name": "stdout", "text": "3 pairs of ViTs\n"}),
        cell({"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": []}),
        cell({"output_type": "stream", "name": "stdout", "text": "train:  40%|████      | 4/10 [00:01<00:02]\r"}),
        cell({"output_type": "stream", "name": "stderr", "text": "something on stderr\n"}),
        cell({"output_type": "stream", "name": "stdout", "text": "x.py:3: UserWarning: careful\n"}),
        cell({"output_type": "stream", "name": "stderr", "text": "hidden\n"}, tags=["remove-output"]),
        cell({"output_type": "stream", "name": "stdout", "text": "x" * 101 + "\n"}),
    ]
    problems = check_book.notebook_output_problems(cells)
    assert [p.split(":")[0] for p in problems] == ["cell 1", "cell 2", "cell 3", "cell 4", "cell 6"]
    assert "traceback" in problems[0] and "progress bar" in problems[1]
    assert "stderr" in problems[2] and "warning" in problems[3] and "clipped" in problems[4]


@needs_chromium
def test_checker_catches_a_table_wider_than_the_column(tiny_book, tmp_path):
    book = tiny_book.parent.parent
    wide = tmp_path / "html"
    shutil.copytree(tiny_book, wide)
    page = check_book.toc_pages(wide, book / "_toc.yml", book)[1]
    assert check_book.table_overflows(page.html, check_book.find_chromium(), 120) == []
    cells = "".join(f"<td>column_{i}_with_a_long_unbreakable_name</td>" for i in range(12))
    html = page.html.read_text(encoding="utf-8")
    page.html.write_text(html.replace("</article>", f"<table><tr>{cells}</tr></table></article>", 1),
                         encoding="utf-8")
    overflows = check_book.table_overflows(page.html, check_book.find_chromium(), 120)
    assert len(overflows) == 1 and "column_0" in overflows[0], overflows


@needs_chromium
def test_pdf_has_every_page_and_a_bookmark_per_chapter(tiny_book, tmp_path):
    from pypdf import PdfReader

    reader = PdfReader(tiny_book / book_pdf.PDF_NAME)
    assert len(reader.pages) >= 2
    assert [item.title for item in reader.outline] == [
        "Generalized Linear Mode Connectivity for Transformers", "Fixture chapter"]
    assert "fixture barrier" not in reader.pages[0].extract_text()  # the landing page comes first
    missing = tmp_path / "html"
    shutil.copytree(tiny_book, missing)
    (missing / book_pdf.PDF_NAME).unlink()
    assert check_book.pdf_link_problems(missing) == [
        f"intro.html: links {book_pdf.PDF_NAME}, which is missing (make pdf prints it)"]


def test_committed_cpu_run_is_complete_small_and_holds_no_checkpoints():
    runs = ROOT / "book" / "runs" / "cpu"
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) == chapters
    for name in chapters:
        for file in (f"{name}.ipynb", "results.json", "stamp.json"):
            assert (runs / name / file).is_file(), f"{name}: {file} missing"
        assert json.loads((runs / name / "stamp.json").read_text())["profile"] == "cpu"
    files = [f for f in runs.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.parts[-3:])]
    assert sum(f.stat().st_size for f in files) < 10 * 2**20
    assert not [f for f in files if f.suffix in (".pt", ".pth", ".safetensors", ".bin", ".ckpt", ".npz")]
