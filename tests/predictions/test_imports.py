"""Importing existing labels through import-export's screen: preview, per-row errors, all or nothing."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from predictions.models import Label, Review
from predictions.resources import LabelImportResource

IMPORT_URL = "admin:predictions_review_import"
PROCESS_URL = "admin:predictions_review_process_import"


def csv_upload(text: str, name: str = "labels.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode("utf-8"), content_type="text/csv")


def preview(client, text: str):
    """Upload a file to the import screen: the dry run and its preview."""
    return client.post(reverse(IMPORT_URL), {"format": "0", "resource": "0", "import_file": csv_upload(text)})


def confirm(client, preview_response):
    form = preview_response.context["confirm_form"]
    return client.post(reverse(PROCESS_URL), {name: form.initial[name] for name in form.fields})


@pytest.fixture
def images(active_model_version, prediction_factory, image_factory):
    """A predicted square, a predicted circle, and an image without a prediction."""
    square = prediction_factory(label="square", name="sq.jpg").image
    circle = prediction_factory(label="circle", name="ci.jpg").image
    plain = image_factory(name="plain.jpg")
    return {"square": square, "circle": circle, "plain": plain}


def test_file_with_a_bad_row_shows_the_errors_and_imports_nothing(client_for, lead, images):
    text = (
        "sha256,label\n"
        f"{images['square'].sha256},square\n"
        f"{'0' * 64},circle\n"
        f"{images['circle'].sha256},unicorn\n"
    )
    client = client_for(lead)

    response = preview(client, text)

    assert response.status_code == 200
    result = response.context["result"]
    assert result.has_validation_errors()
    assert "confirm_form" not in response.context
    errors = {row.number: row.error_dict for row in result.invalid_rows}
    assert set(errors) == {2, 3}
    assert f"No image with sha256 '{'0' * 64}'" in errors[2]["image"][0]
    assert "Unknown label 'unicorn'" in errors[3]["label"][0]
    page = response.content.decode()
    assert "Unknown label &#x27;unicorn&#x27;" in page
    assert not Review.objects.exists()
    images["square"].refresh_from_db()
    assert images["square"].final_label is None


def test_confirming_a_file_with_a_bad_row_still_imports_nothing(lead, images):
    """Whatever the screen, an invalid row rolls back the rows before it."""
    from import_export.formats.base_formats import CSV

    dataset = CSV().create_dataset(f"sha256,label\n{images['square'].sha256},square\n{'f' * 64},circle\n")

    result = LabelImportResource().import_data(dataset, dry_run=False, user=lead)

    assert result.has_validation_errors()
    assert not Review.objects.exists()


def test_clean_file_previews_then_applies_as_imported_reviews(client_for, lead, images):
    text = (
        "sha256,original_name,label\n"
        f"{images['square'].sha256},,square\n"  # agrees with the model
        f",ci.jpg,star\n"  # found by its file name; disagrees
        f",plain.jpg,cross\n"  # no prediction: agreement unknown
    )
    client = client_for(lead)

    response = preview(client, text)
    assert response.status_code == 200
    assert not response.context["result"].has_validation_errors()
    assert not Review.objects.exists()  # a preview writes nothing

    done = confirm(client, response)

    assert done.status_code == 302
    reviews = {review.image_id: review for review in Review.objects.all()}
    assert len(reviews) == 3
    for review in reviews.values():
        assert (review.source, review.reviewer, review.undone_at) == (Review.Source.IMPORT, lead, None)
    assert reviews[images["square"].pk].agreed is True
    assert reviews[images["circle"].pk].agreed is False
    assert reviews[images["plain"].pk].agreed is None
    assert reviews[images["circle"].pk].prediction.label.name == "circle"
    for key, label in (("square", "square"), ("circle", "star"), ("plain", "cross")):
        images[key].refresh_from_db()
        assert (images[key].final_label.name, images[key].reviewed_by, images[key].review_count) == (label, lead, 1)


def test_an_exported_label_column_imports_back(lead, images):
    """The label export's columns (sha256, final_label, formula-quoted text) are accepted."""
    from import_export.formats.base_formats import CSV

    Label.objects.create(name="-odd-", order=50)
    dataset = CSV().create_dataset(f"id,sha256,final_label\n1,{images['plain'].sha256},'-odd-\n")

    result = LabelImportResource().import_data(dataset, dry_run=False, user=lead)

    assert not result.has_validation_errors() and not result.has_errors()
    images["plain"].refresh_from_db()
    assert images["plain"].final_label.name == "-odd-"


def test_ambiguous_file_name_asks_for_the_sha256(lead, images, image_factory):
    from import_export.formats.base_formats import CSV

    image_factory(name="plain.jpg")
    dataset = CSV().create_dataset("original_name,label\nplain.jpg,square\n")

    result = LabelImportResource().import_data(dataset, user=lead)

    (row,) = result.invalid_rows
    assert "2 images have original_name 'plain.jpg'" in row.error_dict["image"][0]


def test_file_without_the_needed_columns_is_refused(client_for, lead, images):
    response = preview(client_for(lead), "name,category\nsq.jpg,square\n")

    result = response.context["result"]
    assert result.has_errors()
    assert "needs a 'sha256'" in str(result.base_errors[0].error)
    assert not Review.objects.exists()


def test_import_needs_the_import_permission(client_for, reviewer, lead, images):
    reviewer_client = client_for(reviewer)
    changelist = reverse("admin:predictions_review_changelist")

    assert reverse(IMPORT_URL) not in reviewer_client.get(changelist).content.decode()
    assert reviewer_client.get(reverse(IMPORT_URL)).status_code == 403
    assert preview(reviewer_client, f"sha256,label\n{images['square'].sha256},square\n").status_code == 403
    assert not Review.objects.exists()
    assert reverse(IMPORT_URL) in client_for(lead).get(changelist).content.decode()


# --- export -> import round trip -----------------------------------------------------------

# Names a spreadsheet would run (exported with a leading quote), one that starts with a
# quote already, and a plain one.
ROUND_TRIP_NAMES = ("=cmd|' /C calc'!A0.jpg", "+1.jpg", "-2.jpg", "@sum.jpg", "'=quoted.jpg", "plain.jpg")


def exported_csv(client, columns: tuple[str, ...] | None) -> str:
    """The admin's label export of every image as CSV text, with these columns (None: all)."""
    from predictions.resources import ImageLabelResource

    data = {"format": "0", "resource": "0"}
    for field_name in ImageLabelResource().get_export_order():
        if columns is None or field_name in columns:
            data[f"imagelabelresource_{field_name}"] = "on"
    response = client.post(reverse("admin:images_image_export"), data)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return response.content.decode("utf-8")


def label_state(image_ids):
    from images.models import Image

    fields = ("original_name", "final_label_id", "reviewed_by_id", "reviewed_at", "review_count")
    return {values[0]: values[1:] for values in Image.objects.filter(pk__in=image_ids).values_list("pk", *fields)}


@pytest.mark.parametrize(
    "columns", [("original_name", "final_label"), None], ids=["by-original-name", "whole-export"]
)
def test_an_export_imports_back_matching_every_row_and_changing_nothing(
    client_for, lead, reviewer, active_model_version, image_factory, columns
):
    """Formula-escaped names ('=cmd…) are found again, and a row whose label is the
    image's current one (or empty: not reviewed) changes nothing."""
    from predictions.services.reviews import review_submit

    odd = Label.objects.create(name="-odd-", order=50)
    square = Label.objects.get(name="square")
    images = [image_factory(name=name) for name in ROUND_TRIP_NAMES]
    for image, label in zip(images, (square, odd, square, None, odd, None)):
        if label is not None:
            review_submit(image=image, reviewer=reviewer, label=label)
    before = label_state([image.pk for image in images])
    reviews_before = Review.objects.count()
    client = client_for(lead)
    text = exported_csv(client, columns)
    assert "'=cmd|" in text and "'+1.jpg" in text and "''=quoted.jpg" in text  # escaped on the way out

    response = preview(client, text)  # the dry run

    result = response.context["result"]
    assert not result.has_errors() and not result.has_validation_errors(), [
        (row.number, row.error_dict) for row in result.invalid_rows
    ]
    assert result.totals["skip"] == len(images)
    assert sum(result.totals.values()) == len(images)

    done = confirm(client, response)  # the apply

    assert done.status_code == 302
    assert Review.objects.count() == reviews_before
    assert label_state([image.pk for image in images]) == before
