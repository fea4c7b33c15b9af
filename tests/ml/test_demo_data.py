"""The demo data set: five shape classes, camera-sized JPEGs, deterministic."""

from __future__ import annotations

from PIL import Image

from ml.decode import inspect_image
from ml.demo_data import CLASS_NAMES, generate


def test_generate_writes_deterministic_camera_sized_jpegs(tmp_path):
    written = generate(tmp_path / "a", count=6, seed=3, progress=False)
    again = generate(tmp_path / "b", count=6, seed=3, progress=False)

    assert CLASS_NAMES == ("circle", "square", "triangle", "star", "cross")
    assert [label for _, label in written] == [*CLASS_NAMES, "circle"]
    for (path, label), (twin, _) in zip(written, again):
        assert path.parent.name == label
        assert path.read_bytes() == twin.read_bytes()
        info = inspect_image(path, name=path.name)
        assert info.format == "JPEG"
        assert 640 <= max(info.width, info.height) <= 1600
        assert 480 <= min(info.width, info.height) <= 1200


def test_seed_changes_the_images(tmp_path):
    (one, _), = generate(tmp_path / "a", count=1, seed=0, progress=False)
    (two, _), = generate(tmp_path / "b", count=1, seed=1, progress=False)
    assert one.read_bytes() != two.read_bytes()
    assert Image.open(one).mode == "RGB"
