"""`python -m lmc_study train`: the model train_model makes, saved as a checkpoint `lmc` reads."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import single_thread  # noqa: F401  (autouse fixture: one torch thread)
from tokenizers import Tokenizer

from lmc_core.cli import load_checkpoint
from lmc_study.cli import main
from lmc_study.profiles import get_profile
from lmc_study.train import train_model


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert [o for o in ("--profile", "--set", "--seed", "--out", "--cache", "--quiet") if o not in text] == []


def test_train_command(tmp_path, capsys):
    """`python -m lmc_study train` saves the model train_model makes (same seed, CPU: the same weights), with its
    tokenizer, as a checkpoint the other commands read."""
    tiny = {"device": "cpu", "eval.test_blocks": 8, "gpt2.n_layer": 1, "gpt2.n_head": 2, "gpt2.n_embd": 16,
            "gpt2.n_inner": 32, "gpt2.block_size": 16, "gpt2.train_blocks": 64, "gpt2.val_blocks": 8,
            "gpt2.max_epochs": 1, "gpt2.batch_size": 16}
    sets = [x for key, value in tiny.items() for x in ("--set", f"{key}={json.dumps(value)}")]
    code, stdout, _ = _run(capsys, "train", "gpt2", "--profile", "smoke", *sets, "--seed", 3, "--quiet",
                           "--out", tmp_path / "m")
    assert code == 0 and json.loads(stdout)["epochs_run"] == 1
    saved = load_checkpoint(tmp_path / "m")
    trained = train_model("gpt2", get_profile("smoke", tiny), 3, progress=False)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in saved.state_dict().items())
    assert Tokenizer.from_file(str(tmp_path / "m" / "tokenizer.json")).get_vocab_size() == 2048


def test_train_refuses_bad_input_before_training(tmp_path, capsys, monkeypatch):
    """An unknown --set key, a value of the wrong type, or an --out that cannot be written: one
    line, exit 1, nothing trained and nothing written."""
    import lmc_study.train as train_mod

    trained = []
    monkeypatch.setattr(train_mod, "train_model", lambda *a, **kw: trained.append(1))
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("x")
    cases = [
        (("--set", "vit.epochz=3", "--out", tmp_path / "m"), "unknown field 'epochz' in section 'vit'"),
        (("--set", "vit.epochs=many", "--out", tmp_path / "m"), "vit.epochs"),
        (("--set", "vit.epochs", "--out", tmp_path / "m"), "expected KEY=VALUE"),
        (("--out", not_a_folder / "m"), "cannot write in"),
    ]
    for argv, words in cases:
        code, _, err = _run(capsys, "train", "vit", "--profile", "smoke", *argv)
        assert (code, err.count("\n")) == (1, 1) and words in err and "Traceback" not in err, (argv, err)
    assert trained == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
