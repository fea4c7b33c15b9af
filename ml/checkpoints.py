"""Checkpoint files: a dict with ``model_state_dict`` plus plain metadata.

Files always load with ``torch.load(weights_only=True)``: an uploaded pickle that needs
arbitrary Python objects is refused before anything in it runs. A bare tutorial
checkpoint (``{"model_state_dict": ...}`` only) loads when the caller supplies the
missing metadata (at least the class names).
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import IO, Any, Union

import torch
from torch import nn

from ml.models import DEFAULT_ARCH, TUTORIAL_ARCH, build_model
from ml.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

CheckpointSource = Union[str, os.PathLike, IO[bytes], bytes]

_STATE_DICT_KEYS = ("model_state_dict", "state_dict")
# Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_KEYS_LISTED = 3


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message naming the problem."""


@dataclass(kw_only=True)
class CheckpointMetadata:
    arch: str = DEFAULT_ARCH
    class_names: list[str]
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(input_size=self.input_size, mean=self.mean, std=self.std)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only, so the file stays loadable with weights_only=True."""
        return {
            "arch": self.arch,
            "class_names": list(self.class_names),
            "input_size": int(self.input_size),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "metrics": _plain(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointMetadata:
        return resolve_metadata(dict(data), None)


_METADATA_KEYS = tuple(f.name for f in fields(CheckpointMetadata))


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # on cpu, in eval mode
    metadata: CheckpointMetadata


def save_checkpoint(
    dest: str | os.PathLike | IO[bytes], *, model: nn.Module, metadata: CheckpointMetadata
) -> None:
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    torch.save({"model_state_dict": state_dict, **metadata.to_dict()}, dest)


def read_checkpoint(source: CheckpointSource) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, whatever metadata the file holds as a plain, possibly partial, dict)."""
    content = _safe_torch_load(source)
    state_dict, rest = _split_state_dict(content)
    found = {key: rest[key] for key in _METADATA_KEYS if key in rest}
    return _unwrap_keys(state_dict), found


def resolve_metadata(
    found: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> CheckpointMetadata:
    """Metadata from the file, with caller-supplied values filling in or taking precedence.

    Blank override values (None, "", []) count as not given, so a form's empty fields
    do not wipe what the file says.
    """
    given = {key: value for key, value in (overrides or {}).items() if not _is_blank(value)}
    unknown = sorted(set(given) - set(_METADATA_KEYS))
    if unknown:
        raise CheckpointError(f"unknown metadata field(s): {', '.join(unknown)}")
    merged = {**dict(found), **given}
    if _is_blank(merged.get("class_names")):
        raise CheckpointError(
            "the checkpoint has no class names: give them (in the order of the model's "
            "outputs) when registering it"
        )
    try:
        preprocessing = Preprocessing.from_dict(merged)
        if preprocessing.input_size < 1:
            raise ValueError(f"input_size must be positive, got {preprocessing.input_size}")
        return CheckpointMetadata(
            arch=_arch(merged.get("arch", DEFAULT_ARCH)),
            class_names=_class_names(merged["class_names"]),
            input_size=preprocessing.input_size,
            mean=preprocessing.mean,
            std=preprocessing.std,
            metrics=dict(merged.get("metrics") or {}),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid checkpoint metadata: {exc}") from exc


def load_checkpoint(
    source: CheckpointSource, *, overrides: Mapping[str, Any] | None = None
) -> LoadedCheckpoint:
    """Build the model the metadata describes and load the weights strictly."""
    state_dict, found = read_checkpoint(source)
    metadata = resolve_metadata(found, overrides)
    try:
        model = build_model(metadata.arch, metadata.num_classes)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    _check_head_size(model, state_dict, metadata.num_classes)
    _check_keys_and_shapes(model, state_dict, metadata.arch)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # everything it checks was checked above; belt and braces
        raise CheckpointError(f"the weights do not fit architecture {metadata.arch!r}: {exc}") from exc
    return LoadedCheckpoint(model=model.eval(), metadata=metadata)


# --- reading ----------------------------------------------------------------------


def _safe_torch_load(source: CheckpointSource) -> Any:
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_unpickling_refusal(str(exc))) from None
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint file not found: {exc.filename}") from exc
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError) as exc:
        raise CheckpointError(_NOT_A_CHECKPOINT) from exc


_NOT_A_CHECKPOINT = "not a PyTorch checkpoint (the file is corrupt or of another kind)"
_RESAVE = "re-save it as {'model_state_dict': model.state_dict()}"
# How torch's weights-only unpickler names what it refused: "unsupported GLOBAL
# posix.system whose module posix is blocked" (a blocked module) or "Unsupported
# global: GLOBAL eval was not an allowed global" (anything else; builtins lose
# their module name).
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S{1,200}) (?:whose module|was not an allowed)")
# Its other refusals of objects it would have to build or call.
_REFUSED_OBJECT = ("GLOBAL", "unrecognized function", "Can only create new object")


def _unpickling_refusal(message: str) -> str:
    """Why a file failed torch's weights-only unpickler, in the product's words."""
    named = _REFUSED_GLOBAL.search(message)
    if named:
        name = named.group(1)
        name = name if "." in name else f"builtins.{name}"
        return (
            f"checkpoint refused: loading it would import {name}; only weights are accepted "
            f"(importing it could run code; {_RESAVE})"
        )
    if any(marker in message for marker in _REFUSED_OBJECT):
        return (
            "checkpoint refused: the file needs arbitrary Python objects to load "
            f"(it could run code), and only plain tensors and metadata are accepted; {_RESAVE}"
        )
    return _NOT_A_CHECKPOINT


def _split_state_dict(content: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(content, dict):
        raise CheckpointError(
            f"the checkpoint holds a {type(content).__name__}, expected a dict with "
            "'model_state_dict'"
        )
    for key in _STATE_DICT_KEYS:
        if key in content:
            rest = {k: v for k, v in content.items() if k != key}
            return _validated_state_dict(content[key], key), rest
    if content and all(isinstance(v, torch.Tensor) for v in content.values()):
        return dict(content), {}  # a bare state dict
    raise CheckpointError(
        "the checkpoint has no 'model_state_dict' (keys found: "
        f"{_listing(sorted(map(str, content)))})"
    )


def _validated_state_dict(value: Any, key: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not value:
        raise CheckpointError(f"the checkpoint's {key!r} is not a non-empty dict of tensors")
    not_tensors = [k for k, v in value.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"the checkpoint's {key!r} holds non-tensors: {_listing(not_tensors)}")
    return dict(value)


def _unwrap_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


# --- metadata ---------------------------------------------------------------------


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0)


def _arch(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"arch must be a model name, got {value!r}")
    return value.strip()


def _class_names(value: Any) -> list[str]:
    if isinstance(value, str):  # "cat, dog" or one per line, as typed into a form
        value = value.replace("\n", ",").split(",")
    names = [str(name).strip() for name in value]
    if any(not name for name in names):
        raise ValueError("class names must not be blank")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names: {', '.join(duplicates)}")
    return names


def _plain(value: Any) -> Any:
    """Metrics as builtins: tensors and numpy scalars would need unsafe unpickling."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)


# --- matching weights to the architecture -----------------------------------------


def _check_head_size(model: nn.Module, state_dict: Mapping[str, torch.Tensor], num_classes: int) -> None:
    head = _head_weight_key(model)
    if head is None or head not in state_dict:
        return
    expected = model.state_dict()[head].shape
    found = state_dict[head].shape
    same_inputs = found[1:] == expected[1:]
    if same_inputs and found[0] != num_classes:
        raise CheckpointError(
            f"the checkpoint's head has {found[0]} outputs but {num_classes} class names "
            "were given"
        )


def _head_weight_key(model: nn.Module) -> str | None:
    """The final classification layer: the last Linear in registration order."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return f"{last}.weight" if last else None


def _check_keys_and_shapes(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], arch: str
) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listing(unexpected)}")
        raise CheckpointError(
            f"the checkpoint does not match architecture {arch!r}: {'; '.join(problems)}"
            + _layout_hint(unexpected, arch)
        )
    mismatched = [
        f"{key} is {list(state_dict[key].shape)} in the file but {list(value.shape)} "
        f"in the model"
        for key, value in expected.items()
        if state_dict[key].shape != value.shape
    ]
    if mismatched:
        raise CheckpointError(
            f"the checkpoint does not match architecture {arch!r}: shape mismatch: "
            f"{_listing(mismatched)}"
        )


def _layout_hint(unexpected: list[str], arch: str) -> str:
    tutorial_layout = any(k.startswith("backbone.") for k in unexpected) and any(
        k.startswith("head.") for k in unexpected
    )
    if tutorial_layout and arch != TUTORIAL_ARCH:
        return (
            f" (the keys look like the tutorial's ResNet18_CustomHead: try architecture "
            f"{TUTORIAL_ARCH!r})"
        )
    return ""


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_KEYS_LISTED])
    rest = len(items) - _KEYS_LISTED
    return f"{shown} and {rest} more" if rest > 0 else shown
