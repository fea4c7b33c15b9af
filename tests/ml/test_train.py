"""Training: the tutorial's loop, samples from folders and CSVs, the split and the CLI."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from ml.checkpoints import load_checkpoint
from ml.decode import open_image
from ml.models import build_model
from ml.samples import ImageSamplesDataset, load_samples, stratified_split
from ml.train import HISTORY_KEYS, main, one_cycle, train_from_samples, train_model
from tests.ml.images import HUE_CLASSES, encode, hue_dataset, noise_rgb


def test_train_model_returns_every_metric_series(trained_tiny):
    _, _, history = trained_tiny
    assert set(history) == set(HISTORY_KEYS)
    assert all(len(series) == 4 for series in history.values())
    assert all(0 <= value <= 1 for key in ("train_acc", "val_acc", "val_f1") for value in history[key])
    assert history["train_loss"][-1] < history["train_loss"][0]


def tensor_loader(count: int, seed: int) -> DataLoader:
    from ml.preprocess import Preprocessing, eval_transform

    transform = eval_transform(Preprocessing(input_size=32))
    return DataLoader([(transform(image), label) for image, label in hue_dataset(count, seed)], batch_size=8)


def test_optimizer_instance_callback_and_cuda_fallback():
    model = build_model("resnet18_custom_head", len(HUE_CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    calls = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train_model(
            model, torch.nn.CrossEntropyLoss(), optimizer, 0.01, tensor_loader(16, 0), None,
            len(HUE_CLASSES), epochs=1, device="cuda", progress=False,
            on_epoch=lambda epoch, h: calls.append((epoch, len(h["train_loss"]))),
        )  # fmt: skip
    assert calls == [(1, 1)]
    assert math.isnan(history["val_acc"][0])  # no validation loader
    if not torch.cuda.is_available():
        assert any("CUDA is not available" in str(w.message) for w in caught)


@pytest.fixture
def image_folder(tmp_path):
    """Six tiny PNGs per hue class in ImageFolder layout, plus a corrupt one."""
    root = tmp_path / "data"
    counts = {name: 0 for name in HUE_CLASSES}
    for image, label in hue_dataset(80, seed=7):
        name = HUE_CLASSES[label]
        if counts[name] < 6:
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f"{counts[name]}.png").write_bytes(encode(image, "PNG"))
            counts[name] += 1
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def test_load_samples_from_folder_and_csv(image_folder, tmp_path):
    from_folder, classes = load_samples(image_folder)
    assert classes == sorted(HUE_CLASSES)
    assert len(from_folder) == 31

    first, second = from_folder[0][0], from_folder[1][0]
    csv_path = tmp_path / "export.csv"
    relative = first.relative_to(tmp_path)
    csv_path.write_text(f"path,label\n{relative},red\n{second},blue\n")
    assert load_samples(csv_path) == ([(tmp_path / relative, 1), (second, 0)], ["blue", "red"])


def test_csv_without_header_is_refused(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("a.jpg,cat\n")
    with pytest.raises(ValueError, match="'path' and 'label'"):
        load_samples(csv_path)


def test_stratified_split_takes_the_same_share_of_each_class():
    samples = [(f"{label}-{i}", label) for label in range(3) for i in range(10)] + [("lonely", 3)]
    train, val = stratified_split(samples, val_fraction=0.2, seed=1)
    assert sorted(train + val) == sorted(samples)
    assert [sum(label == c for _, label in val) for c in range(4)] == [2, 2, 2, 0]
    assert stratified_split(samples, val_fraction=0.2, seed=1) == (train, val)


def test_train_from_samples_skips_bad_files_and_describes_the_model(image_folder):
    samples, classes = load_samples(image_folder)
    epochs_seen = []
    with pytest.warns(UserWarning, match="broken.png: truncated or corrupt"):
        model, history, metadata = train_from_samples(
            samples, class_names=classes, preprocessing=_tiny(), epochs=1, batch_size=13,  # 26 = 2x13: every file is read
            device="cpu", progress=False, on_epoch=lambda epoch, _: epochs_seen.append(epoch),
        )  # fmt: skip
    assert epochs_seen == [1]
    assert not model.training
    assert metadata.class_names == classes
    assert metadata.input_size == 32
    assert metadata.metrics["val_acc"] == history["val_acc"][-1]
    assert metadata.metrics["history"] == history
    assert metadata.metrics["val_size"] == 5


def test_train_from_samples_starts_from_the_given_weights(image_folder, recwarn):
    samples, classes = load_samples(image_folder)
    torch.manual_seed(7)
    start = build_model("resnet18_custom_head", len(classes)).state_dict()

    # A learning rate of 0 moves no weight: what comes out is where training started.
    model, _, _ = train_from_samples(
        samples, class_names=classes, preprocessing=_tiny(), epochs=1, lr=0.0, batch_size=13,
        device="cpu", progress=False, initial_state=start,
    )  # fmt: skip

    trained = dict(model.named_parameters())
    assert all(torch.equal(trained[name], start[name]) for name in trained)
    fresh = build_model("resnet18_custom_head", len(classes)).state_dict()
    assert not torch.equal(fresh["conv1.weight"], start["conv1.weight"])  # so the check above means something


@pytest.fixture
def counted_decodes(monkeypatch):
    import ml.samples

    names = []

    def counting_open_image(source, *, name, **kwargs):
        names.append(name)
        return open_image(source, name=name, **kwargs)

    monkeypatch.setattr(ml.samples, "open_image", counting_open_image)
    return names


def test_dataset_decodes_each_image_once_while_the_cache_lasts(counted_decodes):
    from ml.preprocess import train_transform

    p = _tiny()
    photo = encode(noise_rgb((640, 480)), "JPEG")
    cached = ImageSamplesDataset([(photo, 0), (photo, 1)], train_transform(p), p, cache_bytes=10**6)
    uncached = ImageSamplesDataset([(photo, 0)], train_transform(p), p, cache_bytes=0)
    for _ in range(3):  # epochs
        assert [cached[i][1] for i in range(2)] == [0, 1]
        assert uncached[0][0].shape == (3, 32, 32)
    assert counted_decodes == ["sample 0", "sample 1", "sample 0", "sample 0", "sample 0"]


def test_dataset_feeds_validation_exactly_as_serving_does(counted_decodes):
    from ml.preprocess import eval_transform

    p = _tiny()
    photo = encode(noise_rgb((800, 600)), "JPEG")
    dataset = ImageSamplesDataset([(photo, 3)], eval_transform(p), p, cache_bytes=10**6)
    served = eval_transform(p)(open_image(photo, name="photo", draft_size=2 * p.input_size))
    tensor, label = dataset[0]
    assert label == 3
    assert torch.equal(tensor, served)


def test_broken_file_is_skipped_with_one_warning(tmp_path):
    from ml.preprocess import eval_transform

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    dataset = ImageSamplesDataset([(broken, 0)], eval_transform(_tiny()), _tiny(), cache_bytes=10**6)
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert dataset[0] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset[0] is None  # second epoch: remembered, not decoded or warned again


def test_cli_writes_a_loadable_checkpoint(image_folder, tmp_path, capsys):
    out = tmp_path / "weights" / "hue.pth"
    main(["--data", str(image_folder), "--epochs", "1", "--input-size", "32", "--batch-size", "8",
          "--out", str(out), "--device", "cpu", "--augment", "shapes"])  # fmt: skip
    assert "val accuracy" in capsys.readouterr().out
    loaded = load_checkpoint(out)
    assert loaded.metadata.class_names == sorted(HUE_CLASSES)
    assert loaded.metadata.input_size == 32
    assert set(loaded.metadata.metrics) >= {"val_acc", "val_f1", "history"}


def _tiny():
    from ml.preprocess import Preprocessing

    return Preprocessing(input_size=32)


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 5, 8, 40])
def test_the_schedule_survives_any_number_of_steps(total_steps):
    """A tiny training run (a handful of optimizer steps in all) divided by zero in OneCycleLR."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = one_cycle(optimizer, total_steps)
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
    assert all(0 < group["lr"] <= 0.1 for group in optimizer.param_groups)


def test_a_callers_split_is_kept_and_a_tiny_one_falls_back_to_stratified():
    from ml.samples import split_samples

    samples = [(f"img{i}", i % 2) for i in range(10)]
    marks = [i in (3, 4) for i in range(10)]
    train, val = split_samples(samples, validation=marks)
    assert val == [samples[3], samples[4]] and len(train) == 8
    for marks in ([False] * 10, [True] * 10):  # no validation, or nothing left to train on
        train, val = split_samples(samples, validation=marks, val_fraction=0.2)
        assert len(val) == 2 and {label for _, label in val} == {0, 1} and len(train) == 8
    with pytest.raises(ValueError):
        split_samples(samples, validation=[True])
