"""Model builders and the one definition of preprocessing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ml.models import DEFAULT_ARCH, TUTORIAL_ARCH, ResNet18CustomHead, build_model
from ml.preprocess import IMAGENET_MEAN, Preprocessing, eval_transform, train_transform


@pytest.mark.parametrize("arch", [DEFAULT_ARCH, TUTORIAL_ARCH, "mobilenet_v3_small"])
def test_models_have_the_asked_number_of_outputs(arch):
    model = build_model(arch, 3).eval()
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_custom_head_is_resnet18_with_dropout_and_linear():
    model = build_model(DEFAULT_ARCH, 5)
    assert isinstance(model, ResNet18CustomHead)
    assert [type(layer).__name__ for layer in model.fc] == ["Dropout", "Linear"]
    assert (model.fc[1].in_features, model.fc[1].out_features) == (512, 5)


def test_unknown_arch_is_named():
    with pytest.raises(ValueError, match="unknown architecture 'resnet-18'"):
        build_model("resnet-18", 5)


def test_eval_transform_resizes_then_centre_crops():
    p = Preprocessing(input_size=32)
    assert p.resize_size == 37
    tensor = eval_transform(p)(Image.new("RGB", (80, 40), (124, 116, 104)))
    assert tensor.shape == (3, 32, 32)
    assert tensor.dtype == torch.float32
    assert tensor.abs().max() < 0.01  # ImageNet mean colour normalises to ~0


@pytest.mark.parametrize("augment", ["light", "shapes"])
def test_train_transform_gives_model_sized_tensors(augment):
    tensor = train_transform(Preprocessing(input_size=32), augment=augment)(Image.new("RGB", (80, 40)))
    assert tensor.shape == (3, 32, 32)
    assert tensor.dtype == torch.float32


def test_unknown_augmentation_is_named():
    with pytest.raises(ValueError, match="unknown augmentation 'heavy'"):
        train_transform(Preprocessing(input_size=32), augment="heavy")


def test_preprocessing_dict_round_trip():
    p = Preprocessing(input_size=112)
    assert p.to_dict() == {"input_size": 112, "mean": list(IMAGENET_MEAN), "std": list(p.std)}
    assert Preprocessing.from_dict(p.to_dict()) == p
