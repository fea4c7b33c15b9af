"""The benchmarks still run: their modules import and their building blocks work on
tiny inputs. No timing is asserted here, ever; the numbers come from ``make bench``."""

import importlib

import pytest

from bench.__main__ import BENCHMARKS  # every registered benchmark, new ones included
from bench.common import SIZE_NAMES, Row, markdown_table


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_has_every_size(name):
    module = importlib.import_module(f"bench.{name}")
    assert set(module.SIZES) == set(SIZE_NAMES)
    assert callable(module.run) and callable(module.add_arguments)


def test_a_missed_target_is_marked_in_the_table():
    slow = Row.versus("x", "ours / theirs", ours=1.0, reference=2.0, unit="s", target_ratio=3, at_most=True)
    weak = Row.versus("x", "ours / theirs", ours=1.0, reference=2.0, unit="img/s", target_ratio=0.9)
    assert slow.met is True and weak.met is False
    assert "**no**" in markdown_table([slow, weak])


def test_tutorial_baseline_answers_one_label_per_image(tmp_path, tiny_checkpoint_bytes, make_image):
    from bench.tutorial_baseline import tutorial_request
    from tests.conftest import DEMO_CLASSES

    weights = tmp_path / "model.pth"
    weights.write_bytes(tiny_checkpoint_bytes)
    files = [("a.jpg", make_image(seed=1)), ("b.JPG", make_image(seed=2))]
    labels = tutorial_request(files, weights_path=weights, temp_dir=tmp_path / "tmp", class_names=DEMO_CLASSES)
    assert len(labels) == 2 and set(labels) <= set(DEMO_CLASSES)


@pytest.fixture
def generated_rows(db, lead, reviewer, uploader):
    from bench.common import active_model_version, reviewed_images_create

    version = active_model_version(None, name="bench-smoke")
    reviewed_images_create(images=30, reviews=6, model_version=version, reviewer=reviewer, uploader=uploader)
    return version


def test_generated_rows_look_like_reviewed_predictions(generated_rows):
    from images.models import Image
    from predictions.models import Prediction, Review

    assert Image.objects.count() == Prediction.objects.count() == 30
    assert Review.objects.count() == Image.objects.filter(final_label__isnull=False, review_count=1).count() == 6


ADMIN_PAGES = ["image changelist", "image changelist (reviewer)", "review screen", "review next (JSON)"]


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_admin_pages_measured_by_the_benchmark_answer(generated_rows, lead, reviewer, page):
    from bench.admin_scale import PAGES, measure

    assert [page.name for page in PAGES].count(page) == 1
    page = next(item for item in PAGES if item.name == page)
    measurement = measure(page, {"lead": lead, "reviewer": reviewer}[page.user], repeats=1)
    assert measurement.queries > 0


def test_both_exports_write_every_row(generated_rows):
    from bench.export_scale import _ours, _plain
    from images.models import Image
    from predictions.services.exports import labels_csv_export_start

    ids = list(Image.objects.values_list("id", flat=True))
    jobs = [labels_csv_export_start(image_ids=ids, user=None).pk for _run in range(2)]
    ours, plain = _ours(jobs), _plain()
    ours(), plain()  # the warm-ups
    assert ours() > 0 and plain() > 0


def test_the_upload_alone_leaves_nothing_for_the_cluster(transactional_db, uploader, tmp_path, make_image, monkeypatch):
    """Benchmark 1 (c) uploads photos with no cluster running, before (b) starts one: the
    images and the tasks they queued must be gone, or the cluster would predict them in (b).
    Committed for real (the upload queues its work on commit), as the benchmark's are;
    ``uploader`` only makes sure the role groups are there after another test's flush."""
    from django_q.conf import Conf
    from django_q.models import OrmQ

    from bench.common import active_model_version, random_checkpoint
    from bench.pipeline import upload_alone_core_ms
    from images.models import Image
    from predictions.models import PredictionJob

    monkeypatch.setattr(Conf, "SYNC", False)  # queued in the ORM broker, as the benchmark's are
    active_model_version(random_checkpoint(tmp_path / "random.pth"))
    paths = []
    for seed in range(7):
        path = tmp_path / f"photo-{seed}.jpg"
        path.write_bytes(make_image(seed=seed))
        paths.append(path)

    core_ms = upload_alone_core_ms(paths)

    # The uploads did queue their predictions (their jobs stay, with nothing left to predict).
    assert PredictionJob.objects.count() == 2
    assert core_ms > 0
    assert not Image.objects.exists()
    assert not OrmQ.objects.exists()
