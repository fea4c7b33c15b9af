"""Checkpoints: round trip, tutorial files, refusals with messages that name the problem."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle

import pytest
import torch

from ml.checkpoints import (
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_checkpoint,
    resolve_metadata,
    save_checkpoint,
)
from ml.models import DEFAULT_ARCH, TUTORIAL_ARCH, build_model
from ml.preprocess import Preprocessing
from tests.ml.images import HUE_CLASSES

FIVE = list(HUE_CLASSES)


def saved(obj, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **save_kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def state_dict(random_model):
    return random_model.state_dict()


@pytest.fixture(scope="module")
def tutorial_file(state_dict) -> bytes:
    """Exactly what the tutorial saves: the weights and nothing else."""
    return saved({"model_state_dict": state_dict})


def test_round_trip_keeps_weights_and_metadata(random_model):
    metadata = CheckpointMetadata(
        class_names=FIVE,
        input_size=64,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        metrics={"val_acc": torch.tensor(0.75), "history": {"val_acc": [0.5, 0.75]}},
    )
    buffer = io.BytesIO()
    save_checkpoint(buffer, model=random_model, metadata=metadata)

    loaded = load_checkpoint(buffer.getvalue())

    assert loaded.metadata.class_names == FIVE
    assert loaded.metadata.preprocessing == Preprocessing(64, (0.5,) * 3, (0.25,) * 3)
    assert loaded.metadata.metrics == {"val_acc": 0.75, "history": {"val_acc": [0.5, 0.75]}}
    assert not loaded.model.training
    for key, value in random_model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
        assert loaded.model.state_dict()[key].device.type == "cpu"


def test_saved_file_holds_only_plain_types(random_model, tiny_metadata, tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(path, model=random_model, metadata=tiny_metadata)
    content = torch.load(path, weights_only=True)
    assert set(content) == {"model_state_dict", "arch", "class_names", "input_size", "mean", "std", "metrics"}
    assert content["mean"] == list(tiny_metadata.mean)
    assert load_checkpoint(path).metadata == tiny_metadata


def test_metadata_dict_round_trip(tiny_metadata):
    assert CheckpointMetadata.from_dict(tiny_metadata.to_dict()) == tiny_metadata


def test_tutorial_checkpoint_needs_class_names(tutorial_file):
    with pytest.raises(CheckpointError, match="no class names"):
        load_checkpoint(tutorial_file)


def test_tutorial_checkpoint_loads_with_overrides(tutorial_file, state_dict):
    loaded = load_checkpoint(tutorial_file, overrides={"class_names": FIVE, "input_size": 32})
    assert loaded.metadata.arch == DEFAULT_ARCH
    assert loaded.metadata.input_size == 32
    assert torch.equal(loaded.model.state_dict()["fc.1.weight"], state_dict["fc.1.weight"])


def test_overrides_win_but_blanks_do_not_erase():
    found = {"class_names": ["a", "b"], "input_size": 64, "arch": "resnet18"}
    metadata = resolve_metadata(found, {"input_size": 96, "class_names": [], "arch": None})
    assert (metadata.input_size, metadata.class_names, metadata.arch) == (96, ["a", "b"], "resnet18")
    assert resolve_metadata({}, {"class_names": "cat, dog\nbird"}).class_names == ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"class_names": ["a", "a"]}, "duplicate class names: a"),
        ({"class_names": ["a"], "mean": [0.5]}, "expected 3 values"),
        ({"class_names": ["a"], "colour": "red"}, "unknown metadata field"),
    ],
)
def test_bad_metadata_is_refused(overrides, message):
    with pytest.raises(CheckpointError, match=message):
        resolve_metadata({}, overrides)


@pytest.mark.parametrize(
    "content",
    [
        lambda sd: sd,  # a bare state dict
        lambda sd: {"state_dict": sd},
        lambda sd: {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}},  # DataParallel
    ],
    ids=["bare", "state_dict-key", "module-prefix"],
)
def test_common_variants_load(content, state_dict):
    loaded = load_checkpoint(saved(content(state_dict)), overrides={"class_names": FIVE})
    assert torch.equal(loaded.model.state_dict()["conv1.weight"], state_dict["conv1.weight"])


def test_class_count_mismatch_is_named(tutorial_file):
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tutorial_file, overrides={"class_names": ["a", "b", "c"]})
    assert str(caught.value) == "the checkpoint's head has 5 outputs but 3 class names were given"


def test_missing_keys_are_listed_and_counted(state_dict):
    partial = {k: v for k, v in state_dict.items() if not k.startswith("layer4.")}
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved({"model_state_dict": partial}), overrides={"class_names": FIVE})
    message = str(caught.value)
    assert message.startswith(f"the checkpoint does not match architecture '{DEFAULT_ARCH}': missing keys: ")
    assert "layer4.0.conv1.weight" in message
    missing = sum(k.startswith("layer4.") for k in state_dict)
    assert message.endswith(f"and {missing - 3} more")


def test_unexpected_keys_are_listed(state_dict):
    extra = {**state_dict, "extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight$"):
        load_checkpoint(saved({"model_state_dict": extra}), overrides={"class_names": FIVE})


def test_wrong_architecture_is_named(tutorial_file):
    with pytest.raises(CheckpointError, match=r"does not match architecture 'resnet50': missing keys: .*more"):
        load_checkpoint(tutorial_file, overrides={"class_names": FIVE, "arch": "resnet50"})


def test_shape_mismatch_is_named(state_dict):
    reshaped = {**state_dict, "conv1.weight": torch.zeros(64, 3, 3, 3)}
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved({"model_state_dict": reshaped}), overrides={"class_names": FIVE})
    assert str(caught.value) == (
        f"the checkpoint does not match architecture '{DEFAULT_ARCH}': shape mismatch: "
        "conv1.weight is [64, 3, 3, 3] in the file but [64, 3, 7, 7] in the model"
    )


def test_unknown_architecture_is_refused(tutorial_file):
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet9000'"):
        load_checkpoint(tutorial_file, overrides={"class_names": FIVE, "arch": "resnet9000"})


def test_original_tutorial_layout_gets_a_hint_and_loads_under_its_arch():
    torch.manual_seed(0)
    file = saved({"model_state_dict": build_model(TUTORIAL_ARCH, 5).state_dict()})
    with pytest.raises(CheckpointError, match=f"try architecture '{TUTORIAL_ARCH}'"):
        load_checkpoint(file, overrides={"class_names": FIVE})
    loaded = load_checkpoint(file, overrides={"class_names": FIVE, "arch": TUTORIAL_ARCH})
    assert loaded.metadata.arch == TUTORIAL_ARCH


class RunsCodeOnLoad:
    """Unpickling this calls open(marker, "w"): proof that code ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, state_dict, zip_format):
    marker = tmp_path / "pwned"
    file = saved(
        {"model_state_dict": state_dict, "class_names": FIVE, "payload": RunsCodeOnLoad(marker)},
        _use_new_zipfile_serialization=zip_format,
    )
    opener = f"{builtins.open.__module__}.open"  # what the pickle names: io.open
    with pytest.raises(CheckpointError, match=rf"refused: loading it would import {opener}; only weights"):
        load_checkpoint(file)
    assert not marker.exists()


class RunsShellOnLoad:
    """Unpickling this calls os.system (pickled as posix.system on Linux)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalOnLoad:
    def __reduce__(self):
        return (builtins.eval, ("1 + 1",))


class OrderedDictSubclass(collections.OrderedDict):
    """Harmless, but a class of the file's own: loading it would import this module."""


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize(
    ("payload", "global_name"),
    [
        (RunsShellOnLoad, f"{os.system.__module__}.system"),  # a module torch blocks outright
        (lambda marker: EvalOnLoad(), "builtins.eval"),  # torch names builtins without the module
        (lambda marker: OrderedDictSubclass(a=1), f"{__name__}.OrderedDictSubclass"),
    ],
    ids=["os.system", "eval", "OrderedDict-subclass"],
)
def test_refusal_names_the_global_the_pickle_would_import(tmp_path, state_dict, payload, global_name, zip_format):
    marker = tmp_path / "pwned"
    file = saved(
        {"model_state_dict": state_dict, "class_names": FIVE, "payload": payload(marker)},
        _use_new_zipfile_serialization=zip_format,
    )

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(file)

    assert f"refused: loading it would import {global_name}; only weights are accepted" in str(caught.value)
    assert not marker.exists()


def test_a_plain_pickle_that_runs_code_is_refused_by_name(tmp_path):
    """Not even written by torch.save: still refused, naming the global."""
    marker = tmp_path / "pwned"
    data = pickle.dumps({"model_state_dict": RunsShellOnLoad(marker)}, protocol=2)

    with pytest.raises(CheckpointError, match=rf"would import {os.system.__module__}\.system; only weights"):
        read_checkpoint(data)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("torch_message", "expected"),
    [
        ("Weights only load failed. Unsupported global: GLOBAL (reworded)", "needs arbitrary Python objects"),
        ("Weights only load failed. Trying to call reduce for unrecognized function <x>", "could run code"),
        ("Weights only load failed. Unsupported operand 149", "not a PyTorch checkpoint"),
    ],
)
def test_an_unpickling_refusal_torch_words_differently_is_still_explained(monkeypatch, torch_message, expected):
    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(torch_message)

    monkeypatch.setattr(torch, "load", refuse)

    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(b"anything")


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not a checkpoint", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"PK\x03\x04 broken zip"],
    ids=["empty", "text", "jpeg", "broken-zip"],
)
def test_non_torch_files_are_refused(data):
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint(data)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([1, 2, 3], "holds a list"),
        ({"epoch": 3, "optimizer": {}}, r"no 'model_state_dict' \(keys found: epoch, optimizer\)"),
        ({"model_state_dict": {"w": 3}}, "holds non-tensors: w"),
    ],
)
def test_wrong_content_is_explained(content, message):
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(saved(content))


def test_read_returns_partial_metadata(state_dict):
    _, found = read_checkpoint(saved({"model_state_dict": state_dict, "input_size": 64, "epoch": 9}))
    assert found == {"input_size": 64}
