"""The command line end to end on tiny checkpoints in a temporary folder: align, barrier, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_gpt2, make_vit, max_dev, raw_logits, single_thread  # noqa: F401
from PIL import Image
from tokenizers import Tokenizer, models
from transformers import GPT2LMHeadModel

import lmc_core as lmc
from lmc_core.cli import METHODS, load_checkpoint, load_data, main, save_checkpoint

F32 = 1e-5
LETTERS = "abcdefghijklmnopqrstuv"  # 22 characters + [UNK]: the tiny GPT-2's 23 tokens
VIT_ARGS = {"img_size": 8, "patch_size": 4, "in_chans": 3, "num_classes": 5, "embed_dim": 24, "depth": 2,
            "num_heads": 2, "mlp_ratio": 2.0}


@pytest.fixture(scope="module")
def gpt2_dirs(tmp_path_factory):
    """Two tiny GPT-2s saved with save_pretrained, a character tokenizer beside each, a text."""
    root = tmp_path_factory.mktemp("gpt2")
    vocab = {c: i for i, c in enumerate(LETTERS)} | {"[UNK]": len(LETTERS)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    for seed, name in ((0, "a"), (1, "b")):
        make_gpt2(seed=seed).save_pretrained(root / name)
        tokenizer.save(str(root / name / "tokenizer.json"))
    text = root / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog and keeps running " * 6)
    return root


@pytest.fixture(scope="module")
def vit_dirs(tmp_path_factory):
    """Two tiny ViTs in the timm checkpoint format, and an image folder of three classes."""
    root = tmp_path_factory.mktemp("vit")
    for seed, name in ((0, "a"), (1, "b")):
        save_checkpoint(make_vit(seed=seed), root / name, vit_config={"architecture": "vit", "model_args": VIT_ARGS})
    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "emu"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / label / f"{i}.png")
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_option(capsys):
    expected = {
        "align": ["--method", "--out", "--data", "--tokenizer", "--block-size", "--mean", "--std", "--batch-size",
                  "--device", "--residual", "--iterations", "--epochs", "--steps-per-epoch", "--lr", "--seed",
                  *METHODS],
        "barrier": ["--data", "--lambdas", "--space", "--json", "--tokenizer", "--batch-size", "--device"],
    }
    for command, options in expected.items():
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert [o for o in options if o not in text] == []


def test_gpt2_align_then_barrier(gpt2_dirs, tmp_path, capsys):
    """`lmc align` writes an ordinary GPT-2 with B's function; `lmc barrier --space canonical` on
    (A, aligned B) equals the barrier of the in-memory alignment."""
    a_dir, b_dir, text, out = gpt2_dirs / "a", gpt2_dirs / "b", gpt2_dirs / "text.txt", tmp_path / "aligned"
    code, stdout, _ = _run(capsys, "align", a_dir, b_dir, "--out", out, "--iterations", 3)
    assert code == 0 and json.loads(stdout)["method"] == "weight_matching"
    assert {"config.json", "model.safetensors", "tokenizer.json", "symmetry.safetensors",
            "alignment.json"} <= {p.name for p in out.iterdir()}
    b, aligned = GPT2LMHeadModel.from_pretrained(b_dir).eval(), GPT2LMHeadModel.from_pretrained(out).eval()
    ids = torch.randint(0, 23, (3, 10), generator=torch.Generator().manual_seed(0))
    assert max_dev(raw_logits(aligned, ids), raw_logits(b, ids)) < F32

    code, stdout, _ = _run(capsys, "barrier", a_dir, out, "--data", text, "--space", "canonical",
                           "--json", tmp_path / "barrier.json")
    got = json.loads(stdout)
    assert code == 0 and json.loads((tmp_path / "barrier.json").read_text()) == got
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "barrier.json").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    a = GPT2LMHeadModel.from_pretrained(a_dir).eval()
    reference = lmc.align(a, b, "weight_matching", iterations=3, keep_centred=True)
    data = load_data(text, a, a_dir, _namespace())
    want = lmc.barrier(reference.model_a, reference.model_b, data)
    assert max(abs(x - y) for x, y in zip(got["losses"], want.losses, strict=True)) < F32


def test_vit_learned_matching_on_an_image_folder(vit_dirs, tmp_path, capsys):
    a_dir, b_dir, images, out = vit_dirs / "a", vit_dirs / "b", vit_dirs / "images", tmp_path / "aligned"
    code, stdout, _ = _run(capsys, "align", a_dir, b_dir, "--method", "learned_matching", "--data", images,
                           "--epochs", 1, "--iterations", 2, "--batch-size", 4, "--out", out)
    assert code == 0 and len(json.loads(stdout)["history"]["train_loss"]) == 1
    b, aligned = load_checkpoint(b_dir), load_checkpoint(out)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert max_dev(raw_logits(aligned, x), raw_logits(b, x)) < F32
    code, stdout, _ = _run(capsys, "barrier", a_dir, b_dir, "--data", images, "--lambdas", 5)
    got = json.loads(stdout)
    data = load_data(images, b, b_dir, _namespace(batch_size=32))
    assert sum(len(y) for _, y in data) == 12 and code == 0
    assert abs(got["loss_b"] - lmc.barrier(b, b, data, lambdas=2).loss_a) < F32


def _leftovers(folder: Path) -> list[str]:
    """Staging or probe folders a failed command would have left behind."""
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".probe-" in p.name)


def test_bad_input_gives_one_line(gpt2_dirs, vit_dirs, tmp_path, capsys):
    """Every mistake a user can type: one line naming the problem and the fix, a non-zero exit, no
    traceback, and nothing written (no --out, no staging folder)."""
    a, b, text = gpt2_dirs / "a", gpt2_dirs / "b", gpt2_dirs / "text.txt"
    wide = tmp_path / "wide"
    make_gpt2(width=32, seed=3).save_pretrained(wide)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Ça commence à Vérone, où l'été brûle".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    one_class = tmp_path / "one_class"
    shutil.copytree(vit_dirs / "images" / "cat", one_class / "cat")
    broken = tmp_path / "broken_images"
    shutil.copytree(vit_dirs / "images", broken)
    (broken / "dog" / "9.png").write_bytes(b"not a png at all")
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("x")
    out = tmp_path / "o"
    capsys.readouterr()
    cases = [
        (("barrier", tmp_path / "missing", b, "--data", text), 1, "not a checkpoint directory"),
        (("barrier", a, b, "--data", tmp_path / "none.txt"), 1, "no such file"),
        (("align", a, vit_dirs / "a", "--out", out), 1, "one architecture"),
        (("barrier", bert, a, "--data", text), 1, "model_type 'bert' is not supported"),
        (("align", wide, a, "--out", out), 1, "narrower"),  # refused before aligning
        (("align", a, b, "--method", "telepathy", "--out", out), 2, "invalid choice: 'telepathy'"),
        (("barrier", a, wide, "--data", text), 1, "residual width 24 and"),
        (("barrier", wide, wide, "--data", text), 1, "pass --tokenizer"),
        (("barrier", a, b, "--data", latin), 1, "not UTF-8 text (byte 0xc7 at offset 0): convert it first"),
        (("barrier", a, b, "--data", empty), 1, "is empty"),
        (("barrier", vit_dirs / "a", vit_dirs / "b", "--data", text), 1, "image folder"),
        (("barrier", vit_dirs / "a", vit_dirs / "b", "--data", one_class), 1, "one class folder (cat)"),
        (("barrier", vit_dirs / "a", vit_dirs / "b", "--data", broken), 1, "9.png: not a readable image"),
        (("align", a, b, "--method", "learned_matching", "--out", out), 1, "pass --data"),
        (("barrier", a, b, "--data", text, "--batch-size", 0), 2, "--batch-size: 0 is not positive"),
        (("barrier", a, b, "--data", text, "--lambdas", 1), 2, "at least 2 points"),
        (("align", a, b, "--out", not_a_folder / "o"), 1, "cannot write in"),
        (("align", a, b, "--out", not_a_folder), 1, "is a file: choose a new --out"),
        (("align", a, b, "--out", gpt2_dirs), 1, "is not an earlier output of this command"),  # a user's folder
        (("align", a, b, "--out", b), 1, "is not an earlier output of this command"),  # a checkpoint
        (("barrier", a, b, "--data", text, "--json", tmp_path / "no" / "such" / "r.json"), 1, "cannot write in"),
    ]
    for argv, status, words in cases:
        code, _, err = _run(capsys, *argv)
        assert (code, err.count("\n")) == (status, 1), (argv, err)
        assert words in err and "Traceback" not in err, (argv, err)
        assert not out.exists() and _leftovers(tmp_path) == [], argv


def test_an_unwritable_out_fails_before_the_work_and_a_failed_save_leaves_nothing(gpt2_dirs, tmp_path, capsys,
                                                                                  monkeypatch):
    """A folder the OS refuses (as a read-only one does; root ignores modes, so the refusal is
    simulated) stops the command before it aligns; a save that fails half-way leaves no --out."""
    import lmc_core.cli as cli
    import lmc_core.outputs as outputs

    a, b, out = gpt2_dirs / "a", gpt2_dirs / "b", tmp_path / "aligned"
    aligned = []
    monkeypatch.setattr(cli, "_pair", lambda args, real=cli._pair: aligned.append(1) or real(args))
    with monkeypatch.context() as m:
        m.setattr(outputs.tempfile, "mkdtemp", lambda **kw: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
        code, _, err = _run(capsys, "align", a, b, "--out", out, "--iterations", 1)
    assert code == 1 and "cannot write in" in err and "Permission denied" in err and not aligned

    def half_then_full(model, stage, **kw):
        (Path(stage) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "save_checkpoint", half_then_full)
    code, _, err = _run(capsys, "align", a, b, "--out", out, "--iterations", 1)
    assert code == 1 and "No space left" in err and err.count("\n") == 1
    assert not out.exists() and _leftovers(tmp_path) == []


def test_align_replaces_its_own_earlier_output_whole(gpt2_dirs, tmp_path, capsys):
    """Only a folder this command wrote (its marker says so) is replaced; the output has the
    umask's permissions, not a temporary folder's private ones."""
    a, b, out = gpt2_dirs / "a", gpt2_dirs / "b", tmp_path / "aligned"
    assert _run(capsys, "align", a, b, "--out", out, "--iterations", 1)[0] == 0
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (out / ".lmc-output").read_text() == "lmc align\n"
    (out / "stray.txt").write_text("from the first run")
    assert _run(capsys, "align", a, b, "--out", out, "--iterations", 2)[0] == 0
    assert not (out / "stray.txt").exists() and json.loads((out / "alignment.json").read_text())["options"][
        "iterations"] == 2
    assert _leftovers(tmp_path) == [] and not [p for p in tmp_path.iterdir() if ".old-" in p.name]


def test_subprocess(gpt2_dirs):
    """`python -m lmc_core` as a user runs it: JSON on stdout, exit status 0."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lmc_core", "barrier", str(gpt2_dirs / "a"), str(gpt2_dirs / "b"),
                           "--data", str(gpt2_dirs / "text.txt"), "--lambdas", "3"],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1], timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["lambdas"] == [0.0, 0.5, 1.0] and result["loss_barrier"] >= 0


def _namespace(**changes):
    from argparse import Namespace

    return Namespace(**({"tokenizer": None, "block_size": None, "batch_size": 32, "device": "cpu", "mean": None,
                         "std": None} | changes))
