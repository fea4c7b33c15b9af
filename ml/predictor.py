"""Batched inference: build a :class:`Predictor` once per process, call it many times."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ml.checkpoints import CheckpointMetadata, CheckpointSource, load_checkpoint
from ml.cores import usable_cores
from ml.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageSource, open_image
from ml.features import EMBEDDING_DTYPE, FLOAT16_MAX, returning_features
from ml.preprocess import eval_transform

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
# CPU flags of native bf16 arithmetic; without them bf16 is emulated and slower than fp32.
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Threads that decode ahead of the model: on the CPU the model's own threads need the
# cores too; on a GPU the CPU only decodes (an H200 machine: 4 threads 261 img/s, 16 threads 357).
_MAX_DECODE_WORKERS = {"cpu": 4, "cuda": 16}

logger = logging.getLogger(__name__)

# Called in a decode thread with (position in the stream, name, oriented RGB image).
DecodedHook = Callable[[int, str, Image.Image], None]


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    confidence: float
    probabilities: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=(), repr=False)
    # The model's penultimate features (ml.features), read-only float16; None for a
    # model whose feature layer cannot be found. Store with ml.features.embedding_to_bytes.
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def margin(self) -> float:
        """Top-1 minus top-2 probability: small means the model hesitated."""
        top = sorted(self.probabilities, reverse=True)
        return top[0] - (top[1] if len(top) > 1 else 0.0)

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        ranked = sorted(
            zip(self.class_names, self.probabilities), key=lambda pair: pair[1], reverse=True
        )
        return ranked[:k]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: label, confidence and the probability of every class."""
        return {
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": dict(zip(self.class_names, self.probabilities)),
        }


class Predictor:
    """A model in eval mode on one device, with its preprocessing and class names.

    Thread-safe for concurrent ``predict`` calls (inference mode mutates nothing).

    With ``embeddings`` (the default) each Prediction also carries the model's
    penultimate features from the same forward pass (see :mod:`ml.features`). When
    the model has such a layer, ``has_embeddings`` is true and ``self.model``
    returns ``(features, logits)``; otherwise it returns logits.
    """

    def __init__(
        self,
        model: nn.Module,
        metadata: CheckpointMetadata,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int = 32,
        num_threads: int | None = None,
        embeddings: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_threads:  # global to the process, so only when the caller asks
            torch.set_num_threads(num_threads)
        self.metadata = metadata
        self.class_names: tuple[str, ...] = tuple(metadata.class_names)
        self.preprocessing = metadata.preprocessing
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        folded, self.has_embeddings = _inference_model(model.eval(), metadata.num_classes, embeddings=embeddings)
        self.model = folded.to(self.device, memory_format=torch.channels_last)
        self._transform = eval_transform(self.preprocessing)
        self._autocast_dtype = None if self.precision == "fp32" else PRECISIONS[self.precision]
        self._input_dtype = torch.float32
        if self.device.type == "cuda":
            # cuDNN times its convolution algorithms once per input shape and keeps the
            # fastest; a worker sees a few batch shapes (see _decoded_prefix_length).
            torch.backends.cudnn.benchmark = True
            if self._autocast_dtype is not None:
                # Weights kept in the compute dtype: autocast casts every weight again on
                # each call, a kernel each, and on an H200 that made fp16 slower than fp32
                # at batch 32 (13.6k against 20.1k img/s). The CPU keeps autocast: its
                # bf16 numbers were measured so.
                self.model = self.model.to(self._autocast_dtype)
                self._input_dtype, self._autocast_dtype = self._autocast_dtype, None

    @classmethod
    def from_checkpoint(
        cls,
        source: CheckpointSource,
        *,
        overrides: Mapping[str, Any] | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int = 32,
        num_threads: int | None = None,
        embeddings: bool = True,
    ) -> Predictor:
        loaded = load_checkpoint(source, overrides=overrides)
        return cls(
            loaded.model,
            loaded.metadata,
            device=device,
            precision=precision,
            batch_size=batch_size,
            num_threads=num_threads,
            embeddings=embeddings,
        )

    def __repr__(self) -> str:
        return (
            f"Predictor(arch={self.metadata.arch!r}, classes={len(self.class_names)}, "
            f"device={str(self.device)!r}, precision={self.precision!r}, "
            f"batch_size={self.batch_size})"
        )

    @property
    def decode_workers(self) -> int:
        """How many threads ``predict_sources`` decodes with unless told."""
        cap = _MAX_DECODE_WORKERS.get(self.device.type, _MAX_DECODE_WORKERS["cpu"])
        return max(1, min(cap, usable_cores()))

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """Predictions for RGB images, in input order."""
        predictions: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = torch.stack([self._transform(image) for image in chunk])
            predictions.extend(self._predict_batch(batch))
        return predictions

    def predict_sources(
        self,
        sources: Iterable[tuple[str, ImageSource]],
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        decode_workers: int | None = None,
        on_decoded: DecodedHook | None = None,
        min_decode_size: int | None = None,
    ) -> Iterator[tuple[str, Prediction | ImageDecodeError]]:
        """Decode and predict ``(name, source)`` pairs, yielding in input order.

        A thread pool decodes ahead (up to two batches) while the model runs.
        A file that cannot be decoded yields its ImageDecodeError; the stream goes on.

        ``on_decoded(index, name, image)`` lets the caller reuse each decoded image
        (e.g. for a thumbnail) instead of decoding the file again: it runs in the
        decode threads with the oriented RGB image, before the model's transform, and
        must not modify the image. Its exceptions are logged, never raised.
        ``min_decode_size`` keeps JPEGs decoded at least that big on both sides
        (by default they shrink to twice the model's input size).
        """
        workers = decode_workers or self.decode_workers
        numbered = enumerate(sources)
        decode = partial(
            self._decode_and_transform,
            max_pixels=max_pixels,
            # JPEGs decode at 1/2..1/8 scale: plenty for a model input this small.
            draft_size=max(2 * self.preprocessing.input_size, min_decode_size or 0),
            on_decoded=on_decoded,
        )
        # Decoding runs up to two batches ahead of the model. The model takes
        # whatever is decoded when it is free (at most a batch, at least a
        # quarter of one), so it starts after a few images rather than a whole
        # batch: a stream as short as one batch (an API request) would
        # otherwise decode everything before the model ran at all.
        decode_ahead = 2 * self.batch_size
        smallest_batch = max(1, self.batch_size // 4)
        in_flight: deque[tuple[str, Future]] = deque()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ml-decode")
        try:
            for index, (name, source) in itertools.islice(numbered, decode_ahead):
                in_flight.append((name, pool.submit(decode, index, name, source)))
            while in_flight:
                taken = _decoded_prefix_length(in_flight, smallest=smallest_batch, largest=self.batch_size)
                batch = [in_flight.popleft() for _ in range(taken)]
                for index, (name, source) in itertools.islice(numbered, taken):
                    in_flight.append((name, pool.submit(decode, index, name, source)))
                yield from self._predict_decoded(batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # --- internals ----------------------------------------------------------------

    def _decode_and_transform(
        self,
        index: int,
        name: str,
        source: ImageSource,
        *,
        max_pixels: int,
        draft_size: int,
        on_decoded: DecodedHook | None,
    ) -> torch.Tensor | ImageDecodeError:
        try:
            image = open_image(source, name=name, max_pixels=max_pixels, draft_size=draft_size)
        except ImageDecodeError as exc:
            return exc
        if on_decoded is not None:
            try:
                on_decoded(index, name, image)
            except Exception:  # the caller's extra work must never cost the prediction
                logger.exception("on_decoded hook failed for %s", name)
        return self._transform(image)

    def _predict_decoded(
        self, decoded: list[tuple[str, Future]]
    ) -> Iterator[tuple[str, Prediction | ImageDecodeError]]:
        results = [(name, future.result()) for name, future in decoded]
        tensors = [r for _, r in results if isinstance(r, torch.Tensor)]
        predictions = iter(self._predict_batch(torch.stack(tensors)) if tensors else [])
        for name, result in results:
            yield name, next(predictions) if isinstance(result, torch.Tensor) else result

    def _predict_batch(self, batch: torch.Tensor) -> list[Prediction]:
        probabilities, embeddings = self._forward(batch)
        rows = probabilities.tolist()
        if embeddings is None:
            return [self._prediction(row) for row in rows]
        return [self._prediction(row, embedding) for row, embedding in zip(rows, embeddings)]

    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
        """(probabilities, float16 embeddings or None) of one batch, from one forward pass."""
        with torch.inference_mode():
            inputs = batch.to(self.device, self._input_dtype, memory_format=torch.channels_last)
            with self._autocast():
                output = self.model(inputs)
            features, logits = output if self.has_embeddings else (None, output)
            # Softmax in fp32: bf16 keeps only ~3 significant digits.
            probabilities = torch.softmax(logits.float(), dim=1).cpu()
            if features is None:
                return probabilities, None
            # A bf16 or fp32 feature beyond float16's range would be stored as inf.
            features = features.float().clamp(-FLOAT16_MAX, FLOAT16_MAX).to(torch.float16).cpu()
        embeddings = features.numpy().astype(EMBEDDING_DTYPE, copy=False)
        embeddings.flags.writeable = False
        return probabilities, embeddings

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _prediction(self, probabilities: list[float], embedding: np.ndarray | None = None) -> Prediction:
        index = max(range(len(probabilities)), key=probabilities.__getitem__)
        return Prediction(
            label=self.class_names[index],
            index=index,
            confidence=probabilities[index],
            probabilities=tuple(probabilities),
            class_names=self.class_names,
            embedding=embedding,
        )


def _inference_model(model: nn.Module, num_classes: int, *, embeddings: bool) -> tuple[nn.Module, bool]:
    """(a copy of the eval-mode ``model`` with batch norms folded, whether it returns features).

    Folding each BatchNorm into the conv before it gives the same outputs (to float
    rounding) for less work: on a 2-core CPU a ResNet18 batch ran 1.3-1.5x faster
    in bf16 and 1.1x in fp32, as the separate batch-norm passes over every
    activation are gone. With ``embeddings`` the traced graph also returns the
    classifier's input (ml.features), so one pass gives both. A model that
    torch.fx cannot trace runs unfolded, without embeddings.
    """
    from torch import fx
    from torch.fx.experimental.optimization import fuse

    try:
        traced = fx.symbolic_trace(model)
        with_features = returning_features(traced, num_classes) if embeddings else None
        # fuse deep-copies: the caller's model (whose modules the traced graph shares) stays as it was.
        folded = fuse(traced if with_features is None else with_features, no_trace=True)
    except Exception as exc:  # tracing fails on data-dependent control flow
        logger.info("Running %s without folding batch norms or embeddings: %s", type(model).__name__, exc)
        return model, False
    if embeddings and with_features is None:
        logger.info("No feature layer found in %s: predictions carry no embedding", type(model).__name__)
    return folded, with_features is not None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is taken as asked."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(resolved)!r} was requested but CUDA is not available")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> the fastest precision the hardware runs natively."""
    precision = _PRECISION_ALIASES.get(precision, precision)
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {precision!r}: use 'auto', {', '.join(map(repr, PRECISIONS))}"
            )
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """oneDNN present and the CPU has bf16 instructions (AVX512-BF16 or AMX)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:  # not Linux: do not guess
        return False
    return any(flag in flags.split() for flag in _CPU_BF16_FLAGS)


def _decoded_prefix_length(in_flight: deque[tuple[str, Future]], *, smallest: int, largest: int) -> int:
    """How many images from the front of ``in_flight`` the model takes now.

    Those already decoded, up to ``largest`` and in multiples of ``smallest``:
    each new batch shape costs the backend a one-time kernel build (10-15 ms on
    the CPU for ResNet18), so a few sizes are reused rather than every one up to
    ``largest``. If fewer than ``smallest`` are decoded it waits for them; if
    fewer are left in the stream, it takes those.
    """
    count = 0
    for _name, future in itertools.islice(in_flight, largest):
        if count >= smallest and not future.done():
            break
        count += 1
    return count - count % smallest if count >= smallest else count
