"""2. Our JSON endpoint and our background pipeline against the tutorial's view.

The same N camera-sized JPEGs go through:
- the tutorial's view (bench/tutorial_baseline.py), one request per image, called
  in-process (no HTTP, no Django: flattering to the baseline);
- ``POST /api/predict/`` on a real gunicorn server (one worker, product settings,
  token auth), the images sent in batches of ``--api-batch`` per request, the model
  loaded by one warm-up request first;
- the background pipeline (upload + a one-worker qcluster, as in benchmark 1 (b): the
  median of three uploads of different photos), with the product's default precision
  and batch size.

Target: each at least 10x the tutorial's images per second.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import (
    DEMO_CLASSES,
    Report,
    Row,
    active_model_version,
    cli,
    django_project,
    gunicorn,
    log,
    random_checkpoint,
    realistic_photos,
    staff_user,
    stopwatch,
)

SIZES = {"small": {"photos": 20}, "medium": {"photos": 100}, "large": {"photos": 400}}
TARGET = 10.0


def add_arguments(parser) -> None:
    parser.add_argument("--photos", type=int, help="how many 1600x1200 JPEGs")
    parser.add_argument("--api-batch", type=int, default=32, help="images per API request")


def run(options) -> Report:
    from bench import pipeline

    photos = realistic_photos(options.photos)
    with django_project() as root:
        checkpoint = random_checkpoint(root / "resnet18-random.pth")
        tutorial = tutorial_images_per_s(photos, checkpoint=checkpoint, temp_dir=root / "tutorial-tmp")
        log(f"tutorial view: {tutorial:.2f} img/s")
        # Benchmark 1's in-process limit, at the product's default precision and batch size.
        limit = pipeline.in_process_limit(
            pipeline.in_process_trials(checkpoint, photos, batch_sizes=(32,), precisions=("auto",))
        )
        ceiling = limit.images_per_s
        log(f"in-process limit: {limit}")
        api = api_images_per_s(root, photos, checkpoint=checkpoint, per_request=options.api_batch)
        log(f"JSON API: {api:.2f} img/s")
        # The median of three uploads of different photos: a single one swung 50-73 img/s.
        photo_sets = [photos, *(realistic_photos(len(photos), seed=seed) for seed in pipeline.PRODUCT_EXTRA_SEEDS)]
        product = pipeline.product_run(
            root, photo_sets, realistic_photos(pipeline.WARMUP_PHOTOS, seed=1), precision="auto", batch_size=32
        )
        background = product["images_per_s_from_upload_end"]
        log(f"background pipeline: {background:.2f} img/s (runs: {', '.join(f'{r:.1f}' for r in product['runs'])})")

    report = Report(metrics={"photos": len(photos), "tutorial": tutorial, "ceiling": ceiling, "api": api,
                             "background": background})
    report.rows += [
        Row.versus("2 tutorial", f"JSON API ({options.api_batch} per request, gunicorn) / tutorial view",
                   ours=api, reference=tutorial, unit="img/s", target_ratio=TARGET),
        Row.versus("2 tutorial", "background pipeline (from upload end) / tutorial view",
                   ours=background, reference=tutorial, unit="img/s", target_ratio=TARGET),
        # No target: what any server could reach on this machine, the model's arithmetic and the
        # decode with no Django around them. Both rows above are bounded by it.
        Row.versus("2 tutorial", "ceiling: in-process limit (decode + model, no Django) / tutorial view",
                   ours=ceiling, reference=tutorial, unit="img/s"),
    ]  # fmt: skip
    report.notes.append(
        f"tutorial: N={len(photos)} photos 1600x1200; the tutorial view is called in-process without HTTP; "
        "ours go through gunicorn (API) or upload + qcluster (pipeline), both with the model already loaded."
    )
    return report


def tutorial_images_per_s(photos: list[Path], *, checkpoint: Path, temp_dir: Path) -> float:
    from bench.tutorial_baseline import tutorial_request

    uploads = [(path.name, path.read_bytes()) for path in photos]

    def one_request(upload) -> None:
        labels = tutorial_request([upload], weights_path=checkpoint, temp_dir=temp_dir, class_names=DEMO_CLASSES)
        assert len(labels) == 1

    one_request(uploads[0])  # warm-up: imports and first-call costs, which a real server pays once
    with stopwatch() as watch:
        for upload in uploads:
            one_request(upload)
    return len(uploads) / watch.seconds


def api_images_per_s(root: Path, photos: list[Path], *, checkpoint: Path, per_request: int) -> float:
    import requests

    from predictions.services.tokens import api_token_create

    _token, raw = api_token_create(user=staff_user("api-client", "Uploaders"), name="bench")
    active_model_version(checkpoint)
    headers = {"Authorization": f"Bearer {raw}"}
    with gunicorn(env={}, log_path=root / "gunicorn.log") as base_url, requests.Session() as session:

        def post(paths: list[Path]) -> None:
            files = [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in paths]
            response = session.post(f"{base_url}/api/predict/", files=files, headers=headers, timeout=600)
            if response.status_code != 200:
                raise RuntimeError(f"/api/predict/ answered {response.status_code}: {response.text[:300]}")
            assert len(response.json()["labels"]) == len(paths)

        post(photos[:1])  # loads the model in the server process
        with stopwatch() as watch:
            for start in range(0, len(photos), per_request):
                post(photos[start : start + per_request])
    return len(photos) / watch.seconds


if __name__ == "__main__":
    cli(sys.modules[__name__])
