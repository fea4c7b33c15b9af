"""Fixtures for the ml package: tiny in-memory images and tiny models (input 32 px).

No Django here: run with ``pytest tests/ml -p no:django``.
"""

from __future__ import annotations

import pytest

from tests.ml.images import HUE_CLASSES, TINY_SIZE, hue_dataset


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The CPU is shared with other processes: with one intra-op thread torch does not
    spin-wait for a descheduled sibling, which made these tests several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_metadata():
    from ml.checkpoints import CheckpointMetadata

    return CheckpointMetadata(class_names=list(HUE_CLASSES), input_size=TINY_SIZE)


@pytest.fixture(scope="session")
def random_model():
    import torch

    from ml.models import DEFAULT_ARCH, build_model

    torch.manual_seed(0)
    return build_model(DEFAULT_ARCH, len(HUE_CLASSES)).eval()


@pytest.fixture(scope="session")
def trained_tiny(tiny_metadata):
    """(model, metadata, history): the default architecture trained briefly on hue classes.

    Its predictions are confident for most images and hesitant near hue boundaries,
    which makes comparisons of precisions meaningful.
    """
    import torch
    from torch.utils.data import DataLoader

    from ml.models import DEFAULT_ARCH, build_model
    from ml.preprocess import eval_transform
    from ml.train import train_model

    torch.manual_seed(0)
    transform = eval_transform(tiny_metadata.preprocessing)
    train = [(transform(image), label) for image, label in hue_dataset(320, seed=1)]
    val = [(transform(image), label) for image, label in hue_dataset(64, seed=2)]
    model = build_model(DEFAULT_ARCH, len(HUE_CLASSES))
    history = train_model(
        model,
        None,
        torch.optim.AdamW,
        3e-3,
        DataLoader(train, batch_size=32, shuffle=True, drop_last=True),
        DataLoader(val, batch_size=64),
        len(HUE_CLASSES),
        epochs=4,
        device="cpu",
        progress=False,
    )
    return model.eval(), tiny_metadata, history
