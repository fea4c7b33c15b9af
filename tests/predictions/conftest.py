"""Image and Prediction rows without the upload pipeline or the model.

`image_factory` stores a tiny real JPEG (so the private media view and <img>
tags work); `prediction_factory` writes a Prediction row with a probability
vector aligned with the version's class names. Other suites may reuse them.
"""

import hashlib
import itertools

import pytest

from tests.conftest import DEMO_CLASSES, image_bytes

_sequence = itertools.count(1)


@pytest.fixture
def fresh_predictor_cache():
    """No model loaded by an earlier test in this process, and none left for a later one."""
    from predictions.inference import clear_cache

    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def image_factory(db):
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from images.models import Image

    def create(*, name: str | None = None, batch=None, uploaded_at=None, **fields) -> Image:
        number = next(_sequence)
        data = image_bytes(color=((number * 53) % 256, (number * 97) % 256, (number * 31) % 256))
        digest = hashlib.sha256(data + str(number).encode()).hexdigest()
        image = Image(
            sha256=digest,
            original_name=name or f"image-{number:05d}.jpg",
            width=64,
            height=48,
            format="JPEG",
            size_bytes=len(data),
            batch=batch,
            uploaded_at=uploaded_at or timezone.now(),
            **fields,
        )
        image.file.save(f"images/{digest[:2]}/{digest[2:4]}/{digest}.jpg", ContentFile(data), save=False)
        image.save()
        return image

    return create


@pytest.fixture
def stub_model_version_factory(db):
    """A valid ModelVersion (and its Labels) whose checkpoint is a placeholder.

    For tests of rows made without the model: no 45 MB checkpoint to build
    and write per test. Use model_version_factory when the weights are loaded.
    """
    from django.core.files.base import ContentFile

    from predictions.models import ModelVersion
    from predictions.services.labels import labels_ensure

    def create(name: str = "stub-v1", *, active: bool = True, class_names: list[str] | None = None) -> ModelVersion:
        class_names = class_names or list(DEMO_CLASSES)
        labels_ensure(names=class_names)
        version = ModelVersion(
            name=name,
            class_names=class_names,
            input_size=32,
            mean=[0.485, 0.456, 0.406],
            std=[0.229, 0.224, 0.225],
            validation_status=ModelVersion.Validation.VALID,
            is_active=active,
        )
        version.checkpoint.save(f"{name}.pth", ContentFile(b"placeholder, never loaded"), save=False)
        if active:
            ModelVersion.objects.filter(is_active=True).update(is_active=False)
        version.save()
        return version

    return create


@pytest.fixture
def prediction_factory(db, image_factory, stub_model_version_factory):
    """prediction_factory(confidence=.6, label="square") -> Prediction for a new (or given) image.

    The version is the given one, else the active one (a stub version is made
    when there is none). The remaining probability is split over the other
    classes so that the margin (top-1 minus top-2) follows from the confidence,
    as in real rows.
    """
    from predictions.models import Label, ModelVersion, Prediction

    def create(
        *,
        image=None,
        model_version=None,
        label: str = DEMO_CLASSES[0],
        confidence: float = 0.6,
        runner_up: float | None = None,
        **image_fields,
    ) -> Prediction:
        version = (
            model_version
            or ModelVersion.objects.filter(is_active=True).first()
            or stub_model_version_factory()
        )
        class_names = list(version.class_names)
        top = class_names.index(label)
        others = [i for i in range(len(class_names)) if i != top]
        rest = 1.0 - confidence
        if runner_up is None:
            runner_up = rest / 2 if len(others) > 1 else rest
        second = min(runner_up, rest, confidence)
        probabilities = [0.0] * len(class_names)
        probabilities[top] = confidence
        probabilities[others[0]] = second
        remaining = others[1:]
        for index in remaining:
            probabilities[index] = max(rest - second, 0.0) / len(remaining)
        return Prediction.objects.create(
            image=image or image_factory(**image_fields),
            model_version=version,
            label=Label.objects.get(name=label),
            confidence=confidence,
            margin=confidence - second,
            probabilities=probabilities,
        )

    return create


@pytest.fixture
def a_lead_marks_gold_meanwhile(monkeypatch):
    """Patch ``module``'s gold check so that, once it has looked, a Lead marks ``image_id`` gold
    from another thread and connection, given half a second to finish before the caller goes on
    (it may have to wait for the caller's transaction); ``skipped()`` then joins it."""
    import threading

    from django.db import connection

    from predictions.services.quality import images_gold_set

    marks: list[tuple[threading.Thread, dict]] = []

    def patch(module, *, image_id: int) -> None:
        check = module.gold_images_relabelled_by_undo

        def check_then_mark(**kwargs):
            found = check(**kwargs)
            outcome: dict = {}

            def mark() -> None:
                try:
                    outcome["result"] = images_gold_set(image_ids=[image_id], gold=True)
                except Exception as exc:  # noqa: BLE001 - the test reads it
                    outcome["error"] = exc
                finally:
                    connection.close()

            thread = threading.Thread(target=mark)
            thread.start()
            thread.join(0.5)
            marks.append((thread, outcome))
            return found

        monkeypatch.setattr(module, "gold_images_relabelled_by_undo", check_then_mark)

    def skipped() -> set[str]:
        """Join the mark, which must have changed nothing: the reasons it gave for skipping."""
        thread, outcome = marks[-1]
        thread.join(30)
        assert "error" not in outcome, outcome
        assert outcome["result"].changed == 0, "the Lead's mark went through"
        return set(outcome["result"].skipped)

    patch.skipped = skipped
    yield patch
    for thread, _ in marks:
        thread.join(30)
