"""django-import-export resources: the label export of images, the label import of reviews.

One export row is built in exactly one place, `ImageLabelResource.export_field`
(every cell) and `get_export_headers` (the header), and both the immediate
export of the admin and the background export of the cluster
(`predictions.services.exports`) go through them, so the two cannot drift and
neither can skip the spreadsheet-formula neutralisation.
"""

from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urljoin

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from import_export import fields, resources, widgets

from images.models import Image
from predictions.models import Label, ModelVersion, Prediction, Review
from predictions.selectors.exports import export_model_version, image_export_queryset
from predictions.services.reviews import review_submit

# A spreadsheet reads a cell starting with one of these as a formula (tab and
# carriage return hide one behind whitespace). Prefixing a single quote makes
# it text in Excel, LibreOffice and Google Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(value: Any) -> Any:
    """Neutralise a text cell a spreadsheet would run; anything not text is left as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def unescape_formula(value: str) -> str:
    """The text `escape_formula` was given (so an exported file imports back)."""
    if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


class IsoDateTimeWidget(widgets.Widget):
    """ISO 8601 with the offset, in the site's time zone: unambiguous in any tool."""

    def render(self, value, obj=None, **kwargs):
        if not isinstance(value, datetime):
            return ""
        return timezone.localtime(value).isoformat(timespec="seconds")


ACTIVE_VERSION = "active"

# Numbers stay numbers (never strings), so a negative value is not taken for a
# formula, and spreadsheets sort and sum them.
NUMBER = widgets.IntegerWidget(coerce_to_string=False)
FLOAT = widgets.FloatWidget(coerce_to_string=False)


class ImageLabelResource(resources.ModelResource):
    """One row per image: the file, its upload, the model's prediction and the current review."""

    #: Key stored with a background export to find this resource again.
    export_key = "labels"

    id = fields.Field(attribute="id", column_name="id", widget=NUMBER)
    original_name = fields.Field(attribute="original_name", column_name="original_name")
    sha256 = fields.Field(attribute="sha256", column_name="sha256")
    image_url = fields.Field(column_name="image_url")
    upload_batch = fields.Field(attribute="batch", column_name="upload_batch")
    uploaded_by = fields.Field(attribute="uploaded_by__username", column_name="uploaded_by")
    uploaded_at = fields.Field(attribute="uploaded_at", column_name="uploaded_at", widget=IsoDateTimeWidget())
    model_version = fields.Field(column_name="model_version")
    predicted_label = fields.Field(attribute="export_predicted_label", column_name="predicted_label")
    confidence = fields.Field(attribute="export_confidence", column_name="confidence", widget=FLOAT)
    final_label = fields.Field(attribute="final_label__name", column_name="final_label")
    reviewed_by = fields.Field(attribute="reviewed_by__username", column_name="reviewed_by")
    reviewed_at = fields.Field(attribute="reviewed_at", column_name="reviewed_at", widget=IsoDateTimeWidget())
    agreed_with_model = fields.Field(
        attribute="export_agreed", column_name="agreed_with_model", widget=widgets.BooleanWidget()
    )
    review_count = fields.Field(attribute="review_count", column_name="review_count", widget=NUMBER)

    class Meta:
        model = Image
        name = "Labels (one row per image)"
        fields = (
            "id", "original_name", "sha256", "image_url", "upload_batch", "uploaded_by", "uploaded_at",
            "model_version", "predicted_label", "confidence", "final_label", "reviewed_by", "reviewed_at",
            "agreed_with_model", "review_count",
        )  # fmt: skip
        export_order = fields
        chunk_size = 2000

    def __init__(self, *, base_url: str = "", model_version: ModelVersion | None | str = ACTIVE_VERSION, **kwargs):
        """`base_url` ("https://host/") makes image URLs absolute; the predictions
        shown are `model_version`'s, by default the active one's (None: none)."""
        super().__init__(**kwargs)
        self.base_url = base_url
        self.model_version = export_model_version() if model_version == ACTIVE_VERSION else model_version

    def filter_export(self, queryset: QuerySet[Image], **kwargs) -> QuerySet[Image]:
        return image_export_queryset(queryset=queryset, model_version=self.model_version)

    def export_field(self, field, instance, **kwargs):
        return escape_formula(super().export_field(field, instance, **kwargs))

    def get_export_headers(self, selected_fields=None):
        return [escape_formula(header) for header in super().get_export_headers(selected_fields)]

    def dehydrate_image_url(self, image: Image) -> str:
        if not image.file:
            return ""
        return urljoin(self.base_url, image.file.url) if self.base_url else image.file.url

    def dehydrate_model_version(self, image: Image) -> str:
        has_prediction = getattr(image, "export_predicted_label", None) is not None
        return self.model_version.name if self.model_version and has_prediction else ""


def _probability(index: int, image: Image) -> float | None:
    probabilities = getattr(image, "export_probabilities", None)
    if not probabilities or index >= len(probabilities):
        return None
    return probabilities[index]


class ImageLabelWithProbabilitiesResource(ImageLabelResource):
    """The label export plus one `prob_<class>` column per class of the model version."""

    export_key = "labels_with_probabilities"

    class Meta(ImageLabelResource.Meta):
        name = "Labels with class probabilities"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        class_names = self.model_version.class_names if self.model_version else []
        for index, class_name in enumerate(class_names):
            name = f"prob_{class_name}"
            self.fields[name] = fields.Field(
                column_name=name, widget=FLOAT, dehydrate_method=partial(_probability, index)
            )


EXPORT_RESOURCES: dict[str, type[ImageLabelResource]] = {
    resource.export_key: resource for resource in (ImageLabelResource, ImageLabelWithProbabilitiesResource)
}


class LabelImportResource(resources.ModelResource):
    """Existing labels from a CSV: each row becomes a Review by the importing user.

    Columns: `sha256` (or `original_name`, or `file`, the storage name) to find
    the image, and `label` (`final_label`, as in the label export, is accepted
    too). Each row goes through `review_submit`, so the image's current label
    follows, and `agreed` is set against the active version's prediction. An
    unknown image or label is a validation error of that row; any error rolls
    the whole file back.
    """

    IMAGE_COLUMNS = ("sha256", "original_name", "file")
    LABEL_COLUMNS = ("label", "final_label")

    image = fields.Field(attribute="image", column_name="image", readonly=True)
    label = fields.Field(attribute="label", column_name="label", readonly=True)

    class Meta:
        model = Review
        name = "Labels (sha256 or original_name, label)"
        fields = ("image", "label")
        force_init_instance = True
        use_transactions = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._images: dict[tuple[str, str], list[Image]] = {}
        self._labels: dict[str, Label] = {}
        self._active_predictions: dict[int, Prediction] = {}

    def get_user_visible_fields(self):
        # What the import screen lists as the expected columns.
        return [
            fields.Field(column_name="sha256 | original_name | file"),
            fields.Field(column_name="label"),
        ]

    def import_data(self, dataset, *args, **kwargs):
        # Any invalid row rolls back the whole file, whichever screen imports it.
        kwargs["rollback_on_validation_errors"] = True
        return super().import_data(dataset, *args, **kwargs)

    def before_import(self, dataset, **kwargs):
        """Look up every image, label and active prediction the file names, in a few queries."""
        headers = set(dataset.headers or ())
        if not headers & set(self.IMAGE_COLUMNS) or not headers & set(self.LABEL_COLUMNS):
            raise ValueError(
                "The file needs a 'sha256' (or 'original_name' or 'file') column and a 'label' column; "
                f"it has: {', '.join(dataset.headers or ()) or 'no header'}."
            )
        self._labels = {label.name: label for label in Label.objects.all()}
        for column in self.IMAGE_COLUMNS:
            if column not in headers:
                continue
            values = {str(value).strip() for value in dataset[column] if value not in (None, "")}
            lookup = {"sha256": "sha256__in", "original_name": "original_name__in", "file": "file__in"}[column]
            for start in range(0, len(values), 500):
                batch = sorted(values)[start : start + 500]
                for image in Image.objects.filter(**{lookup: batch}):
                    key_value = image.file.name if column == "file" else getattr(image, column)
                    self._images.setdefault((column, key_value), []).append(image)
        image_ids = [images[0].pk for images in self._images.values()]
        for start in range(0, len(image_ids), 500):
            for prediction in Prediction.objects.filter(
                image_id__in=image_ids[start : start + 500], model_version__is_active=True
            ).select_related("label"):
                self._active_predictions[prediction.image_id] = prediction

    def _row_value(self, row, columns) -> tuple[str, str]:
        for column in columns:
            value = row.get(column)
            if value not in (None, ""):
                return column, unescape_formula(str(value).strip())
        return "", ""

    def _find_image(self, row) -> Image:
        column, value = self._row_value(row, self.IMAGE_COLUMNS)
        if not column:
            raise ValueError("No image given: fill 'sha256' (or 'original_name' or 'file').")
        matches = self._images.get((column, value), [])
        if not matches:
            raise ValueError(f"No image with {column} '{value}'.")
        if len(matches) > 1:
            raise ValueError(f"{len(matches)} images have {column} '{value}'; give its sha256 instead.")
        return matches[0]

    def _find_label(self, row) -> Label:
        _, value = self._row_value(row, self.LABEL_COLUMNS)
        if not value:
            raise ValueError("No label given.")
        label = self._labels.get(value)
        if label is None:
            known = ", ".join(sorted(self._labels)) or "none defined"
            raise ValueError(f"Unknown label '{value}' (known labels: {known}).")
        return label

    def import_instance(self, instance: Review, row, **kwargs):
        errors = {}
        for name, find in (("image", self._find_image), ("label", self._find_label)):
            try:
                setattr(instance, name, find(row))
            except ValueError as exc:
                errors[name] = ValidationError(str(exc), code="invalid")
        if errors:
            raise ValidationError(errors)

    def save_instance(self, instance: Review, is_create, row, **kwargs):
        review = review_submit(
            image=instance.image,
            reviewer=kwargs["user"],
            label=instance.label,
            prediction=self._active_predictions.get(instance.image.pk),
            source=Review.Source.IMPORT,
        )
        # The row result (preview, admin log) reports the Review just written.
        instance.pk = review.pk
        instance.reviewer = review.reviewer
        instance.prediction = review.prediction
        instance.agreed = review.agreed
        instance.source = review.source
        instance.created_at = review.created_at
