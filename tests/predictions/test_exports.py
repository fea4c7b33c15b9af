"""The label export of the image changelist, the background export and the training-set exports."""

import csv
import io
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from images.models import Image, UploadBatch
from predictions.models import ExportJob, Label, Prediction
from predictions.resources import (
    ImageLabelResource,
    ImageLabelWithProbabilitiesResource,
    escape_formula,
    unescape_formula,
)
from predictions.selectors.exports import label_folder_name
from predictions.services.exports import labels_csv_export_start, labels_csv_write
from predictions.services.reviews import review_submit, review_undo
from tests.conftest import DEMO_CLASSES

EXPORT_URL = "admin:images_image_export"
CHANGELIST_URL = "admin:images_image_changelist"
HOSTILE_TEXTS = ['=HYPERLINK("http://evil.example","click")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def export_form_data(resource=ImageLabelResource, index: int = 0, **extra) -> dict:
    """The export form as the admin page posts it: CSV, this resource, every column ticked."""
    data = {"format": "0", "resource": str(index)}
    for field_name in resource().get_export_order():
        data[f"{resource.__name__.lower()}_{field_name}"] = "on"
    return {**data, **extra}


def parse_csv(content: bytes | str) -> list[dict]:
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    return list(csv.DictReader(io.StringIO(text, newline="")))


def response_bytes(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def export(client, query: str = "", **data) -> list[dict]:
    response = client.post(reverse(EXPORT_URL) + query, export_form_data(**data))
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/csv")
    return parse_csv(response.content)


@pytest.fixture
def labels(active_model_version):
    return {label.name: label for label in Label.objects.all()}


# --- the immediate export --------------------------------------------------------------


def test_export_rows_field_by_field(
    client_for, lead, reviewer, second_reviewer, labels, image_factory, prediction_factory
):
    agreed_then_undone = prediction_factory(label="square", confidence=0.8, name="a.jpg")
    image_a = agreed_then_undone.image
    review_submit(image=image_a, reviewer=reviewer, label=labels["square"], prediction=agreed_then_undone)
    correction = review_submit(
        image=image_a, reviewer=second_reviewer, label=labels["star"], prediction=agreed_then_undone
    )
    review_undo(review=correction)  # the first decision (agreeing) is current again
    predicted_only = prediction_factory(label="circle", confidence=0.55, name="b.jpg")
    disagreed = prediction_factory(label="cross", confidence=0.4, name="c.jpg")
    review_submit(image=disagreed.image, reviewer=second_reviewer, label=labels["triangle"], prediction=disagreed)
    not_predicted = image_factory(name="d.jpg", uploaded_by=lead)

    rows = {row["original_name"]: row for row in export(client_for(lead))}

    assert set(rows) == {"a.jpg", "b.jpg", "c.jpg", "d.jpg"}
    image_a.refresh_from_db()
    a = rows["a.jpg"]
    assert a["id"] == str(image_a.pk)
    assert a["sha256"] == image_a.sha256
    assert a["image_url"] == f"http://testserver/media/{image_a.file.name}"
    assert a["model_version"] == agreed_then_undone.model_version.name
    assert a["predicted_label"] == "square"
    assert float(a["confidence"]) == pytest.approx(0.8)
    assert a["final_label"] == "square"
    assert a["reviewed_by"] == "reviewer"
    assert a["reviewed_at"] == image_a.reviewed_at.isoformat(timespec="seconds")
    assert a["agreed_with_model"] == "1"
    assert a["review_count"] == "1"  # the undone correction does not count

    b = rows["b.jpg"]
    assert (b["predicted_label"], b["final_label"], b["reviewed_by"], b["agreed_with_model"], b["review_count"]) == (
        "circle", "", "", "", "0",
    )  # fmt: skip
    c = rows["c.jpg"]
    assert (c["predicted_label"], c["final_label"], c["agreed_with_model"]) == ("cross", "triangle", "0")
    d = rows["d.jpg"]
    assert (d["model_version"], d["predicted_label"], d["confidence"], d["uploaded_by"]) == ("", "", "", "lead")
    assert d["uploaded_at"] == not_predicted.uploaded_at.isoformat(timespec="seconds")


def test_export_names_each_images_upload_batch(client_for, lead, image_factory):
    named = UploadBatch.objects.create(name="field trip")
    unnamed = UploadBatch.objects.create()
    image_factory(name="named.jpg", batch=named)
    image_factory(name="unnamed.jpg", batch=unnamed)
    image_factory(name="loose.jpg")

    rows = {row["original_name"]: row["upload_batch"] for row in export(client_for(lead))}

    assert rows == {"named.jpg": "field trip", "unnamed.jpg": f"Upload #{unnamed.pk}", "loose.jpg": ""}


def test_export_with_probabilities_has_one_column_per_class(client_for, lead, prediction_factory):
    prediction = prediction_factory(label="star", confidence=0.7, name="p.jpg")

    response = client_for(lead).post(
        reverse(EXPORT_URL), export_form_data(ImageLabelWithProbabilitiesResource, index=1)
    )

    (row,) = parse_csv(response.content)
    assert [float(row[f"prob_{name}"]) for name in DEMO_CLASSES] == pytest.approx(prediction.probabilities)
    assert row["predicted_label"] == "star"


def test_export_follows_the_changelist_filters_and_search(client_for, lead, labels, prediction_factory):
    prediction_factory(label="square", name="cat-1.jpg")
    prediction_factory(label="square", name="dog-1.jpg")
    prediction_factory(label="circle", name="cat-2.jpg")
    client = client_for(lead)

    by_label = export(client, f"?predicted_label={labels['square'].pk}")
    by_search = export(client, "?q=cat")
    both = export(client, f"?predicted_label={labels['square'].pk}&q=cat")

    assert sorted(row["original_name"] for row in by_label) == ["cat-1.jpg", "dog-1.jpg"]
    assert sorted(row["original_name"] for row in by_search) == ["cat-1.jpg", "cat-2.jpg"]
    assert [row["original_name"] for row in both] == ["cat-1.jpg"]


def test_export_of_selected_images_only_has_those(client_for, lead, image_factory):
    chosen, _other = image_factory(name="chosen.jpg"), image_factory(name="other.jpg")
    client = client_for(lead)

    form_page = client.post(
        reverse(CHANGELIST_URL), {"action": "export_admin_action", "_selected_action": [chosen.pk]}
    )
    assert form_page.status_code == 200
    rows = export(client, export_items=[str(chosen.pk)])

    assert [row["original_name"] for row in rows] == ["chosen.jpg"]


def test_export_columns_can_be_chosen(client_for, lead, image_factory):
    image_factory(name="x.jpg")
    data = export_form_data()
    for field_name in ImageLabelResource().get_export_order():
        if field_name not in ("sha256", "final_label"):
            data.pop(f"imagelabelresource_{field_name}")

    response = client_for(lead).post(reverse(EXPORT_URL), data)

    assert list(parse_csv(response.content)[0]) == ["sha256", "final_label"]


# --- spreadsheet formulas ------------------------------------------------------------------


def test_escape_formula_quotes_text_that_a_spreadsheet_would_run():
    for text in HOSTILE_TEXTS:
        assert escape_formula(text) == "'" + text
        assert unescape_formula(escape_formula(text)) == text
    assert escape_formula("cat.jpg") == "cat.jpg"
    assert escape_formula("it's fine") == "it's fine"
    # Numbers are not text: they stay numbers, a negative one too.
    assert escape_formula(-0.25) == -0.25
    assert escape_formula(-3) == -3
    assert escape_formula(None) is None


def test_text_starting_with_a_quote_keeps_it_through_escape_and_unescape():
    """A spreadsheet hides one leading quote, so a quote of the text's own gets a second."""
    for text in ("'=already quoted", "''", "'plain"):
        assert escape_formula(text) == "'" + text
        assert unescape_formula(escape_formula(text)) == text
    assert unescape_formula("'=typed by hand") == "=typed by hand"
    assert unescape_formula("'plain") == "'plain"


def hostile_dataset(labels, prediction_factory, reviewer):
    hostile_label = Label.objects.create(name="=cmd|' /C calc'!A0", order=99)
    for number, text in enumerate(HOSTILE_TEXTS):
        prediction = prediction_factory(label="square", confidence=0.9, name=text)
        review_submit(image=prediction.image, reviewer=reviewer, label=hostile_label, prediction=prediction)
    return hostile_label


def assert_neutralised(rows, hostile_label):
    assert sorted(row["original_name"] for row in rows) == sorted("'" + text for text in HOSTILE_TEXTS)
    for row in rows:
        assert row["final_label"] == "'" + hostile_label.name
        assert row["predicted_label"] == "square"
        assert row["confidence"] == "0.9"  # a number, not quoted
        assert row["review_count"] == "1"
        # Nothing in the file starts a formula any more.
        assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row.values())


def test_immediate_export_neutralises_formulas(client_for, lead, reviewer, labels, prediction_factory):
    hostile_label = hostile_dataset(labels, prediction_factory, reviewer)

    rows = export(client_for(lead))

    assert_neutralised(rows, hostile_label)


def test_background_export_neutralises_formulas(
    client_for, lead, reviewer, labels, prediction_factory, settings, django_capture_on_commit_callbacks
):
    hostile_label = hostile_dataset(labels, prediction_factory, reviewer)
    settings.EXPORT_SYNC_MAX_ROWS = 2
    client = client_for(lead)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse(EXPORT_URL), export_form_data())

    job = ExportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:predictions_exportjob_change", args=[job.pk])
    job.refresh_from_db()
    assert (job.status, job.done, job.total) == (ExportJob.Status.DONE, len(HOSTILE_TEXTS), len(HOSTILE_TEXTS))
    download = client.get(reverse("admin:predictions_exportjob_download", args=[job.pk]))
    assert download.status_code == 200
    assert_neutralised(parse_csv(response_bytes(download)), hostile_label)


def test_background_and_immediate_exports_write_the_same_rows(
    client_for, lead, reviewer, labels, prediction_factory, settings, django_capture_on_commit_callbacks
):
    hostile_dataset(labels, prediction_factory, reviewer)
    client = client_for(lead)
    immediate = client.post(reverse(EXPORT_URL), export_form_data()).content

    settings.EXPORT_SYNC_MAX_ROWS = 0
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse(EXPORT_URL), export_form_data())
    job = ExportJob.objects.get()
    background = response_bytes(client.get(reverse("admin:predictions_exportjob_download", args=[job.pk])))

    assert background == immediate


# --- permissions --------------------------------------------------------------------------


def test_reviewer_cannot_export(client_for, reviewer, image_factory):
    image_factory()
    client = client_for(reviewer)

    changelist = client.get(reverse(CHANGELIST_URL))
    assert changelist.status_code == 200
    assert reverse(EXPORT_URL) not in changelist.content.decode()
    assert b"export_admin_action" not in changelist.content
    assert b"export_training_zip" not in changelist.content
    assert client.get(reverse(EXPORT_URL)).status_code == 403
    assert client.post(reverse(EXPORT_URL), export_form_data()).status_code == 403


def test_lead_sees_export_button_and_actions(client_for, lead, image_factory):
    image_factory()
    client = client_for(lead)

    changelist = client.get(reverse(CHANGELIST_URL)).content.decode()

    assert reverse(EXPORT_URL) in changelist
    for action in ("export_admin_action", "export_training_csv", "export_training_zip"):
        assert action in changelist
    assert client.get(reverse(EXPORT_URL)).status_code == 200


def test_export_download_needs_the_export_permission(
    client_for, lead, reviewer, image_factory, django_capture_on_commit_callbacks
):
    image = image_factory()
    with django_capture_on_commit_callbacks(execute=True):
        job = labels_csv_export_start(image_ids=[image.pk], user=lead)
    url = reverse("admin:predictions_exportjob_download", args=[job.pk])

    assert client_for(reviewer).get(url).status_code == 403
    assert client_for(lead).get(url).status_code == 200


# --- the background export at scale -------------------------------------------------------


def bulk_images(count: int, *, start: int, version, label) -> list[int]:
    """Image rows (no files) with a prediction each, written in bulk."""
    images = Image.objects.bulk_create(
        Image(
            file=f"images/bulk/{start + n:064x}.jpg",
            sha256=f"{start + n:064x}",
            original_name=f"bulk-{start + n}.jpg",
            width=8,
            height=8,
            format="JPEG",
            size_bytes=100,
        )
        for n in range(count)
    )
    Prediction.objects.bulk_create(
        Prediction(image=image, model_version=version, label=label, confidence=0.5, margin=0.1, probabilities=[0.5] * 5)
        for image in images
    )
    return [image.pk for image in images]


def run_export(image_ids, user) -> tuple[ExportJob, int]:
    job = labels_csv_export_start(image_ids=image_ids, user=user, base_url="https://labels.example/")
    with CaptureQueriesContext(connection) as queries:
        labels_csv_write(job_id=job.pk)
    job.refresh_from_db()
    return job, len(queries)


def test_background_export_queries_do_not_grow_with_rows(lead, labels, active_model_version):
    small_ids = bulk_images(1000, start=0, version=active_model_version, label=labels["circle"])
    large_ids = small_ids + bulk_images(2000, start=10_000, version=active_model_version, label=labels["star"])

    small_job, small_queries = run_export(small_ids, lead)
    large_job, large_queries = run_export(large_ids, lead)

    # One read and one progress update per 2000 rows, plus a fixed few.
    assert large_queries - small_queries <= 3
    assert large_queries < 20
    assert (large_job.status, large_job.done, large_job.total) == (ExportJob.Status.DONE, 3000, 3000)
    with default_storage.open(large_job.file.name, "rb") as handle:
        rows = parse_csv(handle.read())
    day = timezone.localdate(large_job.created_at)
    assert large_job.file.name == f"exports/{large_job.pk}/labels-{day:%Y-%m-%d}.csv"
    assert [int(row["id"]) for row in rows] == large_ids
    assert rows[0]["image_url"] == "https://labels.example/media/images/bulk/" + f"{0:064x}.jpg"
    assert {row["predicted_label"] for row in rows} == {"circle", "star"}


def test_background_export_rerun_is_idempotent(lead, image_factory, django_capture_on_commit_callbacks):
    image = image_factory()
    with django_capture_on_commit_callbacks(execute=True):
        job = labels_csv_export_start(image_ids=[image.pk], user=lead)
    job.refresh_from_db()
    first_name = job.file.name
    labels_csv_write(job_id=job.pk)  # redelivered after it finished: nothing to do
    ExportJob.objects.filter(pk=job.pk).update(status=ExportJob.Status.RUNNING)

    labels_csv_write(job_id=job.pk)  # redelivered after a worker died mid-way: written again

    job.refresh_from_db()
    assert (job.status, job.file.name) == (ExportJob.Status.DONE, first_name)
    assert default_storage.listdir(f"exports/{job.pk}")[1] == [first_name.split("/")[-1]]


def test_large_selection_goes_to_the_background(
    client_for, lead, image_factory, settings, django_capture_on_commit_callbacks
):
    images = [image_factory(name=f"s{n}.jpg") for n in range(3)]
    settings.EXPORT_SYNC_MAX_ROWS = 2
    client = client_for(lead)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse(CHANGELIST_URL), {"action": "export_admin_action", "_selected_action": [i.pk for i in images]}
        )

    job = ExportJob.objects.get()
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE
    changelist = client.get(reverse("admin:predictions_exportjob_changelist")).content.decode()
    assert reverse("admin:predictions_exportjob_download", args=[job.pk]) in changelist
    assert "3 / 3" in changelist


# --- training set --------------------------------------------------------------------------


@pytest.fixture
def reviewed_images(labels, reviewer, image_factory):
    """Two circles, one square, and one image nobody reviewed."""
    images = {
        "c1": image_factory(name="c1.jpg"),
        "c2": image_factory(name="c2.jpg"),
        "s1": image_factory(name="s1.jpg"),
        "unreviewed": image_factory(name="u.jpg"),
    }
    for key, label in (("c1", "circle"), ("c2", "circle"), ("s1", "square")):
        review_submit(image=images[key], reviewer=reviewer, label=labels[label])
    return images


def test_training_csv_paths_are_the_training_zips_and_its_urls_fetch_the_files(
    client_for, lead, reviewed_images, tmp_path, django_capture_on_commit_callbacks
):
    """The CSV's paths are relative to the zip's root (the same as its labels.csv), so the CSV
    works next to the unpacked zip on any machine; image_url fetches each file with a token."""
    from ml.train import load_samples
    from predictions.services.tokens import api_token_create

    client = client_for(lead)
    selected = [image.pk for image in reviewed_images.values()]
    response = client.post(reverse(CHANGELIST_URL), {"action": "export_training_csv", "_selected_action": selected})
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="training-set-{timezone.localdate():%Y-%m-%d}.csv"'
    rows = parse_csv(response_bytes(response))
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse(CHANGELIST_URL), {"action": "export_training_zip", "_selected_action": selected})
    job = ExportJob.objects.get(kind="training_zip")
    download = client.get(reverse("admin:predictions_exportjob_download", args=[job.pk]))
    archive = zipfile.ZipFile(io.BytesIO(response_bytes(download)))
    zip_index = parse_csv(archive.read("labels.csv"))

    assert [(row["path"], row["label"], row["split"]) for row in rows] == [
        (row["path"], row["label"], row["split"]) for row in zip_index
    ]
    archive.extractall(tmp_path)
    (tmp_path / "training.csv").write_bytes(response_bytes(client.post(
        reverse(CHANGELIST_URL), {"action": "export_training_csv", "_selected_action": selected}
    )))
    samples, class_names = load_samples(tmp_path / "training.csv")
    assert class_names == ["circle", "square"]
    assert sorted(class_names[index] for _, index in samples) == ["circle", "circle", "square"]
    assert all(path.is_file() for path, _ in samples)

    # A script with an API token (no session) fetches the files from image_url.
    from django.test import Client

    _, token = api_token_create(user=lead, name="training script")
    script = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    by_name = {image.sha256: image for image in reviewed_images.values()}
    for row in rows:
        fetched = script.get(row["image_url"].removeprefix("http://testserver"))
        assert fetched.status_code == 200, row["image_url"]
        with default_storage.open(by_name[row["path"].split("/")[1].split(".")[0]].file.name, "rb") as original:
            assert response_bytes(fetched) == original.read()


def test_training_zip_has_one_folder_per_label(
    client_for, lead, reviewed_images, tmp_path, django_capture_on_commit_callbacks
):
    from ml.samples import load_samples

    client = client_for(lead)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse(CHANGELIST_URL),
            {"action": "export_training_zip", "_selected_action": [image.pk for image in reviewed_images.values()]},
        )
    job = ExportJob.objects.get(kind="training_zip")
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE, job.error
    download = client.get(reverse("admin:predictions_exportjob_download", args=[job.pk]))
    archive = zipfile.ZipFile(io.BytesIO(response_bytes(download)))

    names = sorted(archive.namelist())
    assert names == sorted(
        [f"circle/{reviewed_images[k].sha256}.jpg" for k in ("c1", "c2")]
        + [f"square/{reviewed_images['s1'].sha256}.jpg", "labels.csv"]
    )
    with default_storage.open(reviewed_images["s1"].file.name, "rb") as original:
        assert archive.read(f"square/{reviewed_images['s1'].sha256}.jpg") == original.read()
    archive.extractall(tmp_path)
    for data in (tmp_path, tmp_path / "labels.csv"):
        samples, class_names = load_samples(data)
        assert class_names == ["circle", "square"]
        assert sorted(class_names[index] for _, index in samples) == ["circle", "circle", "square"]


def test_label_folder_names_stay_inside_the_zip():
    assert label_folder_name("cat") == "cat"
    assert label_folder_name("../../etc") == ".._.._etc"
    assert label_folder_name("..") == "label___"
    assert label_folder_name("a/b\\c") == "a_b_c"


def test_immediate_export_queries_do_not_grow_with_rows(client_for, lead, labels, active_model_version):
    client = client_for(lead)
    bulk_images(5, start=0, version=active_model_version, label=labels["circle"])
    with CaptureQueriesContext(connection) as few:
        assert len(export(client)) == 5
    bulk_images(200, start=1000, version=active_model_version, label=labels["square"])
    with CaptureQueriesContext(connection) as many:
        assert len(export(client)) == 205

    assert len(many) == len(few)


def test_export_job_page_reloads_until_done_and_delete_removes_the_file(
    client_for, lead, image_factory, django_capture_on_commit_callbacks
):
    client = client_for(lead)
    waiting = labels_csv_export_start(image_ids=[image_factory().pk], user=lead)  # its task is never run
    page = client.get(reverse("admin:predictions_exportjob_change", args=[waiting.pk])).content.decode()
    assert 'http-equiv="refresh"' in page
    with django_capture_on_commit_callbacks(execute=True):
        done = labels_csv_export_start(image_ids=[image_factory().pk], user=lead)
    done.refresh_from_db()
    page = client.get(reverse("admin:predictions_exportjob_change", args=[done.pk])).content.decode()
    assert 'http-equiv="refresh"' not in page
    assert reverse("admin:predictions_exportjob_download", args=[done.pk]) in page

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:predictions_exportjob_delete", args=[done.pk]), {"post": "yes"})

    assert not ExportJob.objects.filter(pk=done.pk).exists()
    assert not default_storage.exists(done.file.name)


def test_export_without_an_active_model_version_leaves_prediction_columns_empty(
    client_for, lead, prediction_factory, active_model_version
):
    prediction_factory(label="square", name="old.jpg")
    active_model_version.is_active = False
    active_model_version.save(update_fields=["is_active"])

    (row,) = export(client_for(lead), resource=ImageLabelWithProbabilitiesResource, index=1)

    assert row["original_name"] == "old.jpg"
    assert (row["model_version"], row["predicted_label"], row["confidence"]) == ("", "", "")
    assert not any(column.startswith("prob_") for column in row)


# --- exports for ML engineers (issue 17 item 8) ----------------------------------------------


@pytest.mark.parametrize(
    ("resource", "index", "stem"),
    [
        (ImageLabelResource, 0, "labels"),
        (ImageLabelWithProbabilitiesResource, 1, "labels-with-probabilities"),
    ],
)
def test_export_files_are_named_by_what_they_hold_and_the_day(client_for, lead, image_factory, resource, index, stem):
    image_factory()

    response = client_for(lead).post(reverse(EXPORT_URL), export_form_data(resource, index=index))

    assert response["Content-Disposition"] == f'attachment; filename="{stem}-{timezone.localdate():%Y-%m-%d}.csv"'


def test_confidence_is_rounded_like_the_probabilities(client_for, lead, active_model_version, image_factory):
    float32_confidence = 0.8999999761581421  # what the worker stores: the model's float32, widened
    probabilities = [0.899999, 0.1, 0.000001, 0.0, 0.0]
    Prediction.objects.create(
        image=image_factory(name="f.jpg"), model_version=active_model_version, label=Label.objects.get(name="circle"),
        confidence=float32_confidence, margin=0.8, probabilities=probabilities,
    )  # fmt: skip

    response = client_for(lead).post(
        reverse(EXPORT_URL), export_form_data(ImageLabelWithProbabilitiesResource, index=1)
    )

    (row,) = parse_csv(response.content)
    assert row["confidence"] == "0.9"
    assert row[f"prob_{DEMO_CLASSES[0]}"] == "0.899999"


EXCEL_NAME = "Überprüfung_größe_日本.jpg"


def test_csv_for_excel_starts_with_a_byte_order_mark(client_for, lead, image_factory):
    image_factory(name=EXCEL_NAME)
    client = client_for(lead)

    plain = client.post(reverse(EXPORT_URL), export_form_data(format="0")).content
    excel = client.post(reverse(EXPORT_URL), export_form_data(format="1")).content

    assert not plain.startswith(b"\xef\xbb\xbf")
    assert excel.startswith(b"\xef\xbb\xbf") and excel[3:] == plain
    # What Excel does with the mark: reads UTF-8 (Python's "utf-8-sig" is the same reading).
    (row,) = list(csv.DictReader(io.StringIO(excel.decode("utf-8-sig"), newline="")))
    assert row["original_name"] == EXCEL_NAME


def test_the_export_form_offers_csv_and_csv_for_excel_with_csv_chosen(client_for, lead, image_factory):
    image_factory()

    form = client_for(lead).get(reverse(EXPORT_URL)).context["form"]

    assert [title for _, title in form.fields["format"].choices] == ["csv", "csv for Excel (UTF-8 with BOM)"]
    assert form.fields["format"].initial == "0"


def test_a_background_export_for_excel_is_named_and_marked_the_same(
    client_for, lead, image_factory, settings, django_capture_on_commit_callbacks
):
    for n in range(3):
        image_factory(name=f"{n}-{EXCEL_NAME}")
    settings.EXPORT_SYNC_MAX_ROWS = 2
    client = client_for(lead)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse(EXPORT_URL), export_form_data(ImageLabelWithProbabilitiesResource, index=1, format="1"))

    job = ExportJob.objects.get()
    job.refresh_from_db()
    download = client.get(reverse("admin:predictions_exportjob_download", args=[job.pk]))
    content = response_bytes(download)
    day = timezone.localdate(job.created_at)
    assert download["Content-Disposition"] == f'attachment; filename="labels-with-probabilities-{day:%Y-%m-%d}.csv"'
    assert content.startswith(b"\xef\xbb\xbf")
    assert {row["original_name"] for row in parse_csv(content[3:])} == {f"{n}-{EXCEL_NAME}" for n in range(3)}


def test_export_job_kinds_read_as_words(client_for, lead, reviewed_images, django_capture_on_commit_callbacks):
    client = client_for(lead)
    with django_capture_on_commit_callbacks(execute=True):
        selected = [image.pk for image in reviewed_images.values()]
        client.post(reverse(CHANGELIST_URL), {"action": "export_training_zip", "_selected_action": selected})
    job = ExportJob.objects.get()

    changelist = client.get(reverse("admin:predictions_exportjob_changelist")).content.decode()
    filtered = client.get(reverse("admin:predictions_exportjob_changelist") + "?kind=training_zip")
    change_page = client.get(reverse("admin:predictions_exportjob_change", args=[job.pk])).content.decode()

    assert '<td class="field-kind_name">Training zip</td>' in changelist
    assert "training_zip" not in changelist.replace("?kind=training_zip", "")
    assert list(filtered.context["cl"].result_list) == [job]
    assert "Training zip" in change_page and ">training_zip<" not in change_page
    assert download_name(client, job) == f"training-set-{timezone.localdate(job.created_at):%Y-%m-%d}.zip"


def download_name(client, job) -> str:
    response = client.get(reverse("admin:predictions_exportjob_download", args=[job.pk]))
    return response["Content-Disposition"].split('filename="')[1].rstrip('"')
