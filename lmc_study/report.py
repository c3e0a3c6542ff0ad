"""What every notebook of the book calls: start a run, save its results, show its tables.

A chapter is a thin notebook::

    run = start_run("03_barriers", profile=profile, dataset=dataset, device=device,
                    overrides=overrides, output_dir=output_dir)
    ...                                   # train, align, measure with run.profile / run.device
    run.save_results(rows)                # results.json beside the executed notebook
    display_table(summarize(rows), ["label", "loss_barrier", "n"])
    print(run.provenance())

``start_run`` checks every argument at once (an unknown profile, dataset or override field is a
ValueError that lists the valid values), so a typo fails in the first cell, not after an hour of
training. ``results.json`` is written atomically (a temporary file moved into place with
``os.replace``): a reader sees the previous file or the new one, never half of one. The tables
of the book are rendered from its ``rows``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmc_core.cache import cache_uses, entries_used

from .profiles import Profile, get_profile, resolve_device
from .stats import format_mean_se, mean_se

# Alignment methods, in the order of the paper's Table 2 (then the soft variant of App. D).
METHODS = (
    "vanilla",
    "canonical_unaligned",
    "activation_matching",
    "weight_matching",
    "learned_matching_permutation",
    "learned_matching",
    "soft",
)
METHOD_LABELS = {
    "vanilla": "Vanilla averaging",
    "canonical_unaligned": "Canonical, unaligned (control)",
    "activation_matching": "Activation matching",
    "weight_matching": "Weight matching",
    "learned_matching_permutation": "Learned matching (permutations only)",
    "learned_matching": "Learned matching (all classes)",
    "soft": "Soft permutations",
}

# Datasets a chapter may name: images (lmc_study.data.load_image_dataset) and text corpora
# (lmc_study.data.load_text_corpus); lmc_study.data's own lists win when they differ.
try:
    from .data import IMAGE_DATASETS, TEXT_CORPORA
except ImportError:  # pragma: no cover - the data module is part of the package
    IMAGE_DATASETS, TEXT_CORPORA = ("fashion_mnist", "cifar10", "cifar100"), ("shakespeare",)
DATASETS = tuple(IMAGE_DATASETS) + tuple(TEXT_CORPORA)

DEVICE_CHOICES = ("auto", "cpu", "cuda")
RESULTS_FILE = "results.json"
RESERVED_KEYS = (
    "notebook", "dataset", "datasets", "profile", "device", "device_type", "commit", "torch",
    "wall_time_s", "created", "overrides", "profile_config", "rows", "environment", "models",
)
REPO_ROOT = Path(__file__).resolve().parent.parent
LAB_RUNS = REPO_ROOT / "book" / "runs" / "lab"  # chapters run by hand: start_run(output_dir=None)


def _valid(what: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid values: {', '.join(choices)}")


def git_commit(root: Path | str = REPO_ROOT) -> str:
    """Short commit of ``root``'s repository, with "-dirty" when the tree differs from it.

    The executed runs under book/runs are outputs, not inputs, and do not make a tree dirty;
    untracked files count only under lmc_core/, lmc_study/, notebooks/ and scripts/. "unknown" outside git.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, text=True,
                              capture_output=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      ":(exclude)book/runs", ":(exclude)book/_build")
        untracked = git("status", "--porcelain", "--untracked-files=all", "--",
                        "lmc_core", "lmc_study", "notebooks", "scripts")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = bool(changed) or any(line.startswith("??") for line in untracked.splitlines())
    return commit + ("-dirty" if dirty else "")


def describe_device(device: torch.device) -> str:
    """"cpu (2 cores)" or the CUDA device's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return f"{device.type} ({cores} core{'s' if cores != 1 else ''})"


def cpu_name() -> str:
    """The processor's model name ("AMD EPYC 9654 96-Core Processor"), or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """What a number depends on besides the code and the seed: torch, the processor, the thread
    count and SIMD kernels torch uses (a CPU's sums round differently with another split), the
    accelerator, and the sha256 of every data file."""
    from .data import data_file_hashes

    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_name(),
                           "threads": torch.get_num_threads(),
                           "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    env["data_sha256"] = data_file_hashes()
    return env


def format_duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: tensors and numpy scalars become numbers, tuples lists, NaN None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()  # numpy scalar
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return _jsonable(obj.tolist())  # numpy array
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {obj!r} ({type(obj).__name__}) in results.json")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory + os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Run:
    """One execution of one notebook: its settings, where it writes, and its provenance."""

    notebook: str
    profile: Profile
    device: torch.device
    output_dir: Path
    dataset: str | None = None
    datasets: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    device_name: str = ""
    commit: str = "unknown"
    torch_version: str = torch.__version__
    started: float = field(default_factory=time.time)
    created: str = ""
    models_before: int = 0  # the process's checkpoint-cache uses before the run started (cache_uses)

    def models_used(self) -> list[dict[str, Any]]:
        """Every trained model this run loaded or stored (checkpoint cache): kind, seed, key and
        the sha256 of its weights."""
        return entries_used(since=self.models_before)

    @property
    def wall_time_s(self) -> float:
        return time.time() - self.started

    @property
    def all_datasets(self) -> list[str]:
        """The main dataset first, then the others, without repeats."""
        names = [self.dataset] if self.dataset else []
        return names + [d for d in self.datasets if d not in names]

    @property
    def dataset_label(self) -> str:
        return ", ".join(self.all_datasets) if self.all_datasets else "none"

    def check_rows(self, rows: Sequence[Mapping[str, Any]],
                   extra_methods: Iterable[str] = ()) -> None:
        valid = METHODS + tuple(extra_methods)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"row {i} is a {type(row).__name__}, not a dict")
            if "method" in row and row["method"] not in valid:
                raise ValueError(f"row {i}: unknown method {row['method']!r}; valid values: "
                                 f"{', '.join(valid)} (pass extra_methods=... for others)")

    def save_results(self, rows: Sequence[Mapping[str, Any]], *,
                     extra_methods: Iterable[str] = (), **extra: Any) -> Path:
        """Write results.json (atomically) in output_dir and return its path.

        ``rows`` are flat dicts, one per measurement, e.g. ``{"method": "weight_matching",
        "models": [0, 1], "loss_barrier": 0.31, "acc_barrier": 0.02, "loss_a": ..., ...}``;
        a row's ``method`` must be one of METHODS or of ``extra_methods``. ``extra`` keyword
        values (statistics, curves) are stored as top-level keys beside the provenance.
        """
        rows = list(rows)
        self.check_rows(rows, extra_methods)
        clash = sorted(set(extra) & set(RESERVED_KEYS))
        if clash:
            raise ValueError(f"extra keys {clash} are reserved; reserved keys: "
                             f"{', '.join(RESERVED_KEYS)}")
        record = {
            "notebook": self.notebook,
            "dataset": self.dataset_label,
            "datasets": self.all_datasets,
            "profile": self.profile.name,
            "device": self.device_name,
            "device_type": self.device.type,
            "commit": self.commit,
            "torch": self.torch_version,
            "wall_time_s": round(self.wall_time_s, 3),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "overrides": self.overrides,
            "profile_config": self.profile.to_dict(),
            "environment": environment(self.device),
            "models": self.models_used(),
            "rows": rows,
            **extra,
        }
        path = self.output_dir / RESULTS_FILE
        atomic_write_text(path, json.dumps(_jsonable(record), indent=1, allow_nan=False) + "\n")
        return path

    def provenance(self) -> str:
        """One line (plain text, valid markdown): dataset, profile, device and threads, commit,
        torch, the models used, wall time so far."""
        over = ""
        if self.overrides:
            over = " (overrides: " + ", ".join(
                f"{k}={v!r}" for k, v in sorted(self.overrides.items())) + ")"
        models = self.models_used()
        used = f", {len(models)} trained model{'s' if len(models) != 1 else ''} (sha256 in results.json)" \
            if models else ""
        return (f"Dataset {self.dataset_label}, profile {self.profile.name}{over}, "
                f"device {self.device_name}, {torch.get_num_threads()} torch threads, commit {self.commit}, "
                f"torch {self.torch_version}{used}, wall time {format_duration(self.wall_time_s)}.")

    def show_provenance(self) -> None:
        """Display the provenance line as markdown (it wraps in the book; print() does not)."""
        from IPython.display import Markdown, display

        display(Markdown(f"*Provenance:* {self.provenance()}"))

    def savefig(self, fig: Any, name: str, *, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``output_dir/<name>.png`` (atomically); return the path.

        The figure stays open, so the notebook still shows it inline."""
        stem = name[:-4] if name.lower().endswith(".png") else name
        if not stem or "/" in stem or "\\" in stem:
            raise ValueError(f"figure name {name!r} must be a plain file name")
        path = self.output_dir / f"{stem}.png"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".png", dir=self.output_dir)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
            os.chmod(tmp, _umask_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def start_run(
    notebook: str,
    *,
    profile: str,
    dataset: str | None = None,
    datasets: Sequence[str] = (),
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
) -> Run:
    """Check the notebook's parameters and set the run up; see the module docstring.

    ``output_dir``: where results.json and the figures go; None (a notebook run by hand, in the
    lab) means book/runs/lab/<profile>/<notebook>/, which git ignores; papermill passes ".".

    ``device="auto"`` keeps the profile's device (the smoke profile runs on the CPU, the others
    on CUDA when there is one); "cpu" or "cuda" override it. ``overrides`` are the profile's
    dotted keys (``{"vit.epochs": 3}``), checked by :func:`lmc_study.profiles.get_profile`.
    """
    if isinstance(datasets, str):
        datasets = (datasets,)
    for name in ([dataset] if dataset is not None else []) + list(datasets):
        _valid("dataset", name, DATASETS)
    _valid("device", device, DEVICE_CHOICES)
    overrides = dict(overrides or {})
    applied = {**overrides, **({"device": device} if device != "auto" else {})}
    prof = get_profile(profile, applied)  # raises ValueError listing the valid values
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.time()
    dev = resolve_device(prof)

    import seaborn as sns
    sns.set_theme(style="whitegrid", context="notebook")

    out = Path(output_dir) if output_dir is not None else LAB_RUNS / prof.name / notebook
    out.mkdir(parents=True, exist_ok=True)
    return Run(
        notebook=notebook,
        profile=prof,
        device=dev,
        output_dir=out,
        dataset=dataset,
        datasets=tuple(datasets),
        overrides=overrides,
        device_name=describe_device(dev),
        commit=git_commit(),
        started=started,
        models_before=cache_uses(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results.json (or the results.json in directory ``path``)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    with open(p, encoding="utf-8") as f:
        record = json.load(f)
    missing = [k for k in ("notebook", "profile", "device", "commit", "rows") if k not in record]
    if missing:
        raise ValueError(f"{p}: not a results file (missing keys: {', '.join(missing)})")
    return record


def _method_order(methods: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(methods))
    return [m for m in METHODS if m in seen] + [m for m in seen if m not in METHODS]


def summarize(rows: Sequence[Mapping[str, Any]], metric: str | Sequence[str] = "loss_barrier",
              *, by: str = "method", digits: int = 2,
              scale: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Group ``rows`` by method (METHODS order, then others) with mean ± s.e. and n.

    Each summary row has ``method``, ``label`` (the method's display name), ``n`` and, per
    metric m: ``m`` (the string "mean ± se"), ``m_mean`` and ``m_se``; with a single metric also
    ``mean`` and ``se``. Rows without the metric (or with None) are left out of its numbers.
    ``scale`` multiplies a metric's values first: ``{"acc_barrier": 100}`` gives the accuracy
    barrier in percentage points, the book's one convention for accuracies.
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if by not in row:
            raise ValueError(f"row without {by!r}: {dict(row)}")
        groups.setdefault(row[by], []).append(row)
    out = []
    for key in (_method_order(groups) if by == "method" else list(groups)):
        group = groups[key]
        s: dict[str, Any] = {by: key, "label": METHOD_LABELS.get(key, str(key)), "n": len(group)}
        for m in metrics:
            values = [float(r[m]) * (scale or {}).get(m, 1.0) for r in group if r.get(m) is not None]
            mean, se = mean_se(values) if values else (None, None)
            s[f"{m}_mean"], s[f"{m}_se"] = mean, se
            s[m] = format_mean_se(mean, se, digits)
            if len(metrics) == 1:
                s["mean"], s["se"], s["n"] = mean, se, len(values)
        out.append(s)
    return out
