"""Profiles: the paper's numbers, overrides, and clear errors for bad overrides."""

import math

import pytest
import torch

from lmc_study.profiles import PROFILES, get_profile, resolve_device


def test_profiles_exist_and_paper_matches_table3():
    assert set(PROFILES) == {"smoke", "cpu", "full", "paper"}
    p = get_profile("paper")
    v, g = p.vit, p.gpt2
    assert (v.depth, v.num_heads, v.embed_dim, v.mlp_dim, v.patch_size) == (6, 8, 256, 512, 4)
    assert (v.epochs, v.batch_size, v.lr, v.weight_decay, v.schedule) == (150, 128, 3e-4, 1e-3, "cosine")
    assert (g.n_layer, g.n_head, g.n_embd, g.n_inner, g.block_size) == (6, 4, 256, 1024, 256)
    assert (g.batch_size, g.lr, g.weight_decay, g.dropout, g.max_epochs) == (32, 3e-4, 0.01, 0.1, 100)
    assert g.tokenizer == "gpt2" and p.align.wm_iterations == 15
    full = get_profile("full")
    assert full.vit.embed_dim == 256 and full.gpt2.n_embd == 256  # paper architectures
    assert math.isclose(full.vit.lr, 3e-4 * math.sqrt(512 / 128))


def test_dotted_and_nested_overrides_with_coercion():
    p = get_profile("smoke", {"vit.epochs": "3", "align": {"lm_epochs": 2.0}, "device": "auto",
                              "experiment.hetero_narrow": [8, "4"], "vit.train_subset": None,
                              "vit.compile": "true", "gpt2.lr": 1})
    assert p.vit.epochs == 3 and p.align.lm_epochs == 2 and p.device == "auto"
    assert p.experiment.hetero_narrow == (8, 4) and p.vit.train_subset is None
    assert p.vit.compile is True and p.gpt2.lr == 1.0 and isinstance(p.gpt2.lr, float)
    assert p.to_dict()["vit"]["epochs"] == 3


@pytest.mark.parametrize("name, overrides, words", [
    ("nope", None, ["'nope'", "smoke", "cpu", "full", "paper"]),
    ("smoke", {"foo.x": 1}, ["'foo'", "vit", "gpt2", "experiment"]),
    ("smoke", {"vit.foo": 1}, ["'foo'", "epochs", "patch_size"]),
    ("smoke", {"colour": 1}, ["'colour'", "device"]),
    ("smoke", {"vit.epochs": "three"}, ["vit.epochs", "int"]),
    ("smoke", {"vit.epochs": 2.5}, ["vit.epochs", "int"]),
    ("smoke", {"vit.epochs": True}, ["vit.epochs"]),
    ("smoke", {"vit.compile": 2}, ["vit.compile", "bool"]),
    ("smoke", {"vit.schedule": "step"}, ["cosine", "onecycle"]),
    ("smoke", {"gpt2.tokenizer": "bpe"}, ["gpt2", "bpe-N"]),
    ("smoke", {"device": "tpu"}, ["cpu", "cuda", "auto"]),
    ("smoke", {"vit.num_heads": 5}, ["divisible"]),
])
def test_bad_overrides_name_the_problem(name, overrides, words):
    with pytest.raises(ValueError) as err:
        get_profile(name, overrides)
    for word in words:
        assert word in str(err.value)


def test_resolve_device():
    assert resolve_device(get_profile("smoke")) == torch.device("cpu")
    auto = resolve_device(get_profile("smoke", {"device": "auto"}))
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
