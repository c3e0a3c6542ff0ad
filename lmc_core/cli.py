"""The command line, `lmc` or `python -m lmc_core`: alignment and barriers on your own checkpoints.

    lmc align A B --method weight_matching --out DIR    # B aligned to A, saved as an ordinary checkpoint
    lmc barrier A B --data FILE_OR_FOLDER               # loss and accuracy along the linear path
    torchrun --nproc_per_node 4 -m lmc_core align A B --method learned_matching --data FILE --out DIR

(The study's models are trained by `python -m lmc_study train`, which writes this format.)

Checkpoints (A, B) are directories:
- Hugging Face GPT-2: what `save_pretrained` writes (config.json with model_type "gpt2", the
  weights). A tokenizer saved next to it (tokenizer.json) tokenises text data.
- timm ViT: `model.safetensors` (the state dict) and `config.json` holding
  {"architecture": "vit", "model_args": {...}}: the keyword arguments of timm's
  VisionTransformer (another "architecture" is a timm model name for timm.create_model), and
  optionally "mean" and "std", the per-channel normalisation of the model's inputs.
  `save_checkpoint` writes this format.
Data:
- text (GPT-2): a UTF-8 file, tokenised with the checkpoint's tokenizer.json or --tokenizer
  (a tokenizer.json file, or a folder holding one), cut into blocks of --block-size tokens.
- images (ViT): a folder with one subfolder per class (torchvision's ImageFolder layout, classes
  in sorted order), resized to the model's image size, normalised with the checkpoint's
  mean/std (else --mean/--std, else the folder's own statistics).
Bad input gives one line on stderr and exit status 1 (2 for usage errors); LMC_DEBUG=1 shows
the traceback instead.

Nothing heavy is imported before the arguments are parsed: `lmc --help` needs no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .outputs import check_output_dir, staged_output_dir, write_json_atomically

if TYPE_CHECKING:
    import torch
    from torch import nn

METHODS = ("weight_matching", "activation_matching", "learned_matching")  # soft matching mixes heads: not exportable
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise _UsageError(f"{self.prog}: {message} (see --help)")


class _UsageError(Exception):
    pass


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1 (a batch of 0 items, 0 epochs... say so at once)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive (at least 1)")
    return value


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value}: a path needs at least 2 points (its two ends)")
    return value


def _check_json_path(path: str | Path) -> None:
    parent = Path(path).parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CLIError(f"--json {path}: cannot write in {parent}: choose a writable path")


# -- checkpoints ---------------------------------------------------------------------------------

def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A model from a checkpoint directory (module docstring), in eval mode."""
    path = Path(path)
    config_file = path / "config.json"
    if not path.is_dir() or not config_file.exists():
        raise CLIError(f"{path}: not a checkpoint directory (expected {config_file})")
    config = json.loads(config_file.read_text())
    if "model_type" in config:
        if config["model_type"] != "gpt2":
            raise CLIError(f"{path}: Hugging Face model_type {config['model_type']!r} is not supported: lmc reads "
                           "GPT-2 (HF) and timm ViTs; another architecture needs an adapter (lmc_core/adapters)")
        from transformers import GPT2LMHeadModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # stdout is the result (JSON), stderr only errors
        model = GPT2LMHeadModel.from_pretrained(path)
    elif "model_args" in config or "architecture" in config:
        model = _load_timm(path, config)
    else:
        raise CLIError(f"{config_file}: neither a Hugging Face config (model_type) nor a timm one (architecture, "
                       "model_args)")
    return model.to(device).eval()


def _load_timm(path: Path, config: dict) -> nn.Module:
    from safetensors.torch import load_file

    weights = path / "model.safetensors"
    if not weights.exists():
        raise CLIError(f"{path}: a timm checkpoint needs model.safetensors next to config.json")
    args = dict(config.get("model_args", {}))
    architecture = config.get("architecture", "vit")
    if architecture == "vit":
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(**args)
    else:
        import timm

        model = timm.create_model(architecture, pretrained=False, **args)
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CLIError(f"{weights}: the weights do not fit config.json (missing {missing[:3]}, unexpected "
                       f"{unexpected[:3]})")
    return model


def save_checkpoint(model: nn.Module, out: str | Path, like: str | Path | None = None,
                    vit_config: dict | None = None, structure_like: str | Path | None = None) -> None:
    """Write `model` as a checkpoint directory: HF models with save_pretrained (plus `like`'s
    tokenizer files), timm models as model.safetensors with `like`'s config.json or `vit_config`.
    `structure_like`: a timm checkpoint whose architecture (model_args) the model has, while its
    input normalisation stays `like`'s (an aligned B has A's shape and B's function)."""
    from .metrics import is_hf_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if is_hf_model(model):
        model.save_pretrained(out)
        for name in TOKENIZER_FILES if like is not None else ():
            if (Path(like) / name).exists():
                shutil.copy(Path(like) / name, out / name)
        return
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    if vit_config is None:
        vit_config = json.loads((Path(like) / "config.json").read_text())
        if structure_like is not None:
            shape = json.loads((Path(structure_like) / "config.json").read_text())
            vit_config = {**shape, **{k: vit_config[k] for k in ("mean", "std") if k in vit_config}}
    (out / "config.json").write_text(json.dumps(vit_config, indent=2))


# -- data ----------------------------------------------------------------------------------------

def load_data(path: str | Path, model: nn.Module, checkpoint: str | Path, args: argparse.Namespace) -> list:
    """(inputs, targets) batches for `model` from a text file or an image folder."""
    path = Path(path)
    if not path.exists():
        raise CLIError(f"{path}: no such file or folder")
    canon = _canonical_config(model)
    if canon.task == "text":
        if not path.is_file():
            raise CLIError(f"{path}: a GPT-2 needs a text file, got a folder")
        return _text_batches(path, canon, checkpoint, args)
    if not path.is_dir():
        raise CLIError(f"{path}: a ViT needs an image folder (one subfolder per class), got a file")
    return _image_batches(path, canon, checkpoint, args)


def _canonical_config(model: nn.Module):
    from .adapters import adapter_for

    return adapter_for(model).read(model).config


def _tokenizer(checkpoint: str | Path, name: str | None):
    from tokenizers import Tokenizer

    path = Path(checkpoint if name is None else name)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        where = f"{checkpoint} has no tokenizer.json" if name is None else f"--tokenizer {name}: no such file"
        raise CLIError(f"{where}: pass --tokenizer (a tokenizer.json file, or a folder holding one; "
                       "Hugging Face's tokenizer.save_pretrained writes it)")
    return Tokenizer.from_file(str(path))


def _text_batches(path: Path, config, checkpoint, args) -> list:
    import torch

    tokenizer = _tokenizer(checkpoint, args.tokenizer)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CLIError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}): "
                       "convert it first, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise CLIError(f"{path} is empty: pass a text file with at least one block of tokens")
    ids = torch.tensor(tokenizer.encode(text).ids, dtype=torch.int64)
    if len(ids) and int(ids.max()) >= config.num_outputs:
        raise CLIError(f"the tokenizer gives id {int(ids.max())} but the model has {config.num_outputs} tokens: "
                       "pass the tokenizer the model was trained with (--tokenizer)")
    block = min(args.block_size or config.max_positions, config.max_positions)
    n = len(ids) // block
    if n == 0:
        raise CLIError(f"{path}: {len(ids)} tokens, fewer than one block of {block}")
    blocks = ids[: n * block].view(n, block).to(args.device)
    return [(blocks[i:i + args.batch_size], None) for i in range(0, n, args.batch_size)]


def _image_batches(path: Path, config, checkpoint, args) -> list:
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise CLIError(f"{path}: no class subfolders (expected one folder of images per class)")
    if len(classes) == 1:
        raise CLIError(f"{path}: one class folder ({classes[0]}); a classifier's loss and barrier need the "
                       "classes it tells apart: one subfolder per class")
    if len(classes) > config.num_outputs:
        raise CLIError(f"{path}: {len(classes)} classes but the model has {config.num_outputs} outputs")
    mode = {1: "L", 3: "RGB"}.get(config.in_chans)
    if mode is None:
        raise CLIError(f"images for a model of {config.in_chans} input channels are not supported (1 or 3)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((path / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    with Image.open(file) as im:
                        im = im.convert(mode).resize((config.img_size, config.img_size), Image.BILINEAR)
                        images.append(np.asarray(im, dtype=np.float32).reshape(config.img_size, config.img_size, -1))
                except (UnidentifiedImageError, OSError) as err:
                    raise CLIError(f"{file}: not a readable image ({type(err).__name__}): remove or replace it") from None
                labels.append(label)
    if not images:
        raise CLIError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 255.0
    saved = json.loads((Path(checkpoint) / "config.json").read_text())
    mean = args.mean or saved.get("mean") or x.mean((0, 2, 3)).tolist()
    std = args.std or saved.get("std") or x.std((0, 2, 3)).tolist()
    if len(mean) != config.in_chans or len(std) != config.in_chans:
        raise CLIError(f"--mean/--std need {config.in_chans} values, one per channel")
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    x, y = x.to(args.device), torch.tensor(labels).to(args.device)
    return [(x[i:i + args.batch_size], y[i:i + args.batch_size]) for i in range(0, len(x), args.batch_size)]


# -- commands ------------------------------------------------------------------------------------

def resolve_device(name: str) -> str:
    """"auto": cuda when there is one, else cpu."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _pair(args: argparse.Namespace) -> tuple[nn.Module, nn.Module]:
    a, b = load_checkpoint(args.a, args.device), load_checkpoint(args.b, args.device)
    if type(a) is not type(b):
        raise CLIError(f"{args.a} is a {type(a).__name__} but {args.b} is a {type(b).__name__}: "
                       "alignment and barriers need two models of one architecture")
    return a, b


def cmd_align(args: argparse.Namespace) -> dict | None:
    from . import distributed

    args.device = resolve_device(args.device)
    device = distributed.setup()  # under torchrun, learned matching shares every batch between the processes
    try:
        if distributed.active():
            args.device = device
        return _align(args)
    finally:
        distributed.teardown()


def _align(args: argparse.Namespace) -> dict | None:
    from safetensors.torch import save_file

    from . import distributed
    from .adapters import export
    from .alignment import align

    check_output_dir(args.out, "lmc align")
    a, b = _pair(args)
    width_a, width_b = _canonical_config(a).width, _canonical_config(b).width
    if width_b < width_a:  # fail before the alignment runs, not after it
        raise CLIError(f"{args.b} is narrower than {args.a} (residual width {width_b} < {width_a}): the "
                       "lift into the wider stream is exact but not centred, so the result could not be "
                       "saved as an ordinary checkpoint; use lmc_core.align in Python and keep it canonical")
    data = load_data(args.data, a, args.a, args) if args.data else None
    if data is None and args.method != "weight_matching":
        raise CLIError(f"--method {args.method} learns from data: pass --data")
    options = {"residual": args.residual, "iterations": args.iterations, "epochs": args.epochs, "lr": args.lr,
               "steps_per_epoch": args.steps_per_epoch, "seed": args.seed, "keep_centred": True}
    start = time.perf_counter()
    result = align(a, b, args.method, data=data, **options)
    if not distributed.is_main():
        return None
    exported = export(result.model_b, like=a)  # aligned B has A's structure
    symmetry = result.symmetry
    tensors = {"residual": symmetry.residual, "heads": None if symmetry.heads is None else symmetry.heads.read,
               "mlp": None if symmetry.mlp is None else symmetry.mlp.read}
    summary = {"method": args.method, "a": str(args.a), "b": str(args.b), "out": str(args.out),
               "options": options, "seconds": round(time.perf_counter() - start, 3), "history": result.history}
    with staged_output_dir(args.out, "lmc align") as stage:
        save_checkpoint(exported, stage, like=args.b, structure_like=args.a)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items() if v is not None},
                  str(stage / "symmetry.safetensors"))
        (stage / "alignment.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def cmd_barrier(args: argparse.Namespace) -> dict:
    from .adapters import canonicalize
    from .interpolation import barrier

    args.device = resolve_device(args.device)
    if args.json:
        _check_json_path(args.json)
    a, b = _pair(args)
    width_a, width_b = _canonical_config(a).width, _canonical_config(b).width
    if width_a != width_b:
        raise CLIError(f"{args.a} has residual width {width_a} and {args.b} {width_b}: a path needs two models of "
                       "one shape; lift the narrower into the wider first (lmc_core.lift_width, in Python)")
    data = load_data(args.data, a, args.a, args)
    if args.space == "canonical":
        a, b = canonicalize(a), canonicalize(b)
    result = barrier(a, b, data, lambdas=args.lambdas)
    out = {"a": str(args.a), "b": str(args.b), "data": str(args.data), "space": args.space} | result.to_dict()
    if args.json:
        write_json_atomically(args.json, out)
    return out


# -- parser and entry point ----------------------------------------------------------------------

def new_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A parser whose errors are one line (exit status 2 through `run`), and its subcommands."""
    parser = _Parser(prog=prog, description=description)
    return parser, parser.add_subparsers(dest="command", required=True, parser_class=_Parser)


def build_parser() -> argparse.ArgumentParser:
    parser, commands = new_parser("lmc", "Align and interpolate Transformers (timm ViT, HF GPT-2) on your own "
                                  "checkpoints: see `python -m pydoc lmc_core.cli` for the checkpoint and data formats.")

    def common(p: argparse.ArgumentParser, data_required: bool) -> None:
        p.add_argument("a", help="checkpoint directory of model A (the reference)")
        p.add_argument("b", help="checkpoint directory of model B")
        p.add_argument("--data", required=data_required,
                       help="a text file (GPT-2) or an image folder with one subfolder per class (ViT)")
        p.add_argument("--tokenizer", help="text data: a tokenizer.json file or a folder holding one "
                       "(default: the tokenizer.json in checkpoint A)")
        p.add_argument("--block-size", type=positive_int,
                       help="text data: tokens per sequence (default: the model's context)")
        p.add_argument("--mean", type=float, nargs="+", help="image data: per-channel mean (default: from "
                       "config.json, else the folder's)")
        p.add_argument("--std", type=float, nargs="+", help="image data: per-channel std (default as --mean)")
        p.add_argument("--batch-size", type=positive_int, default=32, help="items per batch (default 32)")
        p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")

    p = commands.add_parser("align", help="align B to A and save B aligned as an ordinary checkpoint",
                            description="Align B to A (A is the reference) and write B aligned to --out, in B's "
                            "format, with symmetry.safetensors and alignment.json. The orthogonal residual map "
                            "keeps the all-ones direction, so the result is again a LayerNorm model. Under "
                            "`torchrun --nproc_per_node N`, learned matching shares every batch between N processes.")
    common(p, data_required=False)
    p.add_argument("--method", default="weight_matching", choices=METHODS,
                   help=f"alignment method: {', '.join(METHODS)} (default weight_matching; the others need --data; "
                   "soft matching mixes heads, which no exported model holds: use it from Python)")
    p.add_argument("--out", required=True, help="directory for the aligned B")
    p.add_argument("--residual", default="orthogonal", choices=("orthogonal", "permutation"),
                   help="residual map: orthogonal (default) or permutation (the paper's ablation)")
    p.add_argument("--iterations", type=positive_int, default=15, help="weight-matching iterations (default 15)")
    p.add_argument("--epochs", type=positive_int, default=2, help="learned/soft matching epochs over --data (default 2)")
    p.add_argument("--steps-per-epoch", type=positive_int, help="cap on learned-matching steps per epoch")
    p.add_argument("--lr", type=float, default=1e-3, help="learned/soft matching learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the λ sampler (default 0)")
    p.set_defaults(run=cmd_align)

    p = commands.add_parser("barrier", help="loss and accuracy barrier between A and B on --data",
                            description="Loss and accuracy along θ(λ) = λ θ_A + (1-λ) θ_B, printed as JSON.")
    common(p, data_required=True)
    p.add_argument("--lambdas", type=_at_least_two, default=11,
                   help="points on the path, both ends included (default 11)")
    p.add_argument("--space", default="raw", choices=("raw", "canonical"),
                   help="interpolate the raw parameters (raw, the vanilla barrier; default) or the canonical "
                   "forms (canonical: use it for a pair written by `lmc align`)")
    p.add_argument("--json", help="also write the result to this file")
    p.set_defaults(run=cmd_barrier)

    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen command (its `run` default); print its result as JSON.
    Returns the exit status (0 ok, 1 bad input, 2 bad usage)."""
    try:
        args = parser.parse_args(argv)
        result = args.run(args)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except Exception as err:  # bad input of any kind: one line, unless debugging
        if os.environ.get("LMC_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{parser.prog}: error: {message} (LMC_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    if result is not None:  # None: a torchrun process other than the main one
        print(json.dumps(result, indent=2, default=float))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `lmc` command line; returns the exit status (0 ok, 1 bad input, 2 bad usage)."""
    return run(build_parser(), argv)
