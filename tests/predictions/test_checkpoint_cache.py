"""Checkpoints on the object store: one download per machine, named by content hash, checked against it."""

import hashlib
import threading
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from predictions import checkpoint_cache, inference
from predictions.checkpoint_cache import CheckpointCacheError, checkpoint_local_path
from tests.object_store import s3_bucket, s3_storage  # noqa: F401


@pytest.fixture
def cache_dir(settings, tmp_path) -> Path:
    settings.CHECKPOINT_CACHE_DIR = tmp_path / "checkpoint-cache"
    return settings.CHECKPOINT_CACHE_DIR


@pytest.fixture
def weights(s3_bucket):
    return s3_storage("weights")


def cached_files(cache_dir: Path) -> list[str]:
    return sorted(path.name for path in cache_dir.glob("*.pth"))


def test_a_checkpoint_on_this_disk_is_read_where_it_lies(tmp_path, cache_dir):
    storage = FileSystemStorage(location=tmp_path / "weights")
    name = storage.save("model.pth", ContentFile(b"weights"))
    assert checkpoint_local_path(storage=storage, name=name) == tmp_path / "weights" / "model.pth"
    assert not cache_dir.exists()


def test_downloaded_once_and_named_by_its_sha256(weights, cache_dir):
    content = b"checkpoint bytes" * 1000
    name = weights.save("model.pth", ContentFile(content))
    before = checkpoint_cache.download_count()

    first = checkpoint_local_path(storage=weights, name=name)
    assert first == cache_dir / f"{hashlib.sha256(content).hexdigest()}.pth"
    assert first.read_bytes() == content
    assert checkpoint_local_path(storage=weights, name=name) == first
    # The same weights registered again under another name: no second download.
    other = weights.save("copy-of-model.pth", ContentFile(content))
    assert checkpoint_local_path(storage=weights, name=other) == first
    assert checkpoint_cache.download_count() == before + 1
    assert cached_files(cache_dir) == [first.name]


def test_workers_starting_at_once_share_one_download(weights, cache_dir):
    name = weights.save("model.pth", ContentFile(b"x" * 100_000))
    before = checkpoint_cache.download_count()
    barrier = threading.Barrier(4)
    results: list[Path] = []

    def load():
        barrier.wait()
        results.append(checkpoint_local_path(storage=weights, name=name))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 4
    assert checkpoint_cache.download_count() == before + 1


def test_an_object_written_by_another_tool_is_named_by_its_etag(s3_bucket, weights, cache_dir):
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="weights/synced.pth", Body=b"from aws s3 sync")
    path = checkpoint_local_path(storage=weights, name="synced.pth")
    assert path.name == f"etag-{hashlib.md5(b'from aws s3 sync').hexdigest()}.pth"
    assert path.read_bytes() == b"from aws s3 sync"


def test_a_replaced_object_is_downloaded_again(s3_bucket, weights, cache_dir):
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="weights/model.pth", Body=b"old weights")
    old = checkpoint_local_path(storage=weights, name="model.pth")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="weights/model.pth", Body=b"new weights")
    new = checkpoint_local_path(storage=weights, name="model.pth")
    assert new != old and new.read_bytes() == b"new weights"


def test_content_that_does_not_match_the_recorded_hash_is_refused_and_not_kept(s3_bucket, weights, cache_dir):
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name, Key="weights/model.pth", Body=b"tampered", Metadata={"sha256": "0" * 64}
    )
    with pytest.raises(CheckpointCacheError, match="SHA-256"):
        checkpoint_local_path(storage=weights, name="model.pth")
    assert cached_files(cache_dir) == []
    assert not [path for path in cache_dir.iterdir() if path.suffix == ".partial"]


def test_the_cache_keeps_the_copies_used_last(settings, weights, cache_dir):
    import os

    settings.CHECKPOINT_CACHE_KEEP = 2
    paths = {}
    for number, name in enumerate(["a.pth", "b.pth"]):
        paths[name] = checkpoint_local_path(storage=weights, name=weights.save(name, ContentFile(name.encode() * 100)))
        os.utime(paths[name], (1000 + number, 1000 + number))  # a used before b
    checkpoint_local_path(storage=weights, name="a.pth")  # a used again: b is now the oldest
    paths["c.pth"] = checkpoint_local_path(storage=weights, name=weights.save("c.pth", ContentFile(b"c" * 100)))
    assert cached_files(cache_dir) == sorted([paths["a.pth"].name, paths["c.pth"].name])


def test_a_missing_object_is_named(weights, cache_dir):
    with pytest.raises(FileNotFoundError, match="weights/gone.pth"):
        checkpoint_local_path(storage=weights, name="gone.pth")


@pytest.mark.django_db
def test_the_predictor_loads_a_checkpoint_from_the_store_through_the_cache(
    weights, cache_dir, model_version_factory, tiny_checkpoint_bytes
):
    version = model_version_factory()
    name = weights.save("tiny.pth", ContentFile(tiny_checkpoint_bytes))
    version.checkpoint.storage, version.checkpoint.name = weights, name
    inference.clear_cache()
    try:
        predictor = inference.get_predictor(version)
    finally:
        inference.clear_cache()
    assert list(predictor.class_names) == version.class_names
    assert cached_files(cache_dir) == [f"{hashlib.sha256(tiny_checkpoint_bytes).hexdigest()}.pth"]


def test_a_file_under_weights_dir_is_uploaded_when_the_weights_are_on_the_store(settings, s3_bucket, weights):
    """`register_model weights/x.pth` and the demo model register a file of this disk: the store must get a copy."""
    from predictions.models import ModelVersion
    from predictions.services.model_versions import _checkpoint_store

    local = Path(settings.WEIGHTS_DIR) / "on-this-disk.pth"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(b"local weights")
    try:
        version = ModelVersion(name="from disk")
        version.checkpoint.storage = weights
        _checkpoint_store(version, checkpoint_file=None, checkpoint_path=local)
    finally:
        local.unlink()
    assert s3_bucket.keys() == [f"weights/{version.checkpoint.name}"]
    assert weights.open(version.checkpoint.name).read() == b"local weights"
