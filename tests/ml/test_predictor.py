"""Predictor: probabilities, embeddings, batching, ordering, devices and reduced precision."""

from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import ml.cores
from ml import predictor as predictor_module
from ml.checkpoints import save_checkpoint
from ml.decode import ImageDecodeError
from ml.features import embedding_from_bytes, embedding_to_bytes
from ml.predictor import Prediction, Predictor, resolve_device, resolve_precision
from tests.ml.images import HUE_CLASSES, encode, hue_dataset


@pytest.fixture(scope="module")
def random_predictor(random_model, tiny_metadata):
    return Predictor(random_model, tiny_metadata, device="cpu", precision="fp32", batch_size=4)


@pytest.fixture(scope="module")
def images():
    return [image for image, _ in hue_dataset(10, seed=5)]


def test_probabilities_sum_to_one_and_labels_come_from_class_names(random_predictor, images):
    predictions = random_predictor.predict(images)
    assert len(predictions) == len(images)
    for prediction in predictions:
        assert math.isclose(sum(prediction.probabilities), 1.0, abs_tol=1e-5)
        assert len(prediction.probabilities) == len(HUE_CLASSES)
        assert prediction.label == HUE_CLASSES[prediction.index]
        assert prediction.confidence == max(prediction.probabilities)


def test_prediction_helpers():
    prediction = Prediction("b", 1, 0.6, (0.3, 0.6, 0.1), class_names=("a", "b", "c"))
    assert prediction.margin == pytest.approx(0.3)
    assert prediction.top_k(2) == [("b", 0.6), ("a", 0.3)]
    assert prediction.as_dict() == {"label": "b", "confidence": 0.6, "probabilities": {"a": 0.3, "b": 0.6, "c": 0.1}}
    assert "class_names" not in repr(prediction)


def test_batched_and_one_by_one_agree(random_predictor, random_model, tiny_metadata, images):
    batched = random_predictor.predict(images)  # batches of 4, the last one partial
    single = Predictor(random_model, tiny_metadata, device="cpu", precision="fp32", batch_size=1)
    for one, many in zip(single.predict(images), batched):
        assert one.index == many.index
        assert torch.allclose(torch.tensor(one.probabilities), torch.tensor(many.probabilities), atol=1e-5)


def test_batch_norms_are_folded_into_the_convolutions_without_changing_the_outputs(tiny_metadata, images):
    from ml.models import DEFAULT_ARCH, build_model
    from ml.preprocess import eval_transform

    torch.manual_seed(1)
    model = build_model(DEFAULT_ARCH, len(HUE_CLASSES)).eval()
    for module in model.modules():  # trained-looking statistics, so folding has something to fold
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)

    predictor = Predictor(model, tiny_metadata, device="cpu", precision="fp32")

    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in predictor.model.modules())
    assert any(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())  # the caller's is untouched
    transform = eval_transform(tiny_metadata.preprocessing)
    with torch.inference_mode():
        expected = torch.softmax(model(torch.stack([transform(image) for image in images])), dim=1)
    folded = torch.tensor([prediction.probabilities for prediction in predictor.predict(images)])
    assert torch.allclose(folded, expected, atol=1e-5)


def test_a_model_torch_fx_cannot_trace_runs_unfolded(tiny_metadata, images):
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, len(HUE_CLASSES), 3)
            self.norm = torch.nn.BatchNorm2d(len(HUE_CLASSES))

        def forward(self, x):
            features = self.norm(self.conv(x))
            if features.sum() > 0:  # control flow on the data: torch.fx cannot trace it
                features = features * 2
            return features.mean(dim=(2, 3))

    model = DataDependent().eval()
    predictor = Predictor(model, tiny_metadata, device="cpu", precision="fp32")

    assert predictor.model is model
    assert len(predictor.predict(images)) == len(images)


def test_predict_sources_keeps_order_and_reports_bad_files(random_predictor, images, tmp_path):
    path = tmp_path / "on-disk.png"
    path.write_bytes(encode(images[2], "PNG"))
    sources = [
        ("a.png", encode(images[0], "PNG")),
        ("empty.jpg", b""),
        ("b.png", io.BytesIO(encode(images[1], "PNG"))),
        ("notes.jpg", b"hello\n"),
        ("on-disk.png", path),
        ("c.png", encode(images[3], "PNG")),
        ("d.png", encode(images[4], "PNG")),
    ]
    results = list(random_predictor.predict_sources(iter(sources)))  # any iterable, even lazy

    assert [name for name, _ in results] == [name for name, _ in sources]
    errors = {name: str(result) for name, result in results if isinstance(result, ImageDecodeError)}
    assert errors == {"empty.jpg": "empty.jpg: empty file", "notes.jpg": "notes.jpg: not an image (looks like text)"}
    expected = random_predictor.predict(images[:5])
    got = [result for _, result in results if isinstance(result, Prediction)]
    for want, have in zip(expected, got, strict=True):
        assert want.index == have.index
        assert torch.allclose(torch.tensor(want.probabilities), torch.tensor(have.probabilities), atol=1e-5)


def test_predict_sources_hands_each_decoded_image_to_the_hook(random_predictor, images):
    sources = [
        ("a.png", encode(images[0], "PNG")),
        ("empty.jpg", b""),
        ("b.jpg", encode(images[1].resize((400, 300)), "JPEG")),
    ]
    seen = {}

    def on_decoded(index, name, image):
        seen[index] = (name, image.mode, image.size)

    with_hook = list(random_predictor.predict_sources(sources, on_decoded=on_decoded))

    # A file that does not decode is not handed over; the others by stream position.
    assert seen == {0: ("a.png", "RGB", images[0].size), 2: ("b.jpg", "RGB", (100, 75))}
    without = list(random_predictor.predict_sources(sources))
    # Same outcomes; probabilities equal up to float rounding, since which images share a
    # batch depends on how far the decode threads got (a different batch shape may pick
    # a different kernel: a 1.5e-8 difference failed an exact comparison once).
    assert [str(r) if not isinstance(r, Prediction) else r.index for _, r in with_hook] == [
        str(r) if not isinstance(r, Prediction) else r.index for _, r in without
    ]
    for (_, hooked), (_, plain) in zip(with_hook, without, strict=True):
        if isinstance(plain, Prediction):
            assert torch.allclose(torch.tensor(hooked.probabilities), torch.tensor(plain.probabilities), atol=1e-5)


def test_min_decode_size_keeps_jpegs_decoded_at_least_that_big(random_predictor, images):
    sources = [("b.jpg", encode(images[1].resize((400, 300)), "JPEG"))]
    sizes = []

    list(
        random_predictor.predict_sources(
            sources, min_decode_size=100, on_decoded=lambda index, name, image: sizes.append(image.size)
        )
    )

    # Input 32 alone would let it decode at 1/4 scale (100x75); 100 px needs 1/2.
    assert sizes == [(200, 150)]


def test_a_failing_hook_does_not_break_prediction(random_predictor, images, caplog):
    sources = [("a.png", encode(images[0], "PNG")), ("b.png", encode(images[1], "PNG"))]

    def broken(index, name, image):
        raise RuntimeError("thumbnail storage is down")

    with caplog.at_level("ERROR", logger="ml.predictor"):
        results = list(random_predictor.predict_sources(sources, on_decoded=broken))

    assert [(name, type(result)) for name, result in results] == [("a.png", Prediction), ("b.png", Prediction)]
    assert "on_decoded hook failed for a.png" in caplog.text


def test_the_model_starts_on_the_first_decoded_images_without_waiting_for_a_whole_batch(
    random_model, tiny_metadata, images, monkeypatch
):
    predictor = Predictor(random_model, tiny_metadata, device="cpu", precision="fp32", batch_size=8)
    sources = [(f"{index}.png", encode(image, "PNG")) for index, image in enumerate(images)]
    first_batch_predicted = threading.Event()
    batch_sizes = []
    predict_batch = predictor._predict_batch

    def recording_predict_batch(batch):
        batch_sizes.append(len(batch))
        first_batch_predicted.set()
        return predict_batch(batch)

    def slow_after_the_first_two(index, name, image):
        if index >= 2:  # still decoding when the model becomes free
            first_batch_predicted.wait(timeout=10)

    monkeypatch.setattr(predictor, "_predict_batch", recording_predict_batch)
    results = list(predictor.predict_sources(sources, on_decoded=slow_after_the_first_two))

    # A quarter of a batch (2 of 8) is enough to start, and batches come in quarters
    # (few shapes for the backend to build kernels for); every image is still predicted once, in order.
    assert batch_sizes[0] == 2
    assert all(size % 2 == 0 for size in batch_sizes)  # 10 images: the stream's end is a whole quarter too
    assert sum(batch_sizes) == len(images) and max(batch_sizes) <= 8
    assert [name for name, _ in results] == [name for name, _ in sources]
    assert [r.probabilities for _, r in results] == [p.probabilities for p in predictor.predict(images)]


def test_predict_sources_with_only_bad_files(random_predictor):
    results = list(random_predictor.predict_sources([("x.jpg", b"")]))
    assert [(name, type(result)) for name, result in results] == [("x.jpg", ImageDecodeError)]
    assert list(random_predictor.predict_sources([])) == []


def test_from_checkpoint(random_model, tiny_metadata, tmp_path):
    path = tmp_path / "m.pth"
    save_checkpoint(path, model=random_model, metadata=tiny_metadata)
    threads = torch.get_num_threads()
    loaded = Predictor.from_checkpoint(path, device="cpu", batch_size=8)
    assert loaded.class_names == tuple(HUE_CLASSES)
    assert loaded.preprocessing == tiny_metadata.preprocessing
    assert loaded.device == torch.device("cpu")
    assert loaded.precision in ("fp32", "bf16")
    assert not loaded.model.training
    assert torch.get_num_threads() == threads  # no global state changed unasked


def test_device_resolution():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_precision_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bfloat16", cpu) == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        resolve_precision("int4", cpu)
    monkeypatch.setattr(predictor_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(predictor_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"


def test_reduced_precision_agrees_with_fp32_on_a_trained_model(trained_tiny):
    """bf16 must change the numbers (it really ran) but not the decisions."""
    model, metadata, _ = trained_tiny
    samples = hue_dataset(200, seed=3)
    images = [image for image, _ in samples]
    fp32 = Predictor(model, metadata, device="cpu", precision="fp32").predict(images)
    bf16 = Predictor(model, metadata, device="cpu", precision="bf16").predict(images)

    # The model has learnt the task, so its decisions are not coin flips...
    accuracy = sum(p.index == label for p, (_, label) in zip(fp32, samples)) / len(samples)
    assert accuracy >= 0.85
    margins = sorted(p.margin for p in fp32)
    assert margins[len(margins) // 2] > 0.2

    differences = [
        max(abs(a - b) for a, b in zip(p.probabilities, q.probabilities)) for p, q in zip(fp32, bf16)
    ]
    assert max(differences) > 1e-4, "bf16 gave bit-identical results: autocast did not run"
    agreement = sum(p.index == q.index for p, q in zip(fp32, bf16)) / len(fp32)
    assert agreement >= 0.99


def test_predict_accepts_greyscale_converted_images(random_predictor):
    grey = Image.new("L", (20, 20), 128).convert("RGB")
    assert random_predictor.predict([grey])[0].label in HUE_CLASSES


# --- embeddings ---------------------------------------------------------------------


def _classifier_inputs(model, layer, images, preprocessing):
    """What ``layer`` of the unfused ``model`` receives for ``images``: the reference embedding."""
    from ml.preprocess import eval_transform

    captured = []
    handle = model.get_submodule(layer).register_forward_hook(lambda module, args, output: captured.append(args[0]))
    try:
        transform = eval_transform(preprocessing)
        with torch.inference_mode():
            model(torch.stack([transform(image) for image in images]))
    finally:
        handle.remove()
    return captured[0].flatten(1)


def test_each_prediction_carries_the_penultimate_features(random_predictor, random_model, tiny_metadata, images):
    predictions = random_predictor.predict(images)

    expected = _classifier_inputs(random_model, "fc.1", images, tiny_metadata.preprocessing)
    got = torch.tensor(np.stack([prediction.embedding for prediction in predictions]).astype(np.float32))
    assert random_predictor.has_embeddings
    assert all(p.embedding.shape == (512,) and p.embedding.dtype == np.float16 for p in predictions)
    assert not predictions[0].embedding.flags.writeable  # a frozen Prediction's embedding stays put
    # Folded batch norms and float16 storage: equal to rounding.
    assert torch.allclose(got, expected, rtol=2e-3, atol=2e-3)
    assert np.array_equal(embedding_from_bytes(embedding_to_bytes(predictions[0].embedding)), predictions[0].embedding)


def test_embeddings_come_from_the_same_forward_pass_and_the_same_decode(random_model, tiny_metadata, images, monkeypatch):
    predictor = Predictor(random_model, tiny_metadata, device="cpu", precision="fp32", batch_size=4)
    forwards, decodes = [], []
    predictor.model.conv1.register_forward_hook(lambda module, args, output: forwards.append(len(args[0])))
    open_image = predictor_module.open_image
    monkeypatch.setattr(
        predictor_module, "open_image", lambda *args, **kwargs: decodes.append(kwargs["name"]) or open_image(*args, **kwargs)
    )
    sources = [(f"{index}.png", encode(image, "PNG")) for index, image in enumerate(images)]

    results = [result for _, result in predictor.predict_sources(sources)]

    assert sorted(decodes) == sorted(name for name, _ in sources)  # each file decoded once
    assert sum(forwards) == len(images)  # each image through the network once
    assert all(result.embedding is not None for result in results)


def test_without_embeddings_the_model_returns_logits_only(random_model, tiny_metadata, images):
    with_embeddings = Predictor(random_model, tiny_metadata, device="cpu", precision="fp32").predict(images)
    predictor = Predictor(random_model, tiny_metadata, device="cpu", precision="fp32", embeddings=False)
    without = predictor.predict(images)

    assert not predictor.has_embeddings
    assert all(prediction.embedding is None for prediction in without)
    assert [p.probabilities for p in without] == [p.probabilities for p in with_embeddings]
    assert without == with_embeddings  # the embedding does not take part in equality


def test_a_torchvision_architecture_has_embeddings_too(tiny_metadata, images):
    from ml.models import build_model

    torch.manual_seed(2)
    model = build_model("mobilenet_v3_small", len(HUE_CLASSES)).eval()
    predictor = Predictor(model, tiny_metadata, device="cpu", precision="fp32")
    predictions = predictor.predict(images)

    expected = _classifier_inputs(model, "classifier.3", images, tiny_metadata.preprocessing)
    got = torch.tensor(np.stack([p.embedding for p in predictions]).astype(np.float32))
    assert got.shape == (len(images), 1024)
    assert torch.allclose(got, expected, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_embeddings_point_the_same_way(trained_tiny, images, precision):
    model, metadata, _ = trained_tiny
    fp32 = Predictor(model, metadata, device="cpu", precision="fp32").predict(images)
    reduced = Predictor(model, metadata, device="cpu", precision=precision).predict(images)

    for full, low in zip(fp32, reduced):
        a, b = full.embedding.astype(np.float32), low.embedding.astype(np.float32)
        assert np.isfinite(b).all()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99


def test_features_beyond_float16_range_are_clamped_not_infinite(tiny_metadata, images):
    class Huge(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, len(HUE_CLASSES))

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3)) * 1e9)

    predictions = Predictor(Huge().eval(), tiny_metadata, device="cpu", precision="fp32").predict(images[:2])

    assert all(np.isfinite(p.embedding).all() and np.abs(p.embedding).max() == 65504 for p in predictions)


def test_a_model_torch_fx_cannot_trace_predicts_without_embeddings(tiny_metadata, images):
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, len(HUE_CLASSES))

        def forward(self, x):
            pooled = x.mean(dim=(2, 3))
            return self.fc(pooled if pooled.sum() > 0 else -pooled)

    predictor = Predictor(DataDependent().eval(), tiny_metadata, device="cpu", precision="fp32")

    assert not predictor.has_embeddings
    assert [p.embedding for p in predictor.predict(images[:2])] == [None, None]


@pytest.mark.parametrize(
    ("device", "cores", "expected"), [("cpu", 64, 4), ("cpu", 2, 2), ("cuda", 64, 16), ("cuda", 6, 6)]
)
def test_decode_threads_leave_the_cores_to_a_cpu_model_and_take_them_beside_a_gpu(
    random_predictor, monkeypatch, device, cores, expected
):
    monkeypatch.setattr(ml.cores.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(random_predictor, "device", torch.device(device))  # the count only: nothing runs on it

    assert random_predictor.decode_workers == expected
