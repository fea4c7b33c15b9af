"""Model builders. Weights are always random here: checkpoints bring the trained ones.

Which layer of each architecture gives the embedding is decided in :mod:`ml.features`.
"""

from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models import ResNet
from torchvision.models.resnet import BasicBlock

DEFAULT_ARCH = "resnet18_custom_head"
# The layout of the original tutorial's reference code (backbone as a Sequential of
# resnet18's children, a two-layer head), so its checkpoints load as they are.
TUTORIAL_ARCH = "resnet18_tutorial_head"

_RESNET18_FEATURES = 512


class ResNet18CustomHead(ResNet):
    """torchvision resnet18 whose ``fc`` is dropout + linear.

    Subclassing keeps torchvision's parameter names (``conv1.weight`` ... ``fc.1.bias``).
    """

    def __init__(self, num_classes: int, dropout: float = 0.2) -> None:
        # resnet18(weights=None), with each residual branch starting at zero: trains
        # from scratch in far fewer steps, and the parameter names do not change.
        super().__init__(BasicBlock, [2, 2, 2, 2], zero_init_residual=True)
        self.fc = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(_RESNET18_FEATURES, num_classes)
        )


class ResNet18TutorialHead(nn.Module):
    def __init__(self, num_classes: int, hidden: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.head = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(_RESNET18_FEATURES, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.head(self.backbone(x))


_CUSTOM_ARCHS = {DEFAULT_ARCH: ResNet18CustomHead, TUTORIAL_ARCH: ResNet18TutorialHead}


def available_archs() -> list[str]:
    """Every name build_model accepts: ours plus torchvision's classification models."""
    return sorted(_CUSTOM_ARCHS) + sorted(_torchvision_classifiers())


def _torchvision_classifiers() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised classifier; never downloads anything."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if arch in _CUSTOM_ARCHS:
        return _CUSTOM_ARCHS[arch](num_classes)
    if arch not in _torchvision_classifiers():
        raise ValueError(
            f"unknown architecture {arch!r}: use {DEFAULT_ARCH!r}, {TUTORIAL_ARCH!r} "
            "or a torchvision classification model name such as 'resnet50'"
        )
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
