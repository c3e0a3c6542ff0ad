"""Trivial baselines for the endpoint tables: a barrier between two models says little if the
models lose to a linear classifier or a bigram table.

- images: multinomial logistic regression on the normalised pixels, full-batch L-BFGS in
  float64, fit on the ViT's own training images, its L2 strength chosen on the validation
  images the ViT's training holds out (``train.image_splits``);
- text: count-based unigram and bigram models with add-k smoothing, counted on the GPT-2's own
  training blocks, k chosen on the text validation split, scored as the mean next-token
  cross-entropy on the chapter's test blocks (the targets a GPT-2 predicts: positions 1..T-1).

    rows = baselines("vit", profile)   # [{"model": "logistic regression", "test_loss": ..., ...}]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .profiles import Profile

L2_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
K_GRID = (1e-3, 1e-2, 0.1, 1.0)


def _fit_softmax(x: Tensor, y: Tensor, num_classes: int, l2: float, max_iter: int,
                 start: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Weights and bias minimising mean cross-entropy + l2/2 · ‖W‖² (full-batch L-BFGS from
    `start`, default zeros)."""
    w0, b0 = start or (torch.zeros(x.shape[1], num_classes, dtype=x.dtype), torch.zeros(num_classes, dtype=x.dtype))
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _score(x: Tensor, y: Tensor, w: Tensor, b: Tensor) -> tuple[float, float]:
    logits = x @ w + b
    return (float(torch.nn.functional.cross_entropy(logits, y)),
            float((logits.argmax(-1) == y).double().mean()))


def logistic_regression(x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor, x_test: Tensor | None,
                        y_test: Tensor | None, num_classes: int, *, l2_grid: Sequence[float] = L2_GRID,
                        max_iter: int = 200) -> dict[str, Any]:
    """Multinomial logistic regression fit on the training rows, its L2 strength chosen by the
    lowest loss on the validation rows, scored on the test rows (None: not scored)."""
    x_train, x_val = (x.double().flatten(1) for x in (x_train, x_val))
    # Strongest penalty first, each fit starting from the previous solution (a warm start: the
    # problems are convex, so only the time to converge changes).
    fits: list[tuple[Tensor, Tensor]] = [None] * len(l2_grid)  # type: ignore[list-item]
    start = None
    for i in sorted(range(len(l2_grid)), key=lambda i: -l2_grid[i]):
        fits[i] = start = _fit_softmax(x_train, y_train, num_classes, l2_grid[i], max_iter, start)
    val_losses = [_score(x_val, y_val, w, b)[0] for w, b in fits]
    best = min(range(len(l2_grid)), key=val_losses.__getitem__)
    loss, acc = _score(x_test.double().flatten(1), y_test, *fits[best]) if x_test is not None else (None, None)
    return {"model": "logistic regression", "test_loss": loss, "test_accuracy": acc,
            "hyperparameter": "l2", "chosen": l2_grid[best], "grid": list(l2_grid), "val_losses": val_losses,
            "train_rows": len(x_train), "val_rows": len(x_val), "test_rows": 0 if x_test is None else len(x_test)}


def _pairs(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """(context, target) of every next-token prediction inside the blocks."""
    return blocks[:, :-1].reshape(-1), blocks[:, 1:].reshape(-1)


def _ngram_losses(train: Tensor, eval_blocks: Tensor, vocab_size: int, order: int,
                  k_grid: Sequence[float]) -> list[float]:
    """Mean cross-entropy of the add-k model of `order` (1 or 2) on `eval_blocks`, per k."""
    ctx, tgt = _pairs(train)
    ectx, etgt = _pairs(eval_blocks)
    if order == 1:
        counts = torch.bincount(tgt, minlength=vocab_size).double()
        c_pair, c_ctx = counts[etgt], torch.full_like(counts[etgt], float(len(tgt)))
    elif order == 2:
        # sparse counts (a dense V×V table does not fit for the 50k GPT-2 vocabulary)
        keys, pair_counts = torch.unique(ctx * vocab_size + tgt, return_counts=True)
        ekeys = ectx * vocab_size + etgt
        pos = torch.searchsorted(keys, ekeys).clamp(max=len(keys) - 1)
        c_pair = torch.where(keys[pos] == ekeys, pair_counts[pos], 0).double()
        c_ctx = torch.bincount(ctx, minlength=vocab_size).double()[ectx]
    else:
        raise ValueError(f"order must be 1 (unigram) or 2 (bigram), got {order}")
    return [float(-(torch.log(c_pair + k) - torch.log(c_ctx + k * vocab_size)).mean()) for k in k_grid]


def ngram(train: Tensor, val: Tensor, test: Tensor | None, vocab_size: int, order: int = 2,
          k_grid: Sequence[float] = K_GRID) -> dict[str, Any]:
    """An add-k unigram (order 1) or bigram (order 2) model counted on the `train` blocks, k chosen
    by the lowest mean next-token cross-entropy on the `val` blocks, scored on the `test` blocks."""
    if any(k <= 0 for k in k_grid):
        raise ValueError(f"add-k smoothing needs k > 0, got {list(k_grid)}")
    val_losses = _ngram_losses(train, val, vocab_size, order, k_grid)
    best = min(range(len(k_grid)), key=val_losses.__getitem__)
    (loss,) = _ngram_losses(train, test, vocab_size, order, [k_grid[best]]) if test is not None else (None,)
    return {"model": "unigram" if order == 1 else "bigram", "test_loss": loss, "test_accuracy": None,
            "hyperparameter": "k", "chosen": k_grid[best], "grid": list(k_grid), "val_losses": val_losses,
            "train_rows": len(train), "val_rows": len(val), "test_rows": 0 if test is None else len(test)}


def baselines(kind: str, profile: Profile, *, with_test: bool = True) -> list[dict[str, Any]]:
    """The trivial baselines of one model kind on the profile's own splits (see the module doc).
    ``with_test=False``: chosen and measured on validation only, the test split never read."""
    from .data import load_token_dataset
    from .data.splits import image_splits, seeded_subset
    from .experiments import test_blocks

    if kind == "vit":
        train, val, test = image_splits(profile, with_test=with_test)

        def pixels(images: Tensor) -> Tensor:
            mean = torch.tensor(train.mean, dtype=torch.float64).view(1, -1, 1, 1)
            std = torch.tensor(train.std, dtype=torch.float64).view(1, -1, 1, 1)
            return ((images.double() / 255 - mean) / std).flatten(1)

        return [logistic_regression(pixels(train.images), train.labels, pixels(val.images), val.labels,
                                    pixels(test.images) if with_test else None, test.labels if with_test else None,
                                    train.num_classes)]
    if kind == "gpt2":
        r = profile.gpt2
        tokens = load_token_dataset(r.corpus, r.tokenizer)
        train = seeded_subset(tokens.blocks("train", r.block_size), r.train_blocks)
        val = seeded_subset(tokens.blocks("val", r.block_size), r.val_blocks)
        test = test_blocks(tokens, profile) if with_test else None
        return [ngram(train, val, test, tokens.vocab_size, order) for order in (1, 2)]
    raise ValueError(f"unknown model kind {kind!r}; valid: vit, gpt2")



def _label(b: dict[str, Any]) -> str:
    return f"{b['model']} ({b['hyperparameter']} = {b['chosen']:g}, chosen on validation)"


def endpoint_rows(rows: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trained model (the ends of the vanilla rows) and one per baseline: test loss
    and, for images, accuracy in percent (the book's convention)."""
    seen: dict[int, tuple[float, float | None]] = {}
    for r in rows:
        if r["method"] == "vanilla":
            a, b = r["models"][:2]
            seen[a], seen[b] = (r["loss_a"], r.get("acc_a")), (r["loss_b"], r.get("acc_b"))
    out = [{"model": f"seed {seed}", "test_loss": loss, "accuracy": None if acc is None else 100 * acc}
           for seed, (loss, acc) in sorted(seen.items())]
    out += [{"model": f"baseline: {_label(b)}", "test_loss": b["test_loss"],
             "accuracy": None if b["test_accuracy"] is None else 100 * b["test_accuracy"]} for b in found]
    return out


def beat_sentence(rows: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]], what: str) -> str:
    """Whether every trained model (`what`: "ViTs", "GPT-2s") has a lower test loss than every
    baseline, generated from the numbers."""
    models = [r for r in endpoint_rows(rows, []) if r["test_loss"] is not None]
    if not models or not found:
        return "No baseline or no endpoint to compare."
    best = min(found, key=lambda b: b["test_loss"])
    losses = [m["test_loss"] for m in models]
    below = sum(loss < best["test_loss"] for loss in losses)
    span = f"{min(losses):.3f}–{max(losses):.3f}" if len(losses) > 1 else f"{losses[0]:.3f}"
    verdict = ("beat" if below == len(models) else "do not all beat" if below else "do not beat")
    return (f"The {len(models)} {what} (test loss {span}) {verdict} the best trivial baseline, the {_label(best)} "
            f"at {best['test_loss']:.3f}: {below} of {len(models)} have a lower test loss"
            + ("." if below == len(models) else
               "; a barrier between endpoints that lose to it says little about the models it is meant to connect."))
