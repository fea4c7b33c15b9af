"""Label imports through the one service: bulk checking, one undoable operation, big files as
cluster jobs (dry run, then apply), the command, and reviewers deciding while a file applies."""

import io
import threading
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from images.models import Image
from predictions.models import Label, LabelImportJob, LabelOperation, Review
from predictions.services import operations
from predictions.services.label_imports import RowOutcome, label_rows_apply, label_rows_check
from predictions.services.operations import SkipReason, label_operation_undo
from predictions.services.reviews import review_submit

IMPORT_URL = "admin:predictions_review_import"


@pytest.fixture
def labels(active_model_version):
    return {label.name: label for label in Label.objects.all()}


def check(text: str, user, **kwargs):
    from predictions.services.label_imports import label_csv_read

    header, rows = label_csv_read(file=io.BytesIO(text.encode()))
    return label_rows_check(header=header, rows=rows, user=user, **kwargs)


def csv_upload(text: str, name: str = "labels.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode("utf-8"), content_type="text/csv")


# --- checking ---------------------------------------------------------------------------


def test_every_row_gets_one_outcome_and_the_rule_protects_reviewed_claimed_and_gold_images(
    image_factory, labels, lead, second_reviewer
):
    free = image_factory(name="free.jpg")
    escaped = image_factory(name="=cmd.jpg")  # the export writes it as '=cmd.jpg
    same = image_factory(name="same.jpg")
    review_submit(image=same, reviewer=second_reviewer, label=labels["circle"])
    reviewed = image_factory(name="reviewed.jpg")
    review_submit(image=reviewed, reviewer=second_reviewer, label=labels["star"])
    claimed = image_factory(
        name="claimed.jpg", claimed_by=second_reviewer, claimed_until=timezone.now() + timedelta(minutes=5)
    )
    gold = image_factory(name="gold.jpg", is_gold=True)
    text = (
        "original_name,sha256,label\n"
        "free.jpg,,square\n"
        "'=cmd.jpg,,square\n"
        "same.jpg,,circle\n"
        "reviewed.jpg,,square\n"
        "claimed.jpg,,square\n"
        "gold.jpg,,square\n"
        ",,\n"  # blank: not a row
        "free.jpg,,square\n"  # a repeat
        f",{escaped.sha256},\n"  # no label
    )

    result = check(text, lead)

    outcomes = [(row.number, row.outcome, row.note) for row in result.rows]
    assert outcomes == [
        (1, RowOutcome.CHANGE, ""),
        (2, RowOutcome.CHANGE, ""),
        (3, RowOutcome.UNCHANGED, "label unchanged"),
        (4, RowOutcome.SKIPPED, SkipReason.REVIEWED),
        (5, RowOutcome.SKIPPED, SkipReason.CLAIMED),
        (6, RowOutcome.SKIPPED, SkipReason.GOLD),
        (7, RowOutcome.UNCHANGED, "repeats row 1"),
        (8, RowOutcome.UNCHANGED, "no label"),
    ]
    assert sorted(decision.image_id for decision in result.decisions) == sorted([free.pk, escaped.pk])
    assert result.is_valid
    report = result.report()
    assert (report["rows"], report["change"], report["unchanged"], report["invalid"]) == (8, 2, 3, 0)
    assert report["skipped"] == {SkipReason.REVIEWED: 1, SkipReason.CLAIMED: 1, SkipReason.GOLD: 1}
    # A Lead's explicit choice changes the reviewed and the claimed image, never the gold one.
    overwriting = check(text, lead, overwrite_reviewed=True)
    assert [row.outcome for row in overwriting.rows][3:6] == [RowOutcome.CHANGE, RowOutcome.CHANGE, RowOutcome.SKIPPED]
    assert claimed.pk in {decision.image_id for decision in overwriting.decisions}
    assert gold.pk not in {decision.image_id for decision in overwriting.decisions}


def test_invalid_rows_name_their_row_and_field(image_factory, labels, lead):
    a = image_factory(name="a.jpg")
    image_factory(name="twice.jpg")
    image_factory(name="twice.jpg")
    text = (
        "original_name,label\n"
        "a.jpg,square\n"
        "missing.jpg,square\n"
        "twice.jpg,square\n"
        "a.jpg,unicorn\n"
        "a.jpg,star\n"
        ",square\n"
    )

    result = check(text, lead)

    assert not result.is_valid
    errors = {row.number: row.errors for row in result.rows if row.outcome == RowOutcome.INVALID}
    assert errors == {
        2: {"image": "No image with original_name 'missing.jpg'."},
        3: {"image": "2 images have original_name 'twice.jpg'; give its sha256 instead."},
        4: {"label": errors[4]["label"]},
        5: {"label": "Row 1 gives this image the label 'square'."},
        6: {"image": "No image given: fill 'sha256' (or 'original_name' or 'file')."},
    }
    assert errors[4]["label"].startswith("Unknown label 'unicorn' (known labels: circle, cross,")
    with pytest.raises(Exception, match="invalid"):
        label_rows_apply(check=result, user=lead, file_name="bad.csv")
    assert not Review.objects.exists() and Image.objects.get(pk=a.pk).final_label is None


def test_a_file_without_an_image_or_label_column_is_refused(lead, labels):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="needs a 'sha256'") as refused:
        check("name,category\nx.jpg,square\n", lead)
    assert "';'" not in refused.value.messages[0]
    # Saved by a spreadsheet that separates columns with semicolons: the reason says so.
    with pytest.raises(ValidationError, match="separate its columns with ';': save it as comma-separated"):
        check("original_name;label\nx.jpg;square\n", lead)


# A quote left open on line 2 swallows the rest of the file into one field, past the csv module's limit.
UNREADABLE_CSV = 'original_name,label\n"a.jpg,square\n' + "b.jpg,circle\n" * 12_000


def test_a_file_the_csv_module_cannot_read_is_refused_with_its_line(client_for, lead, labels, tmp_path):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="row starting at line 2: field larger than field limit"):
        check(UNREADABLE_CSV, lead)

    path = tmp_path / "labels.csv"
    path.write_text(UNREADABLE_CSV)
    with pytest.raises(CommandError, match="labels.csv: Not a CSV this import can read: the row starting at line 2"):
        call_command("import_labels", str(path), "--dry-run", "--user", lead.username)

    response = client_for(lead).post(
        reverse(IMPORT_URL), {"format": "0", "resource": "0", "import_file": csv_upload(UNREADABLE_CSV)}, follow=True
    )
    assert response.redirect_chain == [(reverse(IMPORT_URL), 302)]  # back to the form, the reason above it
    assert "Not a CSV this import can read: the row starting at line 2" in response.content.decode()
    assert not LabelOperation.objects.exists() and not LabelImportJob.objects.exists()


def test_the_preview_refuses_a_file_without_its_columns_in_words_alone(client_for, lead, labels):
    response = client_for(lead).post(
        reverse(IMPORT_URL), {"format": "0", "resource": "0", "import_file": csv_upload("name,lbl\nx.jpg,square\n")}
    )
    html = response.content.decode()
    assert "The file needs a &#x27;sha256&#x27;" in html or "The file needs a 'sha256'" in html
    assert "Traceback" not in html and "[&quot;" not in html and "[&#x27;" not in html


def test_images_are_looked_up_in_bulk_not_per_row(image_factory, labels, lead, django_assert_max_num_queries):
    images = [image_factory() for _ in range(120)]
    text = "sha256,label\n" + "".join(f"{image.sha256},square\n" for image in images)

    # Labels, the active version, one query for the images, one for their predictions.
    with django_assert_max_num_queries(4):
        result = check(text, lead)

    assert len(result.decisions) == 120


def test_names_with_folder_paths_match_in_full_and_by_a_bare_name_only_when_it_is_unambiguous(
    image_factory, labels, lead
):
    """Zips and dropped folders keep each file's path as its name (issue 17, item 7)."""
    site_a = image_factory(name="site_a/DSC_505.jpg")
    site_b = image_factory(name="site_b/DSC_505.jpg")
    alone = image_factory(name="site_a/DSC_777.jpg")
    loose = image_factory(name="IMG_1.jpg")
    image_factory(name="site_c/IMG_1.jpg")
    text = (
        "original_name,label\n"
        "site_a/DSC_505.jpg,square\n"
        "site_b/DSC_505.jpg,star\n"
        "DSC_505.jpg,circle\n"
        "DSC_777.jpg,cross\n"
        "IMG_1.jpg,square\n"
        "site_z/DSC_505.jpg,square\n"
    )

    result = check(text, lead)

    by_number = {row.number: row for row in result.rows}
    assert [by_number[n].image_id for n in (1, 2, 4, 5)] == [site_a.pk, site_b.pk, alone.pk, loose.pk]
    assert by_number[3].errors == {
        "image": "2 images in different folders are named 'DSC_505.jpg' (site_a/DSC_505.jpg, site_b/DSC_505.jpg); "
        "give its path or its sha256 instead."
    }
    assert by_number[6].errors == {"image": "No image with original_name 'site_z/DSC_505.jpg'."}
    assert by_number[3].image_id is None  # never one of the two at random


def test_a_zip_members_name_as_the_upload_report_gives_it_finds_the_image(image_factory, labels, lead):
    """The report names a member with its archive ("photos.zip/cats/tom.jpg"); the image keeps its path in it."""
    tom = image_factory(name="cats/tom.jpg")
    top = image_factory(name="top.jpg")
    text = (
        "original_name,label\n"
        "photos.zip/cats/tom.jpg,square\n"
        "site/More.ZIP/top.jpg,star\n"  # a zip dropped in a folder
        "photos.zip/cats/none.jpg,star\n"
        "photos.zip,star\n"
    )

    rows = check(text, lead).rows

    assert [row.image_id for row in rows[:2]] == [tom.pk, top.pk]
    assert rows[2].errors == {"image": "No image with original_name 'photos.zip/cats/none.jpg'."}
    assert rows[3].errors == {"image": "No image with original_name 'photos.zip'."}


def test_bare_names_of_images_in_folders_are_looked_up_in_bulk(
    image_factory, labels, lead, django_assert_max_num_queries
):
    images = [image_factory(name=f"folder-{number % 3}/shot-{number}.jpg") for number in range(60)]
    text = "original_name,label\n" + "".join(f"shot-{number}.jpg,square\n" for number in range(60))

    # Labels, the active version, the exact names, the names with folders, their states, their predictions.
    with django_assert_max_num_queries(6):
        result = check(text, lead)

    assert sorted(decision.image_id for decision in result.decisions) == sorted(image.pk for image in images)


# --- applying ---------------------------------------------------------------------------


def test_an_applied_file_is_one_operation_that_undo_takes_back(image_factory, prediction_factory, labels, lead):
    predicted = prediction_factory(label="square", name="p.jpg")
    plain = image_factory(name="plain.jpg")
    result = check("original_name,label\np.jpg,circle\nplain.jpg,star\n", lead)

    applied = label_rows_apply(check=result, user=lead, file_name="two.csv")

    operation = applied.operation
    assert (operation.kind, operation.image_count, applied.changed) == (LabelOperation.Kind.IMPORT, 2, 2)
    assert "two.csv" in operation.description
    reviews = {review.image_id: review for review in Review.objects.filter(operation=operation)}
    assert {review.source for review in reviews.values()} == {Review.Source.IMPORT}
    assert reviews[predicted.image_id].prediction == predicted and reviews[predicted.image_id].agreed is False
    assert reviews[plain.pk].agreed is None

    label_operation_undo(operation=operation, user=lead)

    assert Image.objects.filter(pk__in=[predicted.image_id, plain.pk], final_label__isnull=False).count() == 0


def test_a_file_that_changes_nothing_leaves_no_operation(image_factory, labels, lead):
    image_factory(name="a.jpg")

    assert label_rows_apply(check=check("original_name,label\na.jpg,\n", lead), user=lead, file_name="x") is None
    assert not LabelOperation.objects.exists()


# --- big files in the cluster, from the admin ------------------------------------------


@pytest.fixture
def small_sync_limit(settings):
    settings.LABEL_IMPORT_SYNC_MAX_ROWS = 2


def test_a_big_file_is_a_dry_run_job_whose_page_offers_to_apply_it(
    client_for, lead, image_factory, labels, small_sync_limit, django_capture_on_commit_callbacks
):
    images = [image_factory(name=f"big-{n}.jpg") for n in range(3)]
    text = "original_name,label\n" + "".join(f"{image.original_name},square\n" for image in images)
    client = client_for(lead)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse(IMPORT_URL), {"format": "0", "resource": "0", "import_file": csv_upload(text)})

    dry_run = LabelImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:predictions_labelimportjob_change", args=[dry_run.pk])
    assert (dry_run.dry_run, dry_run.status, dry_run.total_rows, dry_run.rows_checked) == (True, "done", 3, 3)
    assert dry_run.report["change"] == 3
    assert not Review.objects.exists()  # a dry run writes no label
    page = client.get(response["Location"]).content.decode()
    assert "Apply this file" in page and "3 / 3" in page

    with django_capture_on_commit_callbacks(execute=True):
        applied_response = client.post(reverse("admin:predictions_labelimportjob_apply", args=[dry_run.pk]))

    applying = LabelImportJob.objects.exclude(pk=dry_run.pk).get()
    assert applied_response["Location"] == reverse("admin:predictions_labelimportjob_change", args=[applying.pk])
    assert (applying.dry_run, applying.status, applying.rows_checked, applying.rows_applied) == (False, "done", 3, 3)
    assert applying.operation.kind == LabelOperation.Kind.IMPORT and applying.operation.image_count == 3
    assert Image.objects.filter(final_label=labels["square"]).count() == 3
    page = client.get(applied_response["Location"]).content.decode()
    assert reverse("admin:predictions_labeloperation_undo", args=[applying.operation.pk]) in page
    assert "Apply this file" not in page
    listing = client.get(reverse("admin:predictions_labelimportjob_changelist"))
    assert listing.status_code == 200 and "Dry run" in listing.content.decode()


def test_a_dry_run_with_invalid_rows_cannot_be_applied(
    client_for, lead, image_factory, labels, small_sync_limit, django_capture_on_commit_callbacks
):
    image_factory(name="a.jpg")
    client = client_for(lead)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse(IMPORT_URL),
            {"format": "0", "resource": "0", "import_file": csv_upload("original_name,label\na.jpg,x\nb.jpg,y\nc,z\n")},
        )
    job = LabelImportJob.objects.get()

    page = client.get(reverse("admin:predictions_labelimportjob_change", args=[job.pk])).content.decode()
    response = client.post(reverse("admin:predictions_labelimportjob_apply", args=[job.pk]), follow=True)

    assert job.report["invalid"] == 3 and "No image with original_name &#x27;b.jpg&#x27;" in page
    assert "Apply this file" not in page
    assert "found invalid rows" in response.content.decode()
    assert LabelImportJob.objects.count() == 1 and not Review.objects.exists()


def test_an_apply_whose_rows_became_invalid_since_the_dry_run_fails_and_changes_nothing(
    client_for, lead, image_factory, labels, small_sync_limit, django_capture_on_commit_callbacks
):
    from predictions.services.label_import_jobs import label_import_job_apply_start

    images = [image_factory(name=f"n{n}.jpg") for n in range(3)]
    client = client_for(lead)
    text = "original_name,label\n" + "".join(f"{image.original_name},star\n" for image in images)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse(IMPORT_URL), {"format": "0", "resource": "0", "import_file": csv_upload(text)})
    dry_run = LabelImportJob.objects.get()
    images[1].delete()

    with django_capture_on_commit_callbacks(execute=True):
        applying = label_import_job_apply_start(job=dry_run, user=lead)

    applying.refresh_from_db()
    assert applying.status == "failed" and "Nothing applied" in applying.error
    assert applying.report["problems"] == [{"row": 2, "errors": {"image": "No image with original_name 'n1.jpg'."}}]
    assert applying.operation is None and not Review.objects.exists()


def test_only_importers_apply_and_only_leads_apply_a_file_that_changes_reviewed_images(
    client_for, lead, reviewer, django_user_model, image_factory, labels
):
    from django.contrib.auth.models import Permission

    image_factory(name="a.jpg")
    job = LabelImportJob.objects.create(
        file="label-imports/x.csv", file_name="x.csv", status="done", total_rows=1,
        report={"rows": 1, "change": 1, "unchanged": 0, "skipped": {}, "invalid": 0, "problems": [],
                "options": {"overwrite_reviewed": True}},
        created_by=lead,
    )  # fmt: skip
    importer = django_user_model.objects.create_user("importer", password="x", is_staff=True)
    importer.user_permissions.add(
        *Permission.objects.filter(codename__in=["import_review", "view_labelimportjob", "view_review"])
    )
    apply_url = reverse("admin:predictions_labelimportjob_apply", args=[job.pk])

    assert client_for(reviewer).post(apply_url).status_code == 403
    assert client_for(importer).post(apply_url).status_code == 403  # may import, may not overwrite
    assert LabelImportJob.objects.count() == 1


def test_the_upload_form_offers_overwriting_reviewed_images_to_leads_only(client_for, lead, django_user_model):
    from django.contrib.auth.models import Permission

    importer = django_user_model.objects.create_user("importer", password="x", is_staff=True)
    importer.user_permissions.add(*Permission.objects.filter(codename__in=["import_review", "view_review"]))

    assert "overwrite_reviewed" in client_for(lead).get(reverse(IMPORT_URL)).content.decode()
    assert "overwrite_reviewed" not in client_for(importer).get(reverse(IMPORT_URL)).content.decode()


def test_a_lead_overwriting_through_the_preview_changes_reviewed_images(client_for, lead, reviewer, image_factory, labels):
    image = image_factory(name="a.jpg")
    review_submit(image=image, reviewer=reviewer, label=labels["circle"])
    client = client_for(lead)
    text = "original_name,label\na.jpg,star\n"

    default = client.post(reverse(IMPORT_URL), {"format": "0", "resource": "0", "import_file": csv_upload(text)})
    overwriting = client.post(
        reverse(IMPORT_URL),
        {"format": "0", "resource": "0", "import_file": csv_upload(text), "overwrite_reviewed": "on"},
    )
    form = overwriting.context["confirm_form"]
    done = client.post(
        reverse("admin:predictions_review_process_import"), {name: form.initial[name] for name in form.fields}
    )

    assert default.context["result"].totals["skip"] == 1  # already reviewed: left alone
    # The preview lists the change as an update with the label it replaces: old -> new before confirming.
    assert (overwriting.context["result"].totals["update"], overwriting.context["result"].totals["new"]) == (1, 0)
    assert "replaces “circle”" in overwriting.content.decode()
    assert done.status_code == 302
    assert Image.objects.get(pk=image.pk).final_label == labels["star"]
    operation = LabelOperation.objects.get()  # the confirmed preview is one undoable operation
    label_operation_undo(operation=operation, user=lead)
    assert Image.objects.get(pk=image.pk).final_label == labels["circle"]


# --- the command --------------------------------------------------------------------------


def test_the_command_checks_applies_and_refuses_like_the_admin(tmp_path, image_factory, labels, lead, reviewer):
    a, b = image_factory(name="a.jpg"), image_factory(name="b.jpg")
    review_submit(image=b, reviewer=reviewer, label=labels["circle"])
    path = tmp_path / "labels.csv"
    path.write_text(f"original_name,label\na.jpg,square\n{b.original_name},star\n", encoding="utf-8")
    out = io.StringIO()

    call_command("import_labels", str(path), "--dry-run", "--user", lead.username, stdout=out, verbosity=0)
    assert not Review.objects.filter(source=Review.Source.IMPORT).exists()
    assert "1 change a label" in out.getvalue() and "already reviewed: 1" in out.getvalue()

    with pytest.raises(CommandError, match="may not change reviewed images"):
        call_command("import_labels", str(path), "--user", reviewer.username, "--overwrite", verbosity=0)

    call_command("import_labels", str(path), "--user", lead.username, stdout=out, verbosity=0)
    assert Image.objects.get(pk=a.pk).final_label == labels["square"]
    assert Image.objects.get(pk=b.pk).final_label == labels["circle"]
    operation = LabelOperation.objects.get(kind=LabelOperation.Kind.IMPORT)
    assert operation.created_by == lead and operation.image_count == 1

    call_command("import_labels", str(path), "--user", lead.username, "--overwrite", stdout=out, verbosity=0)
    assert Image.objects.get(pk=b.pk).final_label == labels["star"]

    path.write_text("original_name,label\nnope.jpg,square\n", encoding="utf-8")
    with pytest.raises(CommandError, match="1 invalid row"):
        call_command("import_labels", str(path), "--user", lead.username, stdout=out, verbosity=0)


# --- reviewers at work while a file applies -----------------------------------------------


# serialized_rollback: after another transactional test that used it, the flush leaves no
# permissions behind (Django skips post_migrate then), and the reviewer would get 403.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.skipif(connection.vendor != "sqlite", reason="'database is locked' is SQLite's failure mode")
def test_a_reviewer_decides_without_error_while_an_import_applies(
    image_factory, labels, lead, reviewer, monkeypatch
):
    """Between two of the import's write batches a reviewer decides through the review
    screen, from another thread and connection. Were the import one transaction, that
    decision would wait on SQLite's write lock and fail with "database is locked"."""
    monkeypatch.setattr(operations, "WRITE_BATCH", 4)
    images = [image_factory(name=f"load-{n:02d}.jpg") for n in range(12)]
    result = check("original_name,label\n" + "".join(f"{i.original_name},square\n" for i in images), lead)
    contested = images[-1]  # in the import's last batch: reviewed before the import reaches it
    answers: list = []

    def decide() -> None:
        try:
            with connection.cursor() as cursor:  # this thread's own connection; fail fast if locked
                cursor.execute("PRAGMA busy_timeout = 3000")
            client = Client()
            client.force_login(reviewer)
            response = client.post(
                reverse("admin:predictions_review_decide"), {"image": contested.pk, "label": labels["circle"].pk}
            )
            answers.append((response.status_code, response.content.decode()[:300]))
        except Exception as exc:  # noqa: BLE001 - the failure is the test's finding
            answers.append((500, repr(exc)))
        finally:
            connection.close()

    def between_batches(_result, done: int) -> None:
        assert not connection.in_atomic_block  # each batch committed on its own
        if done == 4:
            reviewer_thread = threading.Thread(target=decide)
            reviewer_thread.start()
            reviewer_thread.join()

    applied = label_rows_apply(check=result, user=lead, file_name="load.csv", progress=between_batches)

    assert answers and answers[0][0] == 200, answers
    assert Image.objects.get(pk=contested.pk).final_label == labels["circle"]  # the reviewer's decision stands
    assert applied.changed == 11 and applied.skipped == {SkipReason.REVIEWED: 1}
