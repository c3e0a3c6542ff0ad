"""The barrier engine: how the points of a path or a simplex are evaluated.

`lmc_core.interpolation` says which points (a λ grid, a simplex grid) and what a barrier is; this
module evaluates the models at those points. How the E points are evaluated is the engine's
strategy (`STRATEGIES`), picked from the device unless the caller names one:

- "ensemble" (CUDA, or whenever `max_ensemble` is given): every point becomes a member of one
  ensemble of canonical parameters with a leading axis E (raw points are canonicalised one by
  one), and `canonical_forward` evaluates the members in one pass per batch, in chunks sized
  from the free memory. On a GPU this fills the device that a small model alone leaves idle.
- "loop" (CPU): one point at a time. Raw points run the model's own forward (one working copy,
  its weights overwritten in place at each λ: no deep copy, no canonicalisation); canonical
  points run `canonical_forward` one member at a time. A CPU has no launch overhead for batching
  to hide, and one member's activations stay in cache: on 2 cores a member costs about two thirds
  of what it costs inside an 11-member ensemble (`bench/barrier.py` measures both).

Both give the same numbers to float rounding (the test suite checks 1e-6).

Attention runs on exact low-rank factors of the circuits whenever they exist
(`canonical.factor_circuits`): a raw model's QK and OV circuits have rank head_dim, a mix of M
aligned models rank M · head_dim, against d + 1 for the dense circuits. That makes canonical
attention cost about what M heads of the original cost (H/M times less than dense for 2
models). Circuits of higher rank (semi-permutations, soft matching) fall back to dense.

Every combination is a lerp, lerp(s, e, t) = s + t (e − s) (for t ≥ ½: e − (1 − t)(e − s),
as `torch.lerp`), which is exact at t = 0 and t = 1 and when s = e. So a path's ends are the
models bit for bit, and a model interpolated with itself is itself. Identical points are
evaluated once and share that evaluation (`_distinct_points`): a batched forward need not round
every ensemble member the same way (SIMD kernels differ by CPU and by member offset), so
equality of the losses must not rest on it. A model joined with itself therefore has a barrier
of exactly 0 on every CPU and GPU.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .adapters import canonicalize
from .canonical import (
    FACTOR_MAX_FILL,
    CanonicalConfig,
    CanonicalTransformer,
    canonical_forward,
    check_compatible,
    factor_circuits,
)
from .metrics import autocast_context, loss_and_correct, model_logits
from .progress import progress_bar

Batch = tuple[Tensor, Tensor | None]
Data = Batch | Iterable[Batch]
CPU_BUDGET_BYTES = 2 * 2**30  # activations of one ensemble chunk on CPU
STRATEGIES = ("auto", "ensemble", "loop")
CUDA_BUDGET_FRACTION = 0.5  # of the free GPU memory


# -- combining models ---------------------------------------------------------------------------

def lerp(start: float, end: float, weight: float) -> float:
    """torch.lerp on Python floats: start + w (end − start), or end − (1 − w)(end − start) for
    w ≥ ½. Exact at w = 0 (start), w = 1 (end) and when start == end."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def check_raw(a: nn.Module, b: nn.Module) -> None:
    """Raise a ValueError naming the first difference between two raw models' state dicts."""
    if type(a) is not type(b):
        raise ValueError(f"models have different classes: {type(a).__name__} vs {type(b).__name__}")
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        if key not in sb:
            raise ValueError(f"state dicts differ: {key!r} is in model A but not in model B")
        if sa[key].shape != sb[key].shape:
            raise ValueError(f"state dicts differ at {key!r}: shape {tuple(sa[key].shape)} vs {tuple(sb[key].shape)}")
        if sa[key].dtype != sb[key].dtype:
            raise ValueError(f"state dicts differ at {key!r}: dtype {sa[key].dtype} vs {sb[key].dtype}")
    for key in sb:
        if key not in sa:
            raise ValueError(f"state dicts differ: {key!r} is in model B but not in model A")


@torch.no_grad()
def combine_into(target: Mapping[str, Tensor], states: Sequence[Mapping[str, Tensor]], chain: Sequence[float]) -> None:
    """In place: every floating tensor of `target` <- the stick-breaking combination

        v = θ_{M−1};  v <- lerp(v, θ_m, t_m) for m = M−2, …, 0

    (for M = 2: lerp(θ_B, θ_A, λ)). Non-floating entries are left as they are (model A's)."""
    for key, out in target.items():
        if not out.is_floating_point():
            continue
        value = states[-1][key]
        for m in range(len(states) - 2, -1, -1):
            value = torch.lerp(value, states[m][key].to(value.device), chain[m])
        out.copy_(value)


def stick_breaking(counts: Sequence[int]) -> list[float]:
    """Stick-breaking weights t_m = k_m / (k_m + … + k_{M−1}) (0 where that sum is 0), so that
    the lerp chain of `combine_into` gives Σ_m (k_m / Σk) θ_m, exactly θ_m at a corner."""
    suffix = list(itertools.accumulate(reversed(counts)))[::-1]
    return [k / s if s else 0.0 for k, s in zip(counts[:-1], suffix[:-1], strict=True)]


def lerp_chain(values: Sequence[float], chain: Sequence[float]) -> float:
    """The scalar version of `combine_into`: Σ_m w_m v_m, exact at corners and for equal v."""
    out = values[-1]
    for m in range(len(values) - 2, -1, -1):
        out = lerp(out, values[m], chain[m])
    return out


def _stack(models: Sequence[CanonicalTransformer]) -> tuple[CanonicalConfig, dict[str, Tensor]]:
    """One ensemble: every canonical parameter stacked along a new leading axis."""
    first = models[0]
    for i, other in enumerate(models[1:], start=1):
        check_compatible(first, other, what=f"models 0 and {i}")
    every = [m.params() for m in models]
    params = {k: torch.stack([p[k].detach().to(v) for p in every]) for k, v in every[0].items()}
    return first.config, params


@torch.no_grad()
def _ensemble_params(
    models: Sequence[nn.Module], chains: Sequence[Sequence[float]], *, factor: bool = True
) -> tuple[CanonicalConfig, dict[str, Tensor], str]:
    """Canonical parameters of the combinations `chains` of `models`, stacked: (config, params, space).

    All raw: combine raw parameters, canonicalise each point ("raw", vanilla). Otherwise combine
    canonical parameters, all points at once ("canonical"). With `factor`, the circuits' exact
    low-rank factors are added where they exist and pay (`factor_circuits`)."""
    if not any(isinstance(m, CanonicalTransformer) for m in models):
        for m in models[1:]:
            check_raw(models[0], m)
        work = copy.deepcopy(models[0])
        target, states = work.state_dict(), [m.state_dict() for m in models]
        params: dict[str, Tensor] = {}
        for e, chain in enumerate(chains):  # one canonical point at a time, into the stack
            combine_into(target, states, chain)
            point = canonicalize(work)
            for name, value in point.params().items():
                if e == 0:
                    params[name] = value.new_empty((len(chains), *value.shape))
                params[name][e] = value
        # Each point is a raw model: its circuits have rank head_dim.
        factors = factor_circuits(params, _head_dim(point.config)) if factor else None
        return point.config, params | (factors or {}), "raw"
    canon = [canonicalize(m) for m in models]
    for i, other in enumerate(canon[1:], start=1):
        check_compatible(canon[0], other, what=f"models 0 and {i}")
    every = [m.params() for m in canon]
    first = every[0]["qk"]
    weights = torch.tensor(chains, dtype=first.dtype, device=first.device)  # (E, M−1)
    params = {}
    for name, reference in every[0].items():
        values = [p[name].detach().to(reference) for p in every]
        shape = (-1,) + (1,) * values[0].dim()
        out = values[-1].expand(weights.shape[0], *values[-1].shape)
        for m in range(len(models) - 2, -1, -1):
            out = torch.lerp(out, values[m], weights[:, m].reshape(shape))
        params[name] = out.contiguous()
    factors = _mixed_factors(_stack(canon)[1], chains, canon[0].config) if factor else None
    return canon[0].config, params | (factors or {}), "canonical"


def _same_model(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical parameters on the same device (canonical ones when either model is
    canonical). Models on two devices count as different: no copy just to compare."""
    if a is b:
        return True
    if isinstance(a, CanonicalTransformer) or isinstance(b, CanonicalTransformer):
        ca, cb = canonicalize(a), canonicalize(b)
        pa, pb = ca.params(), cb.params()
        return ca.config == cb.config and all(_equal(v, pb[k]) for k, v in pa.items())
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(_equal(v, sb[k]) for k, v in sa.items())


def _equal(x: Tensor, y: Tensor) -> bool:
    return x.device == y.device and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def _distinct_points(models: Sequence[nn.Module], chains: Sequence[Sequence[float]]
                     ) -> tuple[list[nn.Module], list[list[float]], list[int]]:
    """(models, chains, index): the distinct points of the combinations, and for every requested
    point the position of its evaluation. All models identical: one point, the model itself (every
    lerp of equal tensors is that tensor), so its path is flat by construction. Otherwise equal
    chains (a λ listed twice) share one point."""
    if all(_same_model(models[0], m) for m in models[1:]):
        return [models[0]], [[]], [0] * len(chains)
    first: dict[tuple[float, ...], int] = {}
    for chain in chains:
        first.setdefault(tuple(chain), len(first))
    return list(models), [list(c) for c in first], [first[tuple(c)] for c in chains]


def pick_strategy(strategy: str, device: torch.device | str, max_ensemble: int | None = None) -> str:
    """"ensemble" or "loop" for `strategy` ("auto": the ensemble on an accelerator or when a chunk
    size `max_ensemble` is given, the loop on CPU; see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}")
    if strategy != "auto":
        return strategy
    return "ensemble" if max_ensemble is not None or torch.device(device).type != "cpu" else "loop"


# Finding the factors runs in float64 on small batched matrices (Cholesky QR): on CPU each of its
# multiply-adds costs about this many of the forward's float32 ones (measured on 2 cores:
# factoring a 6-layer, 8-head, 256-wide ViT takes about 0.19 s, its forward ~0.3 s per 64 images).
FACTORING_COST_RATIO = 4.0


def _factors_pay(config: CanonicalConfig, num_models: int, batches: Sequence[Batch], points: int) -> bool:
    """Whether factored attention saves more work over `points` points and `batches` than finding
    the factors of `num_models` models costs (a multiply-add count; `factor_circuits`).

    Per token, head and layer, dense attention costs 2 (d+1)² + 2 T (d+1) multiply-adds (x̃ QK,
    the output map, scores and values over T keys) and factored attention of rank R = M · head_dim
    costs 4 (d+1) R + 2 T R. Finding one model's factors costs about 2 circuits × (5 (d+1)² r +
    8 (d+1) r²) per head and layer with r = head_dim, weighted by FACTORING_COST_RATIO. On an
    accelerator factoring is cheap next to the data, and the ensemble always factors."""
    size, rank = config.width + 1, _head_dim(config)
    mixed = num_models * rank
    heads = config.depth * config.num_heads
    saved = 0.0
    for inputs, _ in batches:
        T = (config.img_size // config.patch_size) ** 2 + config.num_prefix if config.task == "image" \
            else inputs.shape[1]
        per_token = 2 * size**2 + 2 * T * size - (4 * size * mixed + 2 * T * mixed)
        saved += points * inputs.shape[0] * T * heads * per_token
    cost = FACTORING_COST_RATIO * num_models * heads * 2 * (5 * size**2 * rank + 8 * size * rank**2)
    return saved > cost


def points_metrics(models: Sequence[nn.Module], chains: Sequence[Sequence[float]], data: Data, *,
                    device: torch.device, max_ensemble: int | None, autocast: bool | None, progress: bool,
                    strategy: str = "auto") -> tuple[list[float], list[float], str]:
    """(losses, accuracies, space) at the combinations `chains` of `models`, one per chain."""
    space = "raw" if not any(isinstance(m, CanonicalTransformer) for m in models) else "canonical"
    strategy = pick_strategy(strategy, device, max_ensemble)
    distinct, unique_chains, index = _distinct_points(models, chains)
    if strategy == "ensemble":
        config, params, _ = _ensemble_params(distinct, unique_chains)
        losses, accs = ensemble_metrics(config, params, data, device=device, max_ensemble=max_ensemble,
                                         autocast=autocast, progress=progress)
    elif space == "raw":
        losses, accs = _raw_loop_metrics(distinct, unique_chains, data, device=device, autocast=autocast,
                                         progress=progress)
    else:  # canonical points one at a time; factored circuits only when finding them pays
        batches = _materialize(data)
        factor = _factors_pay(canonicalize(distinct[0]).config, len(distinct), batches, len(unique_chains))
        config, params, _ = _ensemble_params(distinct, unique_chains, factor=factor)
        losses, accs = ensemble_metrics(config, params, batches, device=device, max_ensemble=1,
                                         autocast=autocast, progress=progress)
    return [losses[i] for i in index], [accs[i] for i in index], space


def _materialize(data: Data) -> list[Batch]:
    """The batches of `data` as a list (a generator can be read only once)."""
    batches = list(as_batches(data))
    if not batches:
        raise ValueError("no data: `data` yielded no batches")
    return batches


def _head_dim(config: CanonicalConfig) -> int:
    return config.width // config.num_heads


def _chain_weights(chains: Sequence[Sequence[float]], num_models: int) -> Tensor:
    """(E, M) explicit weights of the stick-breaking chains: w_m = t_m Π_{j<m} (1 − t_j), and the
    last model takes what is left."""
    weights = torch.zeros(len(chains), num_models, dtype=torch.float64)
    for e, chain in enumerate(chains):
        rest = 1.0
        for m, t in enumerate(chain):
            weights[e, m] = rest * t
            rest *= 1.0 - t
        weights[e, -1] = rest
    return weights


def _mixed_factors(stacked: Mapping[str, Tensor], chains: Sequence[Sequence[float]], config: CanonicalConfig
                   ) -> dict[str, Tensor] | None:
    """Factors of the mixed circuits Σ_m w_m C_m from each model's own (`factor_circuits` on the
    M models, rank head_dim each): L = [w_1 L_1, …, w_M L_M], R = [R_1, …, R_M], rank M·head_dim.
    None when the models are all equal (the dense path keeps a model mixed with itself exactly
    itself), when that rank would not pay, or when a model's circuits are not of rank head_dim
    (after a semi-permutation or soft matching, say)."""
    num_models, size = stacked["qk"].shape[0], stacked["qk"].shape[-1]
    if all(torch.equal(value[m], value[0]) for value in stacked.values() for m in range(1, num_models)):
        return None
    rank = _head_dim(config)
    if num_models * rank >= FACTOR_MAX_FILL * size:
        return None
    own = factor_circuits(stacked, rank)
    if own is None:
        return None
    weights = _chain_weights(chains, num_models).to(stacked["qk"])  # (E, M)
    out = {}
    for name, value in own.items():  # (M, L, H, rows, rank)
        M, L, H, rows, r = value.shape
        if name.endswith("_left"):  # member e: [w_e1 L_1, …, w_eM L_M]
            mixed = torch.einsum("em,mlhar->elhamr", weights, value).reshape(len(chains), L, H, rows, M * r)
        else:  # shared by every member
            mixed = value.permute(1, 2, 3, 0, 4).reshape(L, H, rows, M * r).expand(len(chains), -1, -1, -1, -1)
        out[name] = mixed
    return out


# -- the ensemble engine -------------------------------------------------------------------------

def as_batches(data: Data) -> Iterable[Batch]:
    """One (inputs, targets) pair, or an iterable of them."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        return [data]
    return data


def _auto_chunk(config: CanonicalConfig, inputs: Tensor, device: torch.device) -> int:
    """How many ensemble members fit one forward: the memory budget over an estimate of one
    member's activations, 4 bytes · B · T · (2 H (d+1) [x̃ QK, x̃ per head] + H T [scores]
    + 2 m + 4 d + 2 K_per_token [logits, plus bias]); fp32 because the fp32 biases promote
    the stream under autocast. Language models also reserve the loss's fp32 logits copy."""
    c = config
    B = inputs.shape[0]
    if c.task == "image":
        T = (c.img_size // c.patch_size) ** 2 + c.num_prefix
        per_token_out, loss_bytes = c.num_outputs / T, 0
    else:
        T = inputs.shape[1]
        per_token_out, loss_bytes = c.num_outputs, 8 * B * T * c.num_outputs  # fp32 copy + log-softmax
    per_token = 2 * c.num_heads * (c.width + 1) + c.num_heads * T + 2 * c.mlp_width + 4 * c.width + 2 * per_token_out
    member = 4 * B * T * per_token
    if device.type == "cuda":
        budget = CUDA_BUDGET_FRACTION * torch.cuda.mem_get_info(device)[0]
    else:
        budget = CPU_BUDGET_BYTES
    return max(1, int((budget - loss_bytes) // member))


@torch.no_grad()
def ensemble_metrics(
    config: CanonicalConfig,
    params: Mapping[str, Tensor],
    data: Data,
    *,
    device: torch.device,
    max_ensemble: int | None,
    autocast: bool | None,
    progress: bool,
) -> tuple[list[float], list[float]]:
    """Mean loss and accuracy of each ensemble member over all items of `data`.

    Per batch: one `canonical_forward` per chunk of ≤ max_ensemble members (bf16 autocast on CUDA
    unless autocast=False), summed fp32 cross-entropy per member accumulated in fp64 on the
    device; the only host transfer is the final `.tolist()`."""
    params = {k: v.to(device) for k, v in params.items()}
    E = params["qk"].shape[0]
    use_autocast = device.type == "cuda" if autocast is None else autocast
    loss_sum = torch.zeros(E, dtype=torch.float64, device=device)
    correct_sum = torch.zeros(E, dtype=torch.float64, device=device)
    count = 0
    chunks: dict[tuple[int, ...], int] = {}
    for inputs, targets in progress_bar(as_batches(data), desc="barrier", unit="batch", disable=not progress):
        inputs = inputs.to(device, non_blocking=True)
        targets = None if targets is None else targets.to(device, non_blocking=True)
        shape = tuple(inputs.shape)
        if shape not in chunks:
            chunks[shape] = max_ensemble or _auto_chunk(config, inputs, device)
        size = chunks[shape]
        n = 0
        for start in range(0, E, size):
            part = {k: v[start:start + size] for k, v in params.items()}
            with autocast_context(device, use_autocast):
                logits = canonical_forward(part, config, inputs)
            losses, corrects = [], []
            for member in logits:
                loss, correct, n = loss_and_correct(member, inputs, targets)
                losses.append(loss)
                corrects.append(correct)
            stop = start + len(losses)
            loss_sum[start:stop] += torch.stack(losses).double()
            correct_sum[start:stop] += torch.stack(corrects).double()
            del logits
        count += n
    if count == 0:
        raise ValueError("no data: `data` yielded no batches")
    return (loss_sum / count).tolist(), (correct_sum / count).tolist()


@torch.no_grad()
def _raw_loop_metrics(models: Sequence[nn.Module], chains: Sequence[Sequence[float]], data: Data, *,
                      device: torch.device, autocast: bool | None, progress: bool
                      ) -> tuple[list[float], list[float]]:
    """Mean loss and accuracy at each combination `chains` of the raw `models`, one point at a
    time: a single working copy of model A gets each point's weights in place (`combine_into`,
    the same lerp chain as the ensemble) and runs its own forward over every batch. `data` is read
    once and kept (a generator could not be replayed for the next point)."""
    for m in models[1:]:
        check_raw(models[0], m)
    batches = _materialize(data)
    work = copy.deepcopy(models[0]).to(device).eval()
    target, states = work.state_dict(), [m.state_dict() for m in models]
    use_autocast = device.type == "cuda" if autocast is None else autocast
    dtype = next(work.parameters()).dtype  # images in the model's precision, as the ensemble casts them
    losses, accs = [], []
    with progress_bar(total=len(chains) * len(batches), desc="barrier", unit="batch",
                      disable=not progress) as bar:
        for chain in chains:
            combine_into(target, states, chain)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct_sum = torch.zeros((), dtype=torch.float64, device=device)
            count = 0
            for inputs, targets in batches:
                inputs = inputs.to(device, dtype if inputs.is_floating_point() else None, non_blocking=True)
                targets = None if targets is None else targets.to(device, non_blocking=True)
                with autocast_context(device, use_autocast):
                    logits = model_logits(work, inputs)
                loss, correct, n = loss_and_correct(logits, inputs, targets)
                loss_sum += loss.double()
                correct_sum += correct.double()
                count += n
                bar.update()
            losses.append(loss_sum / count)
            accs.append(correct_sum / count)
    return torch.stack(losses).tolist(), torch.stack(accs).tolist()


def device_of(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


def evaluate_ensemble(
    models: Sequence[nn.Module],
    data: Data,
    *,
    device: torch.device | str | None = None,
    max_ensemble: int | None = None,
    autocast: bool | None = None,
    progress: bool = False,
    strategy: str = "auto",
) -> tuple[list[float], list[float]]:
    """(losses, accuracies) of several models (raw or canonical, one architecture); accuracy as a
    fraction, loss the mean cross-entropy. `strategy` as for `barrier`: on the loop, models run one
    at a time, through their own forward when all are raw (canonicalised when any is canonical);
    on the ensemble, all of them run as one canonical ensemble pass per batch."""
    if not models:
        raise ValueError("evaluate_ensemble: no models")
    device = device_of(models[0], device)
    strategy = pick_strategy(strategy, device, max_ensemble)
    if strategy == "ensemble":
        config, params = _stack([canonicalize(m) for m in models])
        params |= factor_circuits(params, _head_dim(config)) or {}
        return ensemble_metrics(config, params, data, device=device, max_ensemble=max_ensemble,
                                 autocast=autocast, progress=progress)
    batches = _materialize(data)
    if not any(isinstance(m, CanonicalTransformer) for m in models):
        out = [_raw_loop_metrics([m], [[]], batches, device=device, autocast=autocast, progress=progress)
               for m in models]
        return [loss for (loss,), _ in out], [acc for _, (acc,) in out]
    config, params = _stack([canonicalize(m) for m in models])
    if _factors_pay(config, 1, batches, 1):  # each model's own factors serve that model alone
        params |= factor_circuits(params, _head_dim(config)) or {}
    return ensemble_metrics(config, params, batches, device=device, max_ensemble=1, autocast=autocast,
                             progress=progress)
