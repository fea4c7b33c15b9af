"""Embeddings: what storing them costs the pipeline, and "more like this" at scale.

(a) Pipeline cost. The worker's own chunk function (``predict_chunk_run``: decode,
    forward pass, thumbnails, Prediction rows written) over the same camera-sized
    JPEGs, in one process, with ``STORE_EMBEDDINGS`` on and off, alternating (on,
    off, off, on, ...) so drift hits both alike; the median of each. Predictions are
    deleted between passes; thumbnails and both models are made before timing.
    Target: on / off <= 1.05. On a busy machine passes vary by a third, so the
    forward pass alone is timed too (a batch of 32 at 224 px, both models, 20 times
    alternating, the fastest of each): what the embeddings add to the model's work.
(b) "More like this" in the web process: the review screen's JSON request for the
    12 most similar images (Django's test client in-process: middleware, session,
    permission, one matrix-vector product, the 12 rows read back, JSON) for random
    images among N predictions with random 512-value float16 embeddings, N = 1k and
    100k (10k at size small); the median of 50 requests after the matrix is loaded.
    The selector alone (``similar_images``) is timed too, for the notes.
    Targets: median <= 50 ms at 100k, 100k / 1k <= 3, the vectors' memory <= 150 MB.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import sys
import time

import numpy as np

from bench.common import (
    DEMO_CLASSES,
    Report,
    Row,
    active_model_version,
    cli,
    django_project,
    log,
    random_checkpoint,
    realistic_photos,
    stopwatch,
)

SIZES = {
    "small": {"photos": 16, "vectors": [1_000, 10_000], "passes": 2},
    "medium": {"photos": 96, "vectors": [1_000, 100_000], "passes": 3},
    "large": {"photos": 384, "vectors": [1_000, 100_000], "passes": 3},
}
EMBEDDING_SIZE = 512  # ResNet18's pooled features
QUERIES = 50
COST_TARGET = 1.05
LATENCY_TARGET_MS = 50
RATIO_TARGET = 3
MEMORY_TARGET_MB = 150


def add_arguments(parser) -> None:
    parser.add_argument("--photos", type=int, help="camera-sized JPEGs through the worker")
    parser.add_argument("--vectors", type=int, nargs="+", help="prediction counts to query among (smallest first)")
    parser.add_argument("--passes", type=int, help="timed worker passes with and without embeddings, each")


def run(options) -> Report:
    report = Report(metrics={"photos": options.photos, "vectors": options.vectors})
    with django_project() as root:
        checkpoint = random_checkpoint(root / "resnet18-random.pth")
        version = active_model_version(checkpoint)
        cost = pipeline_cost(version, realistic_photos(options.photos), passes=options.passes)
        cost.update(forward_cost(checkpoint))
        latency = similar_latency(options.vectors)
    report.metrics.update(cost=cost, latency=latency)
    report.rows.append(Row.versus(
        "10 embeddings", "worker chunk time: embeddings stored / not stored", ours=cost["on_s"], reference=cost["off_s"],
        unit="s", target_ratio=COST_TARGET, at_most=True,
    ))  # fmt: skip
    report.rows.append(Row.versus(
        "10 embeddings", "forward pass, batch of 32: with embeddings / without (fastest of 20)",
        ours=cost["forward_on_s"], reference=cost["forward_off_s"], unit="s", target_ratio=COST_TARGET, at_most=True,
    ))  # fmt: skip
    small, large = min(options.vectors), max(options.vectors)
    at_large = latency[str(large)]
    report.rows.append(Row(
        "10 embeddings", f"more like this (request), median at {large:,}", f"{at_large['median_ms']:.3g} ms",
        f"{LATENCY_TARGET_MS} ms", at_large["median_ms"] / LATENCY_TARGET_MS, "<= 1",
        at_large["median_ms"] <= LATENCY_TARGET_MS if large >= 100_000 else None,
    ))  # fmt: skip
    report.rows.append(Row.versus(
        "10 embeddings", f"more like this (request), median at {large:,} / at {small:,}", ours=at_large["median_ms"],
        reference=latency[str(small)]["median_ms"], unit="ms", target_ratio=RATIO_TARGET, at_most=True,
    ))  # fmt: skip
    memory_mb = at_large["vectors_bytes"] / 1e6
    report.rows.append(Row(
        "10 embeddings", f"vectors in memory at {large:,}", f"{memory_mb:.3g} MB", f"{MEMORY_TARGET_MB} MB",
        memory_mb / MEMORY_TARGET_MB, "<= 1", memory_mb <= MEMORY_TARGET_MB if large >= 100_000 else None,
    ))  # fmt: skip
    report.notes += [
        f"Embeddings cost: {options.photos} JPEGs of 1600x1200 through predict_chunk_run, {options.passes} passes "
        f"each way, alternating; medians {cost['on_s']:.2f} s with, {cost['off_s']:.2f} s without "
        f"(all passes: {cost['on_all']} / {cost['off_all']}).",
        f"More like this: load of the {large:,} vectors {at_large['load_s']:.1f} s once per process "
        f"(then kept until predictions change); int8 codes, one scale per row (predictions.selectors.similar).",
        f"The selector alone (no request around it): median {latency[str(small)]['selector_ms']:.3g} ms at "
        f"{small:,}, {at_large['selector_ms']:.3g} ms at {large:,}: the product over the vectors grows with them, "
        "the request's own cost does not.",
    ]
    if large < 100_000:
        report.notes.append("Size small queries 10k vectors: the 100k targets are judged at medium and large.")
    return report


# --- (a) the pipeline, with and without ---------------------------------------------------


def pipeline_cost(version, photos, *, passes: int) -> dict:
    from django.conf import settings

    from images.services import image_create
    from predictions.models import Prediction, PredictionJob
    from predictions.services.chunks import predict_chunk_run

    image_ids = [image_create(data=path.read_bytes(), name=path.name).image.pk for path in photos]
    chunk = settings.PREDICTION_CHUNK_SIZE

    def one_pass(store: bool) -> float:
        settings.STORE_EMBEDDINGS = store
        Prediction.objects.filter(model_version=version).delete()
        job = PredictionJob.objects.create(model_version=version, reason="bench", total=len(image_ids))
        with stopwatch() as watch:
            for start in range(0, len(image_ids), chunk):
                predict_chunk_run(job_id=job.pk, image_ids=image_ids[start : start + chunk])
        stored = Prediction.objects.filter(model_version=version, embedding__isnull=not store).count()
        assert stored == len(image_ids), f"{stored} of {len(image_ids)} rows {'with' if store else 'without'} embedding"
        return watch.seconds

    # Thumbnails made, and both predictors loaded once (the cache keeps one: each switch
    # loads the model again, before the clock starts).
    log("warming up (thumbnails, model loads)")
    one_pass(True)
    times: dict[bool, list[float]] = {True: [], False: []}
    order = [True, False, False, True] * ((passes + 1) // 2)
    for store in order[: 2 * passes]:
        _warm(version, store=store)
        times[store].append(one_pass(store))
        log(f"embeddings {'on' if store else 'off'}: {times[store][-1]:.2f} s")
    settings.STORE_EMBEDDINGS = True
    return {
        "on_s": statistics.median(times[True]), "off_s": statistics.median(times[False]),
        "on_all": [round(t, 2) for t in times[True]], "off_all": [round(t, 2) for t in times[False]],
    }  # fmt: skip


def forward_cost(checkpoint, *, repeats: int = 20) -> dict:
    import torch

    from ml.predictor import Predictor

    predictors = {
        store: Predictor.from_checkpoint(checkpoint, device="cpu", precision="fp32", embeddings=store)
        for store in (True, False)
    }
    batch = torch.randn(32, 3, 224, 224)
    times: dict[bool, list[float]] = {True: [], False: []}
    for index in range(repeats + 1):
        for store in (True, False) if index % 2 else (False, True):
            with stopwatch() as watch:
                predictors[store]._forward(batch)
            if index:  # the first round warms up
                times[store].append(watch.seconds)
    return {"forward_on_s": min(times[True]), "forward_off_s": min(times[False])}


def _warm(version, *, store: bool) -> None:
    from django.conf import settings

    from predictions.inference import get_predictor

    settings.STORE_EMBEDDINGS = store
    get_predictor(version)  # a no-op when this setting's predictor is the one loaded


# --- (b) more like this -----------------------------------------------------------------------


def similar_latency(counts: list[int]) -> dict:
    from django.test import Client
    from django.urls import reverse

    from bench.common import staff_user
    from predictions.models import ModelVersion
    from predictions.selectors.similar import clear_cache, similar_images, similar_vectors_nbytes

    client = Client()
    client.force_login(staff_user("bench-reviewer", "Reviewers"))
    results = {}
    rng = random.Random(0)
    for count in sorted(counts):
        version = _vectors_version(count)
        ModelVersion.objects.filter(is_active=True).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
        image_ids = list(version.predictions.values_list("image_id", flat=True))
        clear_cache()
        with stopwatch() as load:
            similar_images(image_id=image_ids[0])
        selector, requests = [], []
        for _ in range(QUERIES):
            started = time.perf_counter()
            shown = similar_images(image_id=rng.choice(image_ids))
            selector.append((time.perf_counter() - started) * 1000)
            assert len(shown) == 12
            url = reverse("admin:predictions_review_similar", args=[rng.choice(image_ids)])
            started = time.perf_counter()
            response = client.get(url)
            requests.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and len(response.json()["items"]) == 12
        results[str(count)] = {
            "median_ms": statistics.median(requests), "p90_ms": float(np.percentile(requests, 90)),
            "selector_ms": statistics.median(selector), "load_s": load.seconds,
            "vectors_bytes": similar_vectors_nbytes(),
        }  # fmt: skip
        log(f"more like this among {count:,}: {results[str(count)]}")
    return results


def _vectors_version(count: int):
    """An inactive version with ``count`` predictions carrying random embeddings (images made as needed)."""
    from django.db import transaction

    from images.models import Image
    from predictions.models import Label, ModelVersion, Prediction

    version = ModelVersion.objects.create(
        name=f"vectors-{count}", class_names=list(DEMO_CLASSES), input_size=224, mean=[0.5] * 3, std=[0.5] * 3,
        validation_status=ModelVersion.Validation.VALID, checkpoint=f"vectors-{count}.pth",
    )  # fmt: skip
    labels = list(Label.objects.filter(name__in=DEMO_CLASSES))
    rng = np.random.default_rng(count)
    have = Image.objects.count()
    step = 5000
    with transaction.atomic():
        for start in range(have, count, step):
            Image.objects.bulk_create(_fake_image(number) for number in range(start, min(start + step, count)))
        ids = list(Image.objects.order_by("pk").values_list("pk", flat=True)[:count])
        for start in range(0, count, step):
            chunk = ids[start : start + step]
            # Non-negative like pooled ReLU features, with some shared structure.
            vectors = np.abs(rng.standard_normal((len(chunk), EMBEDDING_SIZE)) + rng.standard_normal(EMBEDDING_SIZE))
            blobs = vectors.astype("<f2")
            Prediction.objects.bulk_create(
                Prediction(image_id=pk, model_version=version, label=labels[pk % len(labels)], confidence=0.5,
                           margin=0.1, probabilities=[0.2] * 5, embedding=blobs[i].tobytes())  # fmt: skip
                for i, pk in enumerate(chunk)
            )
    log(f"{count:,} predictions with embeddings written")
    return version


def _fake_image(number: int):
    from images.models import Image

    sha = hashlib.sha256(f"vector-{number}".encode()).hexdigest()
    return Image(file=f"images/{sha[:2]}/{sha[2:4]}/{sha}.jpg", sha256=sha, original_name=f"v_{number:07d}.jpg",
                 width=64, height=64, format="JPEG", size_bytes=1000)  # fmt: skip


if __name__ == "__main__":
    cli(sys.modules[__name__])
