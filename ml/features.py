"""Embeddings: what a classifier computes one layer before its class scores.

How the feature layer is chosen
-------------------------------
The model is traced with torch.fx (the Predictor traces it anyway, to fold batch
norms). Its *classifier* is the last layer, in execution order, that produces the
class scores: an ``nn.Linear`` with ``out_features == num_classes``, or a 1x1
``nn.Conv2d`` with ``out_channels == num_classes``. The embedding is that layer's
**input** (flattened per image; for the convolution, averaged over the positions
first). Dropout in front of it is the identity in eval mode, so it does not matter
whether the input is taken before or after it. What this picks (traced and compared
with the unsplit model for each family; tests/ml/test_features.py repeats the cheap
ones):

- ``resnet18_custom_head`` (the default): ``fc.1``, the Linear after ``fc.0``'s
  dropout: the 512 pooled ResNet18 features.
- ``resnet18_tutorial_head``: ``head.4``: the 256 hidden units after ReLU + dropout.
- resnet*, resnext*, wide_resnet*, regnet*, shufflenet*, googlenet, inception_v3:
  ``fc`` (pooled features: 512 for resnet18; the auxiliary heads do not run in eval).
- densenet*: ``classifier`` (1024 for densenet121).
- mobilenet*, efficientnet*, mnasnet*, convnext*, vgg*, alexnet, maxvit_t: the last
  Linear of ``classifier`` (1024 for mobilenet_v3_small, after its hidden layer).
- vit_*: ``heads.head``: the class token (768 for vit_b_*).
- swin*: ``head`` (768 for swin_t).
- squeezenet*: ``classifier.1``, a 1x1 convolution: 512 channels averaged.

The traced graph is rewritten to return ``(features, logits)``, so one forward pass
gives both, and batch-norm folding then runs on the rewritten graph. A model gets no
embedding (``None``) when torch.fx cannot trace it, when no such layer exists, or
when that layer runs more than once in a pass (which call would be "the" input?).

Storage: float16, little-endian, ``dim * 2`` bytes (1 KiB for ResNet18). This module
imports torch only inside the functions that need a model, so the web process can
read stored embeddings (``embedding_from_bytes``, ``embedding_matrix``) without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import fx, nn

EMBEDDING_DTYPE = np.dtype("<f2")
FLOAT16_MAX = float(np.finfo(np.float16).max)

logger = logging.getLogger(__name__)


# --- storage (numpy only) ------------------------------------------------------------


def embedding_to_bytes(embedding: np.ndarray) -> bytes:
    """The bytes a database column stores: float16, little-endian, no header."""
    return np.asarray(embedding, dtype=EMBEDDING_DTYPE).reshape(-1).tobytes()


def embedding_from_bytes(data: bytes | bytearray | memoryview) -> np.ndarray:
    """A read-only float16 vector over ``data`` (no copy)."""
    if len(data) % EMBEDDING_DTYPE.itemsize:
        raise ValueError(f"an embedding is a whole number of float16 values, got {len(data)} bytes")
    return np.frombuffer(data, dtype=EMBEDDING_DTYPE)


def embedding_matrix(blobs: Sequence[bytes | bytearray | memoryview]) -> np.ndarray:
    """(len(blobs), dim) float16 from stored embeddings of one model: a single copy."""
    if not blobs:
        return np.empty((0, 0), dtype=EMBEDDING_DTYPE)
    sizes = {len(blob) for blob in blobs}
    if len(sizes) > 1:
        raise ValueError(f"embeddings of different sizes ({sorted(sizes)} bytes): mixed models?")
    flat = embedding_from_bytes(b"".join(blobs))
    return flat.reshape(len(blobs), -1)


# --- choosing the layer (torch) ---------------------------------------------------------


def feature_layer(model: nn.Module, num_classes: int) -> str | None:
    """Qualified name of the classifier whose input is the embedding (``"fc.1"``), or None."""
    from torch import fx

    try:
        traced = fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow and the like
        return None
    node = _classifier_node(traced, num_classes)
    return None if node is None else str(node.target)


def returning_features(traced: fx.GraphModule, num_classes: int) -> fx.GraphModule | None:
    """A copy of ``traced`` whose forward returns ``(features, original output)``.

    ``features`` is (batch, dim), the input of the layer :func:`feature_layer` names.
    The copy shares parameters with ``traced``; ``traced`` itself is not changed.
    None when there is no single such layer.
    """
    import copy

    import torch
    from torch import fx

    node = _classifier_node(traced, num_classes)
    if node is None:
        return None
    graph = copy.deepcopy(traced.graph)
    classifier = next(n for n in graph.nodes if n.op == "call_module" and n.target == node.target)
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):
        features = classifier.args[0]
        if isinstance(traced.get_submodule(str(node.target)), torch.nn.Conv2d):
            features = graph.call_method("mean", (features, (-2, -1)))
        features = graph.call_function(torch.flatten, (features, 1))
    output.args = ((features, output.args[0]),)
    graph.lint()
    return fx.GraphModule(traced, graph)


def _classifier_node(traced: fx.GraphModule, num_classes: int) -> fx.Node | None:
    modules = dict(traced.named_modules())
    calls = [node for node in traced.graph.nodes if node.op == "call_module"]
    producing = [node for node in calls if _scores_classes(modules[node.target], num_classes)]
    if not producing:
        return None
    last = producing[-1]
    if sum(node.target == last.target for node in calls) > 1:
        logger.info("%s runs more than once in a forward pass: no embedding", last.target)
        return None
    return last


def _scores_classes(module: nn.Module, num_classes: int) -> bool:
    from torch import nn

    if isinstance(module, nn.Linear):
        return module.out_features == num_classes
    if isinstance(module, nn.Conv2d):
        return module.out_channels == num_classes and module.kernel_size == (1, 1)
    return False
