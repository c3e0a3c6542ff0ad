"""lmc_study.report (results.json, checks, summaries) and scripts/run_notebooks.py (parameters,
skipping unchanged notebooks, atomic run directories)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import nbformat
import pytest
import torch
from helpers import load_script

from lmc_study import report, tables
from lmc_study.profiles import PROFILES
from lmc_study.report import DATASETS, METHODS, load_results, start_run, summarize
from lmc_study.tables import markdown_table

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture
def run(tmp_path):
    return start_run("99_test", profile="smoke", dataset="fashion_mnist", datasets=["shakespeare"],
                     device="cpu", overrides={"vit.epochs": 1}, output_dir=tmp_path / "out")


# ------------------------------------------------------------------ start_run checks

def test_start_run_resolves_profile_device_and_environment(run, monkeypatch):
    assert run.profile.name == "smoke"
    assert run.profile.vit.epochs == 1
    assert run.device == torch.device("cpu")
    assert run.output_dir.is_dir()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert run.device_name.startswith("cpu (") and "core" in run.device_name
    assert run.commit == "unknown" or len(run.commit.split("-")[0]) >= 7
    assert run.all_datasets == ["fashion_mnist", "shakespeare"]


def test_unknown_profile_lists_valid_profiles(tmp_path):
    with pytest.raises(ValueError) as e:
        start_run("x", profile="huge", dataset="fashion_mnist", output_dir=tmp_path)
    for name in PROFILES:
        assert name in str(e.value)


def test_unknown_dataset_lists_valid_datasets(tmp_path):
    with pytest.raises(ValueError) as e:
        start_run("x", profile="smoke", dataset="mnist", output_dir=tmp_path)
    assert "mnist" in str(e.value)
    for name in DATASETS:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="fashion_mnist"):
        start_run("x", profile="smoke", datasets=["imagenet"], output_dir=tmp_path)


def test_unknown_override_lists_valid_fields(tmp_path):
    with pytest.raises(ValueError) as e:
        start_run("x", profile="smoke", overrides={"vit.epoch": 3}, output_dir=tmp_path)
    assert "epochs" in str(e.value) and "patch_size" in str(e.value)
    with pytest.raises(ValueError) as e:
        start_run("x", profile="smoke", overrides={"vitt.epochs": 3}, output_dir=tmp_path)
    assert "gpt2" in str(e.value) and "align" in str(e.value)


def test_unknown_device_lists_valid_devices(tmp_path):
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        start_run("x", profile="smoke", device="tpu", output_dir=tmp_path)


# ------------------------------------------------------------------ results.json

ROWS = [
    {"method": "vanilla", "models": [0, 1], "loss_barrier": 1.5, "acc_barrier": 0.3,
     "loss_a": 0.5, "loss_b": 0.6, "acc_a": 0.8, "acc_b": 0.79},
    {"method": "weight_matching", "models": [0, 1], "loss_barrier": torch.tensor(0.25),
     "acc_barrier": float("nan"), "loss_a": 0.5, "loss_b": 0.6, "acc_a": 0.8, "acc_b": 0.79},
]


def test_save_results_content(run):
    path = run.save_results(ROWS, curve=[0.1, 0.2])
    assert path == run.output_dir / "results.json"
    data = json.loads(path.read_text())
    for key in ("notebook", "dataset", "profile", "device", "commit", "torch", "wall_time_s",
                "created", "rows"):
        assert key in data, key
    assert data["notebook"] == "99_test"
    assert data["dataset"] == "fashion_mnist, shakespeare"
    assert data["profile"] == "smoke"
    assert data["device"] == run.device_name
    assert data["torch"] == torch.__version__
    assert data["wall_time_s"] >= 0
    assert data["overrides"] == {"vit.epochs": 1}
    assert data["curve"] == [0.1, 0.2]
    assert data["rows"][1]["loss_barrier"] == pytest.approx(0.25)  # tensor -> number
    assert data["rows"][1]["acc_barrier"] is None  # NaN is not JSON
    assert load_results(path)["rows"] == data["rows"]
    assert load_results(run.output_dir)["notebook"] == "99_test"
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_save_results_is_atomic(run, monkeypatch):
    path = run.save_results(ROWS)
    before = path.read_text()
    with pytest.raises(TypeError):  # not serialisable: nothing written
        run.save_results([{"method": "vanilla", "loss_barrier": object()}])
    assert path.read_text() == before

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run.save_results(ROWS[:1])
    assert path.read_text() == before  # the old file is whole
    assert sorted(p.name for p in run.output_dir.iterdir()) == ["results.json"]  # no temp left


def test_save_results_checks_methods_and_reserved_keys(run):
    with pytest.raises(ValueError) as e:
        run.save_results([{"method": "git_rebasin", "loss_barrier": 1.0}])
    for m in METHODS:
        assert m in str(e.value)
    run.save_results([{"method": "git_rebasin", "loss_barrier": 1.0}],
                     extra_methods=["git_rebasin"])
    with pytest.raises(ValueError, match="reserved"):
        run.save_results([], profile="other")
    assert not (run.output_dir / "results.json.tmp").exists()


def test_load_results_rejects_other_json(tmp_path):
    (tmp_path / "results.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="missing keys"):
        load_results(tmp_path)


def test_provenance_line(run):
    line = run.provenance()
    assert "\n" not in line
    for part in ("Dataset fashion_mnist, shakespeare", "profile smoke", "vit.epochs=1",
                 f"device {run.device_name}", f"commit {run.commit}", f"torch {torch.__version__}",
                 "wall time "):
        assert part in line, part


def test_results_say_which_environment_data_and_models_made_them(run, tmp_path, monkeypatch):
    """A reader who retrains can check: torch, processor, threads and SIMD kernels, the sha256 of
    every data file, and the sha256 of every model the run loaded or stored (and no other)."""
    from helpers import make_vit

    from lmc_core.cache import CheckpointCache, file_sha256

    before = CheckpointCache(tmp_path / "other").save({"kind": "toy", "seed": 9}, make_vit(seed=9), {})
    data = tmp_path / "data"
    (data / "tokens").mkdir(parents=True)
    (data / "shakespeare.txt").write_text("to be")
    (data / "tokens" / "t.npz").write_bytes(b"npz")
    monkeypatch.setenv("LMC_DATA_DIR", str(data))
    fresh = start_run("99_test", profile="smoke", dataset="fashion_mnist", output_dir=tmp_path / "out")
    entry = CheckpointCache(tmp_path / "cache").save({"kind": "toy", "seed": 3}, make_vit(seed=3), {})
    record = json.loads(fresh.save_results(ROWS).read_text())
    env = record["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["cpu"] and env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["data_sha256"] == {"shakespeare.txt": hashlib.sha256(b"to be").hexdigest(),
                                  "tokens/t.npz": hashlib.sha256(b"npz").hexdigest()}
    assert record["models"] == [{"kind": "toy", "seed": 3, "key": record["models"][0]["key"],
                                 "sha256": file_sha256(entry / "model.safetensors")}]
    assert file_sha256(before / "model.safetensors") not in json.dumps(record)  # used before the run
    assert "1 trained model (sha256 in results.json)" in fresh.provenance()


def test_savefig_writes_png(run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = run.savefig(fig, "curve")
    plt.close(fig)
    assert path == run.output_dir / "curve.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError):
        run.savefig(fig, "../escape")


# ------------------------------------------------------------------ summaries and tables

def test_summarize_mean_and_standard_error():
    rows = [{"method": "weight_matching", "loss_barrier": v} for v in (1.0, 2.0, 3.0, 4.0)]
    rows += [{"method": "vanilla", "loss_barrier": 2.0}, {"method": "custom", "loss_barrier": 0.5},
             {"method": "learned_matching", "loss_barrier": 0.0},
             {"method": "learned_matching", "loss_barrier": 0.02}]
    out = summarize(rows)
    assert [s["method"] for s in out] == ["vanilla", "weight_matching", "learned_matching",
                                          "custom"]
    wm = out[1]
    assert wm["n"] == 4 and wm["mean"] == pytest.approx(2.5)
    assert wm["se"] == pytest.approx(math.sqrt(5 / 3) / 2)  # sample std / sqrt(n)
    assert wm["loss_barrier"] == "2.50 ± 0.65"
    assert out[0]["se"] is None and out[0]["loss_barrier"] == "2.00"  # n = 1: no error bar
    assert out[2]["loss_barrier"] == "0.01 ± 0.01"
    assert out[2]["label"] == "Learned matching (all classes)"

    two = summarize(rows, ["loss_barrier", "acc_barrier"])
    assert two[1]["loss_barrier_mean"] == pytest.approx(2.5)
    assert two[1]["acc_barrier"] == "—" and two[1]["acc_barrier_mean"] is None


def test_markdown_table():
    table = markdown_table(summarize([{"method": "vanilla", "loss_barrier": 1.0},
                                      {"method": "vanilla", "loss_barrier": 2.0}]),
                           ["label", "loss_barrier", ("n", "pairs")])
    lines = table.splitlines()
    assert lines[0] == "| method | loss barrier | pairs |"
    assert lines[1].count("---") == 3
    assert lines[2] == "| Vanilla averaging | 1.50 ± 0.50 | 2 |"
    assert "a \\| b" in markdown_table([{"x": "a | b", "y": None, "z": 0.12345}])
    assert "| — | 0.123 |" in markdown_table([{"x": "a | b", "y": None, "z": 0.12345}])
    # a header with pipes (|Δ loss|) must not add columns: every line has the same cell count
    lines = markdown_table([{"d": 1.0}], [("d", "max |Δ loss|")]).splitlines()
    assert lines[0] == "| max \\|Δ loss\\| |"
    assert {line.replace("\\|", "").count("|") for line in lines} == {2}


# ------------------------------------------------------------------ scripts/run_notebooks.py

def _fixture_notebook(path: Path, body: str = "x = 1") -> Path:
    """A notebook without lmc_core (fast): parameters, then results.json by hand."""
    params = nbformat.v4.new_code_cell('profile = "smoke"\ndevice = "auto"\noutput_dir = "."\n'
                                       'scale = 1.0')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Fixture"), params, nbformat.v4.new_code_cell(body),
        nbformat.v4.new_code_cell(
            "import json, pathlib\n"
            "pathlib.Path(output_dir, 'results.json').write_text(json.dumps("
            "{'notebook': 'fixture', 'profile': profile, 'device': device, 'commit': 'x', "
            "'rows': [{'scale': scale}]}))"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_profile_names_match_profiles():
    rn = load_script("run_notebooks")
    assert set(rn.PROFILE_NAMES) == set(PROFILES)


def test_unknown_parameter_lists_valid_names(tmp_path, capsys):
    rn = load_script("run_notebooks")
    nb = _fixture_notebook(tmp_path / "notebooks" / "01_fx.ipynb")
    with pytest.raises(rn.ParameterError) as e:
        rn.check_parameters(nb, {"profile": "smoke", "sclae": 2})
    assert "sclae" in str(e.value)
    assert "valid parameters: profile, device, output_dir, scale" in str(e.value)
    rc = rn.main(["--profile", "smoke", "--notebooks-dir", str(tmp_path / "notebooks"),
                  "--runs-dir", str(tmp_path / "runs"), "-p", "sclae", "2"])
    assert rc == 2
    assert "valid parameters: profile, device, output_dir, scale" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_stamp_digest_covers_inputs(tmp_path):
    rn = load_script("run_notebooks")
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    (lib / "a.py").write_text("A = 1\n")
    (lib / "sub" / "b.py").write_text("B = 1\n")
    nb = _fixture_notebook(tmp_path / "nb.ipynb", body="if False:\n    from lib.sub import b")
    base = rn.stamp_digest(nb, {"device": "auto"}, "smoke", lib)
    (lib / "a.py").write_text("A = 2\n")  # not imported by the notebook: not an input
    assert rn.stamp_digest(nb, {"device": "auto"}, "smoke", lib) == base
    assert rn.stamp_digest(nb, {"device": "auto"}, "smoke", lib) == base
    assert rn.stamp_digest(nb, {"device": "cpu"}, "smoke", lib) != base
    assert rn.stamp_digest(nb, {"device": "auto"}, "full", lib) != base
    (lib / "sub" / "b.py").write_text("B = 2\n")
    assert rn.stamp_digest(nb, {"device": "auto"}, "smoke", lib) != base
    (lib / "sub" / "b.py").write_text("B = 1\n")
    _fixture_notebook(nb, body="x = 2")
    assert rn.stamp_digest(nb, {"device": "auto"}, "smoke", lib) != base


def test_library_closure_follows_imports_of_the_real_chapters():
    rn = load_script("run_notebooks")
    closure = {name: {p.relative_to(rn.ROOT).as_posix() for p in rn.library_closure(
        rn.NOTEBOOKS_DIR / f"{name}.ipynb")} for name in ("01_data", "03_vit_pairwise", "09_curves")}
    for files in closure.values():  # an import runs the package's __init__ and, transitively, what it imports
        assert {"lmc_study/__init__.py", "lmc_study/report.py", "lmc_core/__init__.py", "lmc_core/canonical.py",
                "lmc_core/interpolation.py", "lmc_core/engine.py", "lmc_core/alignment/__init__.py"} <= files
    assert {"lmc_study/paper.py", "lmc_study/table2.py", "lmc_study/baselines.py"} <= closure["03_vit_pairwise"]
    assert "lmc_study/paper.py" not in closure["01_data"] and "lmc_core/cli.py" not in closure["09_curves"]
    assert {"lmc_core/curves.py", "lmc_study/curve_study.py", "lmc_study/multitask.py",
            "lmc_study/data/images.py"} <= closure["09_curves"]


def test_a_run_stays_current_when_it_recorded_inputs_the_code_no_longer_has(tmp_path):
    rn = load_script("run_notebooks")
    out = tmp_path / "run"
    out.mkdir()
    (out / "01_fx.ipynb").write_text("{}")
    (out / "results.json").write_text("{}")
    (out / "stamp.json").write_text(json.dumps({"inputs": {"notebook": "n1", "lib/old.py": "o"}}))
    assert rn.is_up_to_date(out, "01_fx", {"notebook": "n1"})
    assert rn.changed_inputs(out, {"notebook": "n1", "lib/new.py": "x"}) == ["lib/new.py"]
    assert not rn.is_up_to_date(out, "01_fx", {"notebook": "n2"})


def test_stamp_covers_the_files_a_chapter_reads(tmp_path):
    rn = load_script("run_notebooks")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "a.py").write_text("A = 1\n")
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "cpu.json").write_text("{}")
    runs = tmp_path / "book" / "runs" / "cpu"
    for name in ("03_x", "11_side_by_side", ".partial-04_y"):
        (runs / name).mkdir(parents=True)
        (runs / name / "results.json").write_text("{}")
    intro = _fixture_notebook(tmp_path / "00_introduction.ipynb")
    side = _fixture_notebook(tmp_path / "11_side_by_side.ipynb")
    assert "tuning/cpu.json" in rn.stamp_inputs(intro, {}, "cpu", lib, tmp_path)
    read = rn.stamp_inputs(side, {}, "cpu", lib, tmp_path)
    assert "book/runs/cpu/03_x/results.json" in read  # another chapter's results: an input
    assert not any("11_side_by_side" in k or ".partial" in k for k in read)  # not its own, not partial runs
    before = rn.inputs_digest(read)
    (runs / "03_x" / "results.json").write_text('{"rows": []}')
    assert rn.inputs_digest(rn.stamp_inputs(side, {}, "cpu", lib, tmp_path)) != before


def test_run_skip_rerun_and_failure(tmp_path):
    rn = load_script("run_notebooks")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "core.py").write_text("VERSION = 1\n")
    nb = _fixture_notebook(tmp_path / "notebooks" / "01_fx.ipynb", body="if False:  # an input, not run\n"
                                                                          "    from lib import core")
    runs = tmp_path / "runs"
    kw = dict(profile="smoke", parameters={"device": "auto", "scale": 2.0}, runs_dir=runs,
              lib_dirs=lib)

    first = rn.run_one(nb, **kw)
    out = runs / "smoke" / "01_fx"
    assert first.status == "ran", first.message
    assert sorted(p.name for p in out.iterdir()) == ["01_fx.ipynb", "results.json", "stamp.json"]
    assert json.loads((out / "results.json").read_text())["rows"] == [{"scale": 2.0}]
    executed = nbformat.read(out / "01_fx.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert not any(p.name.startswith(".") for p in (runs / "smoke").iterdir())

    assert rn.run_one(nb, **kw).status == "skipped"  # unchanged
    assert rn.run_one(nb, **{**kw, "force": True}).status == "ran"
    (lib / "core.py").write_text("VERSION = 2\n")  # the library changed
    messages = []
    assert rn.run_one(nb, **kw, log=messages.append).status == "ran"
    assert messages == ["  running 01_fx: changed since the last run: lib/core.py"]
    assert rn.run_one(nb, **kw).status == "skipped"
    (out / "results.json").unlink()  # an incomplete run is not up to date
    assert not rn.is_up_to_date(out, "01_fx", rn.stamp_inputs(
        nb, {"profile": "smoke", "output_dir": ".", "device": "auto", "scale": 2.0}, "smoke", lib))

    good = (out / "01_fx.ipynb").read_bytes()
    _fixture_notebook(nb, body="raise RuntimeError('boom in cell 3')\nfrom lib import core")
    failed = rn.run_one(nb, **kw)
    assert failed.status == "failed"
    assert "boom in cell 3" in failed.message
    assert failed.out_dir == runs / "smoke" / ".partial-01_fx"
    assert (failed.out_dir / "01_fx.ipynb").is_file()  # the partial output, with the error
    assert (out / "01_fx.ipynb").read_bytes() == good  # the last good run is untouched


def test_parameters_shown_once_with_the_values_used():
    rn = load_script("run_notebooks")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('profile = "smoke"\ndataset = None  # why it is None\n'
                                  'methods = ["a",\n           "b"]\nextras = True',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('# Parameters\nprofile = "full"\ndataset = "fashion_mnist"\n'
                                  'methods = ["c"]\n', metadata={"tags": ["injected-parameters"]}),
    ]
    rn.show_parameters_once(nb)
    assert nb.cells[0].source == ('profile = "full"\ndataset = "fashion_mnist"  # why it is None\n'
                                  'methods = ["c"]\nextras = True')
    assert nb.cells[1].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert "profile" in nb.cells[1].source  # papermill's record stays in the file


def test_tuning_rows_say_what_was_measured_and_chosen():
    from lmc_study.tables import tuning_rows

    record = {"tolerance": 0.005, "chosen": {"align.lm_epochs": 3, "align.lm_perm_lr": 0.1}, "kinds": {
        "vit": {"endpoints": {"models": [{"val_loss": 0.31, "val_accuracy": 0.885}],
                              "baselines_val_loss": {"logistic regression": 0.45},
                              "target": {"rule": "val accuracy >= 88%", "met": True}},
                "lm_budget": {"steps_per_epoch": 50, "val_barrier_by_epoch": [0.2, 0.1, 0.05], "chosen_epochs": 2},
                "lm_perm_lr": {"val_barrier_by_rate": {"0.001": 0.6, "0.1": 0.2}}}}}
    rows = tuning_rows(record)
    assert [r["result"] for r in rows] == ["met", "2 epochs (both kinds: 3)", "0.1"]
    assert "0.310 (88.5%)" in rows[0]["measured on validation"] and "logistic regression 0.450" in rows[0][
        "measured on validation"]
    assert "0: 0.200, 1: 0.100, 2: 0.050" in rows[1]["measured on validation"]
    assert "0.001: 0.600, 0.1: 0.200" in rows[2]["measured on validation"]


def test_unlearning_tuning_record_becomes_rows_that_say_what_was_kept():
    from lmc_study.tables import tuning_heading, tuning_rows

    candidates = [{"lr": 1e-4, "length": 1, "forget_acc": 0.9, "retain_acc": 0.99, "eligible": True},
                  {"lr": 1e-3, "length": 1, "forget_acc": 0.1, "retain_acc": 0.2, "eligible": False}]
    record = {"tool": "unlearn", "profile": "cpu", "device": "cpu", "threads": 2, "torch": "2", "commit": "abc",
              "chosen": {"random.gradient_ascent": "lr 0.0001, 1 epochs"}, "settings": {"random": {
                  "target": 0.8, "target_from": "original's validation accuracy", "retain_floor": 0.95, "methods": {
                      "gradient_ascent": {"chosen": {"lr": 1e-4, "length": 1}, "any_eligible": True,
                                          "candidates": candidates, "length_unit": "epochs"},
                      "random_labels": {"chosen": {"lr": 1e-3, "length": 1}, "any_eligible": False,
                                        "candidates": candidates[1:], "length_unit": "epochs"}}}}}
    assert "chapter 10's unlearning baselines" in tuning_heading("unlearn-cpu", record)
    rows = tuning_rows(record)
    assert [r["result"] for r in rows] == ["lr 0.0001, 1 epochs", "none eligible: lr 0.001, 1 epochs (best retained)"]
    assert "lr 0.0001, 1 epochs: forget 90.0%, retained 99.0%" in rows[0]["measured on validation"]
    assert rows[0]["decides"] == "retained ≥ 95.0%, forget accuracy nearest 80.0% (original's validation accuracy)"


def test_unlearn_tuning_script_copies_the_chapters_record(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("unlearn_tuning", ROOT / "scripts" / "unlearn_tuning.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tuning = {"random": {"methods": {"finetune": {"chosen": {"lr": 3e-4, "length": 300}, "length_unit": "steps"}}}}
    results = {"profile": "cpu", "device": "cpu", "torch": "2", "commit": "abc", "environment": {"threads": 2},
               "tuning": tuning}
    record = script.tuning_record(results)
    assert record["chosen"] == {"random.finetune": "lr 0.0003, 300 steps"} and record["settings"] == tuning
    with pytest.raises(ValueError, match="no tuning record: run chapter 10 first"):
        script.tuning_record({**results, "tuning": None})


def test_benchmark_rows_for_every_bench_record() -> None:
    """Each bench script's --out record becomes one table: the barrier engine per model and path,
    learned matching per precision, the trainer against a plain loop (one profile or several)
    and several seeds one by one against at once."""
    timing = {"seconds": 2.0, "speedup": 1.5, "max_abs_dloss": 1e-7}
    barrier_record = {"bench": "barrier", "batches": 2, "batch_size": 32, "lambdas": 11, "engine_strategy": "loop",
                      "results": {"vit": {path: {"naive": {"seconds": 3.0}, "engine": timing, "ensemble": timing,
                                                 "ensemble_dense": timing} for path in ("vanilla", "canonical")}}}
    rows = tables.benchmark_rows(barrier_record)
    assert [(r["model"], r["path"]) for r in rows] == [("ViT", "vanilla"), ("ViT", "canonical")]
    assert rows[0]["engine (loop)"] == "2.00 s (1.50x)" and rows[0]["naive loop"] == "3.00 s"
    align_record = {"bench": "align", "profile": "smoke", "steps": 50, "pairs": 3,
                    "gpt2": {"fp32_s_per_step": 0.5, "bf16_s_per_step": 0.25, "ratio": 2.0, "fp32_barriers": [0.1] * 3,
                             "barrier_diff_mean": 0.001, "barrier_diff_se": 0.002, "pairs_higher": 2}}
    (row,) = tables.benchmark_rows(align_record)
    assert row["bf16 autocast"] == "0.250 s/step (2.00x)" and "(2/3 pairs higher)" in row["barrier, bf16 − float32"]
    speed = {"unit": "images/s", "ours": 3000.0, "plain": 2000.0, "ratio": 1.5}
    assert tables.benchmark_rows({"profile": "smoke", "vit": speed})[0]["ratio"] == "1.50x"
    several = tables.benchmark_rows({"profile": "smoke,cpu", "smoke": {"vit": speed}, "cpu": {"gpt2": speed}})
    assert [(r["model"], r["profile"]) for r in several] == [("ViT", "smoke"), ("GPT-2", "cpu")]
    seeds = {"bench": "train-seeds", "seeds": 3, "results": {"smoke": {"gpt2": {
        "unit": "tokens/s", "one_by_one": 1000.0, "at_once": 900.0, "ratio": 0.9, "memory": "peak RSS",
        "one_by_one_peak_mib": 1000.0, "at_once_peak_mib": 1300.0}}}}
    (row,) = tables.benchmark_rows(seeds)
    assert row["ratio"] == "0.90x" and row["peak RSS, one by one / at once"] == "1,000 / 1,300 MiB"
