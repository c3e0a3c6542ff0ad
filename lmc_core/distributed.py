"""Several processes, one run: training and learned matching under `torchrun`.

    torchrun --nproc_per_node 4 -m lmc_core align A B --method learned_matching --data FILE --out DIR
    torchrun --nproc_per_node 4 -m lmc_study train gpt2 --profile full --out runs/gpt2-seed0   # the study

Every process reads the same batches (the data are small and resident) and takes its own
contiguous slice of each one (`shard`): the batch size, the number of steps, the schedule and
the augmentation stay those of one process. Each process weights its loss by its share of the
batch, n_r / n, times the number of processes, so that the mean of the gradients over the
processes, which DistributedDataParallel takes (and `average_gradients` for the latents of
learned matching, which are not one module's forward), is the full batch's gradient. One
process therefore follows the same trajectory as N, up to the order of floating-point sums.
Dropout draws from a stream per process (`wrap`), so the masks of different slices are
independent, as they are within one process.

NCCL on GPUs (one per process, `LOCAL_RANK`), gloo on CPUs. Without torchrun (no `WORLD_SIZE`
above 1 in the environment) every helper is the identity and nothing is initialised.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Only the main process writes files and shows progress."""
    return rank() == 0


def setup(backend: str | None = None) -> torch.device:
    """Join the process group torchrun describes (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, ...)
    and return this process's device: `cuda:LOCAL_RANK` with NCCL when there are GPUs, else the
    CPU with gloo. Without torchrun: the default device, nothing initialised."""
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(inputs: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor | None, float]:
    """This process's contiguous slice of a batch and its loss weight, world · n_r / n (see the
    module docstring); the whole batch and weight 1 in a single process."""
    n, world = inputs.shape[0], world_size()
    if world == 1 or n < world:
        # A batch too small to share (an epoch's last, say): every process takes all of it with
        # weight 1, so the mean of the processes' gradients is still the batch's gradient.
        return inputs, targets, 1.0
    bounds = [n * r // world for r in range(world + 1)]
    part = slice(bounds[rank()], bounds[rank() + 1])
    return inputs[part], None if targets is None else targets[part], world * (part.stop - part.start) / n


def wrap(model: nn.Module, seed: int) -> nn.Module:
    """The model in DistributedDataParallel (its parameters broadcast from the main process)
    with a dropout stream of this process's own; the model itself in a single process."""
    if not active():
        return model
    torch.manual_seed(int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed + rank()))))
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def broadcast(tensors: Iterable[Tensor]) -> None:
    """In place: every process takes the main process's values, so that processes which computed
    their starting point independently (an SVD or a Hungarian tie may differ across GPUs) start
    the same, as DistributedDataParallel does for a module's parameters."""
    if not active():
        return
    for t in tensors:
        dist.broadcast(t.data, src=0)


def average_gradients(parameters: Iterable[Tensor]) -> None:
    """Mean of every gradient over the processes, in place (what DDP does for a module)."""
    if not active():
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)  # a sum: gloo has no average
            p.grad /= world_size()


def mean(value: Tensor | float) -> float:
    """The mean of a scalar over the processes (a logged loss); the value in one process."""
    if not active():
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t) / world_size()
