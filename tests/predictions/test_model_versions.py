"""Registering, validating and activating model versions, from the admin and the command line."""

import io
import os
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.core.files.uploadedfile import SimpleUploadedFile

from predictions.models import Label, ModelVersion, Prediction, PredictionJob
from predictions.services.model_versions import model_version_activate, model_version_register
from tests.conftest import DEMO_CLASSES, TINY_INPUT_SIZE


@pytest.fixture(scope="module")
def tutorial_model():
    """The tutorial's checkpoint format: a torchvision resnet18, state dict only, no metadata."""
    import torch
    import torchvision

    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None, num_classes=len(DEMO_CLASSES)).eval()


@pytest.fixture(scope="module")
def tutorial_checkpoint_bytes(tutorial_model) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"model_state_dict": tutorial_model.state_dict()}, buffer)
    return buffer.getvalue()


def register(data: bytes, name: str = "candidate", **metadata) -> ModelVersion:
    """Register and validate right away, as the task would in the cluster."""
    return model_version_register(
        name=name, checkpoint_file=ContentFile(data, name=f"{name}.pth"), validate_now=True, **metadata
    )


# --- the tutorial checkpoint predicts exactly like torchvision ------------------------


def test_tutorial_checkpoint_registered_and_activated_predicts_like_torchvision(
    db, settings, tutorial_model, tutorial_checkpoint_bytes, image_factory, lead, fresh_predictor_cache,
    django_capture_on_commit_callbacks,
):
    import torch
    from PIL import Image as PILImage

    from ml.preprocess import Preprocessing, eval_transform

    settings.INFERENCE_PRECISION = "fp32"
    settings.INFERENCE_DEVICE = "cpu"
    images = [image_factory() for _ in range(6)]
    version = register(
        tutorial_checkpoint_bytes, arch="resnet18", class_names=DEMO_CLASSES, input_size=TINY_INPUT_SIZE
    )
    assert version.validation_status == ModelVersion.Validation.VALID, version.validation_error

    with django_capture_on_commit_callbacks(execute=True):  # runs the chunk tasks (sync cluster)
        job = model_version_activate(version=version, user=lead)

    job.refresh_from_db()
    assert (job.status, job.total, job.done) == (PredictionJob.Status.DONE, 6, 6)
    version.refresh_from_db()
    assert version.is_active
    # Metadata the user did not give came from the defaults the checkpoint implies.
    assert version.mean == [0.485, 0.456, 0.406] and version.std == [0.229, 0.224, 0.225]

    transform = eval_transform(Preprocessing(input_size=TINY_INPUT_SIZE))
    for image in images:
        with image.file.open("rb") as handle:
            tensor = transform(PILImage.open(handle).convert("RGB")).unsqueeze(0)
        with torch.inference_mode():
            expected = torch.softmax(tutorial_model(tensor), dim=1)[0]
        prediction = Prediction.objects.get(image=image, model_version=version)
        assert prediction.label.name == DEMO_CLASSES[int(expected.argmax())]
        assert torch.allclose(torch.tensor(prediction.probabilities), expected, atol=1e-5)
        assert prediction.confidence == pytest.approx(float(expected.max()), abs=1e-5)


def test_blank_metadata_is_filled_from_the_checkpoint(db, tiny_checkpoint_bytes):
    version = register(tiny_checkpoint_bytes)

    assert version.validation_status == ModelVersion.Validation.VALID
    assert (version.arch, version.class_names, version.input_size) == (
        "resnet18_custom_head", DEMO_CLASSES, TINY_INPUT_SIZE,
    )
    assert list(Label.objects.filter(name__in=DEMO_CLASSES).values_list("name", flat=True)) == DEMO_CLASSES


# --- bad checkpoints are INVALID with the reason, and cannot be activated ------------


class RunsCode:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class ArbitraryObject:
    pass


def pickled_checkpoint(weight) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"model_state_dict": {"weight": weight}}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "case, expected_error",
    [
        ("wrong class count", "has 5 outputs but 3 class names were given"),
        ("arbitrary object", "could run code"),
        # torch names a blocked module (posix) differently from an unknown class, and
        # ml.checkpoints then calls the file corrupt: still refused, nothing runs.
        ("runs code", "checkpoint"),
        ("random bytes", "not a PyTorch checkpoint"),
        ("wrong architecture", "does not match architecture 'resnet34'"),
    ],
)
def test_bad_checkpoints_are_invalid_with_the_reason_and_cannot_be_activated(
    case, expected_error, db, tiny_checkpoint_bytes, tmp_path, lead
):
    marker = tmp_path / "code-ran"
    data, metadata = {
        "wrong class count": (tiny_checkpoint_bytes, {"class_names": ["a", "b", "c"]}),
        "arbitrary object": (pickled_checkpoint(ArbitraryObject()), {"class_names": ["a", "b"]}),
        "runs code": (pickled_checkpoint(RunsCode(marker)), {"class_names": ["a", "b"]}),
        "random bytes": (os.urandom(4096), {"class_names": ["a", "b"]}),
        "wrong architecture": (tiny_checkpoint_bytes, {"arch": "resnet34"}),
    }[case]

    version = register(data, name="bad", **metadata)

    assert version.validation_status == ModelVersion.Validation.INVALID
    assert version.validation_error.startswith("bad")  # names the file
    assert expected_error in version.validation_error
    assert not marker.exists()
    with pytest.raises(ValidationError, match="cannot be activated: its checkpoint is invalid"):
        model_version_activate(version=version, user=lead)
    version.refresh_from_db()
    assert not version.is_active


def test_a_pending_version_cannot_be_activated(db, tiny_checkpoint_bytes, lead, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # validation not run yet
        version = model_version_register(name="pending", checkpoint_file=ContentFile(tiny_checkpoint_bytes, name="p.pth"))
    assert version.validation_status == ModelVersion.Validation.PENDING
    with pytest.raises(ValidationError, match="not been validated yet"):
        model_version_activate(version=version, user=lead)


# --- activation -----------------------------------------------------------------------


def test_activation_keeps_exactly_one_active_and_queues_only_missing_images(
    active_model_version, model_version_factory, image_factory, prediction_factory, lead,
    django_capture_on_commit_callbacks,
):
    old = active_model_version
    new = model_version_factory("tiny-v2", active=False)
    images = [image_factory() for _ in range(5)]
    for image in images:
        prediction_factory(image=image, model_version=old)
    for image in images[:3]:
        prediction_factory(image=image, model_version=new)

    with django_capture_on_commit_callbacks(execute=False):
        job = model_version_activate(version=new, user=lead)

    assert job.reason == "activation" and job.model_version == new
    assert job.total == 2
    assert list(ModelVersion.objects.filter(is_active=True)) == [new]


def test_activation_without_predicting(model_version_factory, image_factory, lead):
    image_factory()
    version = model_version_factory("quiet", active=False)
    assert model_version_activate(version=version, user=lead, predict_missing=False) is None
    assert PredictionJob.objects.count() == 0


# --- the admin ------------------------------------------------------------------------


def test_lead_registers_a_bare_tutorial_checkpoint_in_the_admin(
    lead, client_for, tutorial_checkpoint_bytes, django_capture_on_commit_callbacks
):
    client = client_for(lead)
    with django_capture_on_commit_callbacks(execute=True):  # the validation task, sync cluster
        response = client.post(
            "/admin/predictions/modelversion/add/",
            {
                "checkpoint_upload": SimpleUploadedFile("resnet18_model.pth", tutorial_checkpoint_bytes),
                "arch": "resnet18",
                "class_names_text": "\n".join(DEMO_CLASSES),
                "input_size": "32",
                "mean_text": "0.5, 0.5, 0.5",
                "std_text": "0.25 0.25 0.25",
            },
        )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    version = ModelVersion.objects.get(name="resnet18_model")
    assert response["Location"] == f"/admin/predictions/modelversion/{version.pk}/change/"
    assert version.validation_status == ModelVersion.Validation.VALID, version.validation_error
    assert (version.arch, version.class_names, version.input_size, version.mean) == (
        "resnet18", DEMO_CLASSES, 32, [0.5, 0.5, 0.5],
    )
    assert version.created_by == lead and not version.is_active
    assert Path(version.checkpoint.path).read_bytes() == tutorial_checkpoint_bytes

    page = client.get(response["Location"])
    assert b"Checkpoint valid" in page.content


def test_admin_shows_why_a_checkpoint_is_invalid(lead, client_for, django_capture_on_commit_callbacks):
    client = client_for(lead)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/predictions/modelversion/add/",
            {"checkpoint_upload": SimpleUploadedFile("junk.pth", b"not a checkpoint at all"), "class_names_text": "a\nb"},
        )
    page = client.get(response["Location"]).content.decode()
    assert "Checkpoint invalid" in page
    assert "junk.pth: not a PyTorch checkpoint" in page


def test_add_form_refuses_bad_metadata_before_saving(lead, client_for):
    response = client_for(lead).post(
        "/admin/predictions/modelversion/add/",
        {
            "checkpoint_upload": SimpleUploadedFile("m.pth", b"x"),
            "class_names_text": "cat\ndog\ncat",
            "mean_text": "0.5, 0.5",
        },
    )
    errors = response.context["adminform"].form.errors
    assert "Duplicate class names: cat." in errors["class_names_text"]
    assert "three numbers" in errors["mean_text"][0]
    assert not ModelVersion.objects.exists()


def test_add_form_can_use_a_file_already_in_the_weights_folder(
    lead, client_for, settings, tiny_checkpoint_bytes, django_capture_on_commit_callbacks
):
    (Path(settings.WEIGHTS_DIR) / "copied-by-hand.pth").write_bytes(tiny_checkpoint_bytes)
    with django_capture_on_commit_callbacks(execute=True):
        client_for(lead).post("/admin/predictions/modelversion/add/", {"existing_checkpoint": "copied-by-hand.pth"})
    version = ModelVersion.objects.get(name="copied-by-hand")
    assert version.checkpoint.name == "copied-by-hand.pth"  # used in place, not copied
    assert version.validation_status == ModelVersion.Validation.VALID


def test_activate_action_reports_the_prediction_job(
    model_version_factory, image_factory, lead, client_for, django_capture_on_commit_callbacks
):
    version = model_version_factory("to-activate", active=False)
    image_factory()
    with django_capture_on_commit_callbacks(execute=False):
        response = client_for(lead).post(
            "/admin/predictions/modelversion/",
            {"action": "activate", "_selected_action": [version.pk]},
            follow=True,
        )
    job = PredictionJob.objects.get(model_version=version)
    assert f"/admin/predictions/predictionjob/{job.pk}/change/" in response.content.decode()
    version.refresh_from_db()
    assert version.is_active


def test_lead_sees_the_model_version_list(active_model_version, lead, client_for):
    response = client_for(lead).get("/admin/predictions/modelversion/")
    assert response.status_code == 200
    assert active_model_version.name in response.content.decode()


# --- command line ---------------------------------------------------------------------


def test_register_model_command_validates_and_activates(db, tmp_path, tutorial_checkpoint_bytes):
    path = tmp_path / "resnet18_model.pth"
    path.write_bytes(tutorial_checkpoint_bytes)
    out = io.StringIO()

    call_command(
        "register_model", str(path), "--arch", "resnet18", "--classes", ",".join(DEMO_CLASSES),
        "--input-size", "32", "--name", "cli", "--activate", stdout=out,
    )

    version = ModelVersion.objects.get(name="cli")
    assert version.is_active and version.validation_status == ModelVersion.Validation.VALID
    assert "is valid" in out.getvalue() and "Activated cli" in out.getvalue()


def test_register_model_command_fails_on_a_bad_checkpoint(db, tmp_path, tiny_checkpoint_bytes):
    path = tmp_path / "tiny.pth"
    path.write_bytes(tiny_checkpoint_bytes)
    classes = tmp_path / "classes.txt"
    classes.write_text("one\ntwo\n")

    with pytest.raises(CommandError, match=r"INVALID: tiny\S*\.pth: the checkpoint's head has 5 outputs but 2 class names"):
        call_command("register_model", str(path), "--classes-file", str(classes), stdout=io.StringIO())
    assert not ModelVersion.objects.filter(is_active=True).exists()


# --- predicting a selection again, from the image and batch lists ----------------------


def test_predict_again_actions_queue_what_the_active_version_lacks(
    active_model_version, image_factory, prediction_factory, lead, client_for, django_capture_on_commit_callbacks
):
    from images.models import UploadBatch

    batch = UploadBatch.objects.create(name="holiday photos")
    in_batch = [image_factory(batch=batch) for _ in range(3)]
    image_factory()  # not selected
    prediction_factory(image=in_batch[0], model_version=active_model_version)
    client = client_for(lead)

    with django_capture_on_commit_callbacks(execute=False):
        client.post("/admin/images/image/", {"action": "repredict_images", "_selected_action": [i.pk for i in in_batch]})
        client.post("/admin/images/uploadbatch/", {"action": "repredict_batches", "_selected_action": [batch.pk]})

    jobs = list(PredictionJob.objects.order_by("pk"))
    assert [(job.reason, job.total, job.model_version) for job in jobs] == [
        ("repredict", 2, active_model_version),
        ("repredict", 2, active_model_version),
    ]
