"""Training, outside the web process: the tutorial's ``train_model`` plus the plumbing
around it (checkpoint, schedule, precision; samples, split and datasets in ml.samples).

    python -m ml.train --data photos/ --epochs 12 --out weights/model.pth
    python -m ml.train --data demo_data --input-size 64 --epochs 16 --lr 3e-3 --augment shapes \
        --out weights/demo.pth

``--data`` is an ImageFolder-style directory (one folder per class) or a CSV file with
a ``path,label`` header (paths relative to the CSV's folder, or absolute): the export
of reviewed labels.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from tqdm import tqdm

from ml.checkpoints import CheckpointMetadata, save_checkpoint
from ml.decode import ImageSource
from ml.models import DEFAULT_ARCH, build_model
from ml.predictor import cpu_has_native_bf16
from ml.preprocess import AUGMENTATIONS, Preprocessing, eval_transform, train_transform
from ml.samples import ImageSamplesDataset, check_labels, collate_decoded, load_samples, split_samples

# Decoded training images kept in memory between epochs (about 21 KB each at 64 px,
# 260 KB at 224 px): a few thousand images fit; beyond the budget they are decoded again.
DEFAULT_CACHE_BYTES = 1 << 30
HISTORY_KEYS = ("train_loss", "train_acc", "train_f1", "val_loss", "val_acc", "val_f1")
History = dict[str, list[float]]
EpochCallback = Callable[[int, History], None]
# (optimizer, total number of optimizer steps) -> a scheduler stepped after every batch
SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


def train_model(
    model: nn.Module,
    loss_fn: nn.Module | None,
    optim: type[torch.optim.Optimizer] | torch.optim.Optimizer,
    lr: float,
    train_dl: DataLoader,
    val_dl: DataLoader | None,
    num_classes: int,
    epochs: int = 20,
    device: str = "cuda",
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
    precision: str = "fp32",
    scheduler: SchedulerFactory | None = None,
) -> History:
    """Train ``model`` in place; return per-epoch loss, accuracy and macro-F1.

    ``optim`` is an optimizer class (built with ``lr``) or a ready optimizer.
    ``loss_fn`` defaults to cross-entropy. Accuracy is the plain fraction of correct
    predictions; F1 is macro-averaged. ``on_epoch(epoch, history)`` is called after each
    epoch with the 1-based epoch number. ``precision="bf16"`` trains under autocast
    (worth it on CPUs with native bf16 and on GPUs). ``scheduler`` builds a per-batch
    learning-rate schedule, e.g. :func:`one_cycle`; without it the rate is constant, as
    in the tutorial.
    """
    device_ = _training_device(device)
    model.to(device_, memory_format=torch.channels_last)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    optimizer = optim if isinstance(optim, torch.optim.Optimizer) else optim(model.parameters(), lr=lr)
    metrics = _Metrics(num_classes, device_)
    autocast = _autocast_factory(precision, device_)
    lr_schedule = scheduler(optimizer, epochs * len(train_dl)) if scheduler else None
    history: History = {key: [] for key in HISTORY_KEYS}

    for epoch in range(1, epochs + 1):
        label = f"epoch {epoch}/{epochs}"
        train = _run_epoch(model, train_dl, loss_fn, metrics, device_, autocast,
                           optimizer=optimizer, lr_schedule=lr_schedule,
                       desc=f"{label} train", progress=progress)
        val = (
            _run_epoch(model, val_dl, loss_fn, metrics, device_, autocast,
                       optimizer=None, desc=f"{label} val", progress=progress)
            if val_dl is not None and len(val_dl) > 0
            else (math.nan, math.nan, math.nan)
        )  # fmt: skip
        for prefix, values in (("train", train), ("val", val)):
            for name, value in zip(("loss", "acc", "f1"), values):
                history[f"{prefix}_{name}"].append(value)
        if progress:
            tqdm.write(
                f"{label}: train loss {train[0]:.4f} acc {train[1]:.3f} | "
                f"val loss {val[0]:.4f} acc {val[1]:.3f} f1 {val[2]:.3f}"
            )
        if on_epoch is not None:
            on_epoch(epoch, history)
    return history


def train_from_samples(
    samples: Sequence[tuple[ImageSource, int]],
    *,
    class_names: Sequence[str],
    arch: str = DEFAULT_ARCH,
    preprocessing: Preprocessing = Preprocessing(),
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    validation: Sequence[bool] | None = None,
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 0,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
    precision: str = "auto",
    augment: str = "light",
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, History, CheckpointMetadata]:
    """Split, train and describe: returns (model on cpu in eval mode, history, metadata).

    ``samples`` are (image source, class index) pairs; sources are paths or bytes
    (file-like objects work only with ``num_workers=0``). ``augment`` names the
    training augmentation (see :func:`ml.preprocess.train_transform`). Decoded images
    are kept in memory up to ``cache_bytes`` (0 decodes every epoch).
    ``initial_state`` fine-tunes: the model starts from these weights (a state dict
    of ``arch`` with ``len(class_names)`` outputs) instead of a fresh initialisation.
    ``validation`` marks the samples to validate on (see :func:`ml.samples.split_samples`).
    """
    check_labels(samples, class_names)
    torch.manual_seed(seed)
    train_samples, val_samples = split_samples(samples, validation=validation, val_fraction=val_fraction, seed=seed)
    loader_args = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "collate_fn": collate_decoded,
        "persistent_workers": num_workers > 0,  # worker processes keep their caches
    }
    # Every worker process holds its own cache: the budget is shared out between them.
    cache_bytes //= max(1, num_workers)
    train_cache = round(cache_bytes * (1 - val_fraction))
    train_dl = DataLoader(
        ImageSamplesDataset(
            train_samples, train_transform(preprocessing, augment=augment), preprocessing,
            cache_bytes=train_cache,
        ),
        shuffle=True,
        drop_last=len(train_samples) > batch_size,  # a 1-image batch breaks BatchNorm
        generator=torch.Generator().manual_seed(seed),
        **loader_args,
    )
    val_dl = DataLoader(
        ImageSamplesDataset(
            val_samples, eval_transform(preprocessing), preprocessing,
            cache_bytes=cache_bytes - train_cache,
        ),
        **loader_args,
    )
    model = build_model(arch, len(class_names))
    if initial_state is not None:
        model.load_state_dict(initial_state)
    history = train_model(
        model, nn.CrossEntropyLoss(), torch.optim.AdamW, lr, train_dl, val_dl,
        len(class_names), epochs, _auto_device(device),
        on_epoch=on_epoch, progress=progress, precision=precision, scheduler=one_cycle,
    )  # fmt: skip
    metadata = CheckpointMetadata(
        arch=arch,
        class_names=list(class_names),
        input_size=preprocessing.input_size,
        mean=preprocessing.mean,
        std=preprocessing.std,
        metrics=_final_metrics(history, len(train_samples), len(val_samples)),
    )
    return model.cpu().eval(), history, metadata


def train_to_checkpoint(
    data: str | Path,
    out_path: str | Path,
    *,
    arch: str = DEFAULT_ARCH,
    epochs: int = 12,
    input_size: int = 112,
    lr: float = 1e-3,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 0,
    precision: str = "auto",
    augment: str = "light",
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
) -> Path:
    """Train on a directory or CSV and write the checkpoint; what the CLI does."""
    samples, class_names = load_samples(data)
    model, _, metadata = train_from_samples(
        samples,
        class_names=class_names,
        arch=arch,
        preprocessing=Preprocessing(input_size=input_size),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        num_workers=num_workers,
        progress=progress,
        precision=precision,
        augment=augment,
        on_epoch=on_epoch,
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_path, model=model, metadata=metadata)
    return out_path


def one_cycle(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Warm up to the optimizer's learning rate, then anneal: from-scratch training in
    a few epochs converges far faster than with a constant rate."""
    if total_steps < 8:  # OneCycleLR divides by its warm-up's step count: too few steps for a cycle
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    peak = [group["lr"] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total_steps, pct_start=0.25)


# --- the loop ---------------------------------------------------------------------


class _Metrics:
    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro").to(device)
        self.f1 = MulticlassF1Score(num_classes=num_classes, average="macro").to(device)

    def reset(self) -> None:
        self.accuracy.reset()
        self.f1.reset()

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        predictions = logits.argmax(dim=1)
        self.accuracy.update(predictions, targets)
        self.f1.update(predictions, targets)

    def compute(self) -> tuple[float, float]:
        return float(self.accuracy.compute()), float(self.f1.compute())


def _run_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    metrics: _Metrics,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    *,
    optimizer: torch.optim.Optimizer | None,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    desc: str,
    progress: bool,
) -> tuple[float, float, float]:
    """One pass over ``loader``: trains when given an optimizer, else evaluates."""
    training = optimizer is not None
    model.train(training)
    metrics.reset()
    total_loss, seen = 0.0, 0
    grad_mode = contextlib.nullcontext() if training else torch.inference_mode()
    with grad_mode:
        for inputs, targets in tqdm(loader, desc=desc, leave=False, disable=not progress):
            inputs = inputs.to(device, memory_format=torch.channels_last)
            targets = targets.to(device)
            with autocast():
                logits = model(inputs)
                loss = loss_fn(logits.float(), targets)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if lr_schedule is not None:
                    lr_schedule.step()
            total_loss += loss.item() * len(targets)
            seen += len(targets)
            metrics.update(logits.detach(), targets)
    if seen == 0:
        return math.nan, math.nan, math.nan
    return (total_loss / seen, *metrics.compute())


def resolve_training_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 where the hardware runs it natively, else fp32 (fp16 training
    would need loss scaling, so 'auto' never picks it)."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    precision = resolve_training_precision(precision, device)
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(dtypes)}")
    dtype = dtypes[precision]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def _training_device(device: str | torch.device) -> torch.device:
    resolved = torch.device(_auto_device(device) if device == "auto" else device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA is not available: training on the CPU instead", stacklevel=3)
        return torch.device("cpu")
    return resolved


def _auto_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _final_metrics(history: History, train_size: int, val_size: int) -> dict[str, Any]:
    return {
        "val_acc": history["val_acc"][-1] if history["val_acc"] else math.nan,
        "val_f1": history["val_f1"][-1] if history["val_f1"] else math.nan,
        "train_size": train_size,
        "val_size": val_size,
        "epochs": len(history["train_loss"]),
        "history": {key: list(values) for key, values in history.items()},
    }


# --- command line -----------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ml.train", description="Train a classifier and write a checkpoint."
    )
    parser.add_argument("--data", required=True, type=Path, help="class folders or path,label CSV")
    parser.add_argument("--arch", default=DEFAULT_ARCH)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write, e.g. weights/demo.pth")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="autocast precision; auto = bf16 where the hardware has it natively")
    parser.add_argument("--augment", default="light", choices=AUGMENTATIONS,
                        help="light: crops, horizontal flips, mild colour (photos); "
                        "shapes: also any rotation and vertical flips (no up or down)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    started = time.perf_counter()
    out = train_to_checkpoint(
        args.data,
        args.out,
        arch=args.arch,
        epochs=args.epochs,
        input_size=args.input_size,
        lr=args.lr,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=args.device,
        num_workers=args.num_workers,
        precision=args.precision,
        augment=args.augment,
    )
    elapsed = time.perf_counter() - started
    metrics = torch.load(out, map_location="cpu", weights_only=True)["metrics"]
    print(
        f"wrote {out}: val accuracy {metrics['val_acc']:.4f}, val macro-F1 "
        f"{metrics['val_f1']:.4f}, {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
