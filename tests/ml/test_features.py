"""Which layer's input is the embedding, and how embeddings are stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import fx, nn

from ml.features import (
    EMBEDDING_DTYPE,
    embedding_from_bytes,
    embedding_matrix,
    embedding_to_bytes,
    feature_layer,
    returning_features,
)
from ml.models import DEFAULT_ARCH, TUTORIAL_ARCH, build_model

CLASSES = 5
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("arch", "layer", "dim"),
    [
        (DEFAULT_ARCH, "fc.1", 512),
        (TUTORIAL_ARCH, "head.4", 256),
        ("resnet18", "fc", 512),
        ("mobilenet_v3_small", "classifier.3", 1024),
        ("shufflenet_v2_x0_5", "fc", 1024),
        ("squeezenet1_1", "classifier.1", 512),  # a 1x1 convolution: averaged over positions
    ],
)
def test_the_embedding_is_the_input_of_the_classifier(arch, layer, dim):
    torch.manual_seed(0)
    model = build_model(arch, CLASSES).eval()
    captured = []
    model.get_submodule(layer).register_forward_hook(lambda module, args, output: captured.append(args[0]))
    inputs = torch.randn(2, 3, 64, 64)

    split = returning_features(fx.symbolic_trace(model), CLASSES)
    with torch.inference_mode():
        expected_logits = model(inputs)
        features, logits = split(inputs)

    assert feature_layer(model, CLASSES) == layer
    assert features.shape == (2, dim)
    reference = captured[0].mean(dim=(-2, -1)) if captured[0].ndim == 4 else captured[0]
    assert torch.allclose(features, reference.flatten(1), atol=1e-6)
    assert torch.equal(logits, expected_logits)  # the logits are the model's own


def test_the_last_classifier_to_run_wins_and_the_model_is_not_changed():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Linear(8, CLASSES)  # registered first, runs last
            self.early = nn.Linear(4, CLASSES)
            self.widen = nn.Linear(CLASSES, 8)

        def forward(self, x):
            return self.late(torch.relu(self.widen(self.early(x))))

    model = TwoHeads().eval()
    traced = fx.symbolic_trace(model)
    split = returning_features(traced, CLASSES)

    assert feature_layer(model, CLASSES) == "late"
    features, logits = split(torch.randn(3, 4))
    assert features.shape == (3, 8)
    assert traced(torch.randn(3, 4)).shape == (3, CLASSES)  # the traced module still returns logits


def test_no_embedding_without_a_single_classifier_layer():
    class Shared(nn.Module):  # the same layer twice: whose input would it be?
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(CLASSES, CLASSES)

        def forward(self, x):
            return self.fc(self.fc(x))

    class NoLinear(nn.Module):
        def forward(self, x):
            return x[:, :CLASSES]

    for model in (Shared(), NoLinear()):
        assert returning_features(fx.symbolic_trace(model), CLASSES) is None
        assert feature_layer(model, CLASSES) is None


def test_bytes_round_trip_as_little_endian_float16():
    embedding = np.array([0.5, -1.25, 3.0, 65504.0], dtype=np.float32)
    data = embedding_to_bytes(embedding)

    assert data == np.array(embedding, dtype="<f2").tobytes() and len(data) == 8
    restored = embedding_from_bytes(data)
    assert restored.dtype == EMBEDDING_DTYPE
    assert np.array_equal(restored, embedding)
    with pytest.raises(ValueError, match="whole number of float16"):
        embedding_from_bytes(b"\x00\x01\x02")


def test_embedding_matrix_stacks_stored_embeddings():
    rows = [np.full(4, value, dtype=np.float16) for value in (1, 2, 3)]
    matrix = embedding_matrix([embedding_to_bytes(row) for row in rows])

    assert matrix.shape == (3, 4) and matrix.dtype == EMBEDDING_DTYPE
    assert np.array_equal(matrix[:, 0], [1, 2, 3])
    assert embedding_matrix([]).shape == (0, 0)
    with pytest.raises(ValueError, match="different sizes"):
        embedding_matrix([embedding_to_bytes(rows[0]), embedding_to_bytes(rows[0][:2])])


def test_the_web_side_reads_embeddings_and_hashes_without_torch():
    code = "import sys, ml.features, ml.hashing, ml.decode; print(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert "ml.features" in loaded  # the check below means something
    assert "torch" not in loaded
    assert "django" not in loaded
