"""django-import-export resources: the label export of images, the label import of reviews.

One export row is defined in exactly one place, `ImageLabelResource.export_cells`:
a small function per column over the image's `.values()` (its prediction,
latest review and related names come with it, from `image_export_queryset`).
The immediate export of the admin (`export()`, the tablib Dataset import-export
writes) and the background export of the cluster (`predictions.services.exports`)
both build their rows with `export_row_function`, so the two cannot drift and
neither can skip the spreadsheet-formula neutralisation.

Rows are built from values rather than model instances: with instances, a 100k
row export spent most of its time building five objects per row and walking
import-export's per-field machinery, not in the database or the CSV writer.
"""

from collections.abc import Callable
from functools import lru_cache
from operator import itemgetter
from typing import Any
from urllib.parse import urljoin

import tablib
from django.core.exceptions import ValidationError
from django.core.files.storage import FileSystemStorage
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.encoding import filepath_to_uri
from import_export import fields, resources

from images.models import Image, UploadBatch
from predictions.models import Label, ModelVersion, Prediction, Review
from predictions.selectors.exports import image_export_queryset
from predictions.selectors.versions import model_version_active, model_version_active_id
from predictions.services.reviews import review_submit
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks

# A spreadsheet reads a cell starting with one of these as a formula (tab and
# carriage return hide one behind whitespace). Prefixing a single quote makes
# it text in Excel, LibreOffice and Google Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Text that already starts with a quote gets one more, as a spreadsheet would
# hide the first: otherwise "'=x" would import back as "=x".
_QUOTED_PREFIXES = (*FORMULA_PREFIXES, "'")


def escape_formula(value: Any) -> Any:
    """Neutralise a text cell a spreadsheet would run; anything not text is left as it is."""
    if isinstance(value, str) and value.startswith(_QUOTED_PREFIXES):
        return "'" + value
    return value


def unescape_formula(value: str) -> str:
    """The text `escape_formula` was given (so an exported file imports back)."""
    if value.startswith("'") and value[1:].startswith(_QUOTED_PREFIXES):
        return value[1:]
    return value


ACTIVE_VERSION = "active"
AGREEMENT_CELLS = {True: "1", False: "0"}  # None (no live review) is an empty cell

ExportRow = Callable[[dict[str, Any]], list[Any]]
Cell = Callable[[dict[str, Any]], Any]


def file_url_function(*, base_url: str = "") -> Callable[[str], str]:
    """A stored image name -> its URL (absolute under `base_url` when given); '' for none.

    On the file-system storage a URL is its base URL plus the quoted name, so
    that prefix is worked out once and each row costs a concatenation; any
    other storage is asked per file.
    """
    storage = Image._meta.get_field("file").storage
    if isinstance(storage, FileSystemStorage) and storage.base_url is not None:
        prefix = urljoin(base_url, storage.base_url)
        return lambda name: prefix + filepath_to_uri(name).lstrip("/") if name else ""
    if base_url:
        return lambda name: urljoin(base_url, storage.url(name)) if name else ""
    return lambda name: storage.url(name) if name else ""


def _column(name: str) -> fields.Field:
    # The export form lists these and the header names them; the cells come
    # from ImageLabelResource.export_cells.
    return fields.Field(column_name=name, readonly=True)


class ImageLabelResource(resources.ModelResource):
    """One row per image: the file, its upload, the model's prediction and the current review."""

    #: Key stored with a background export to find this resource again.
    export_key = "labels"
    #: What a row is made from: these `.values()` of `image_export_queryset`.
    export_values = (
        "id", "original_name", "sha256", "file", "batch_id", "batch__name", "uploaded_by__username",
        "uploaded_at", "export_predicted_label", "export_confidence", "final_label__name",
        "reviewed_by__username", "reviewed_at", "export_agreed", "review_count",
    )  # fmt: skip

    id = _column("id")
    original_name = _column("original_name")
    sha256 = _column("sha256")
    image_url = _column("image_url")
    upload_batch = _column("upload_batch")
    uploaded_by = _column("uploaded_by")
    uploaded_at = _column("uploaded_at")
    model_version = _column("model_version")
    predicted_label = _column("predicted_label")
    confidence = _column("confidence")
    final_label = _column("final_label")
    reviewed_by = _column("reviewed_by")
    reviewed_at = _column("reviewed_at")
    agreed_with_model = _column("agreed_with_model")
    review_count = _column("review_count")

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
        self.model_version = model_version_active() if model_version == ACTIVE_VERSION else model_version

    def filter_export(self, queryset: QuerySet[Image], **kwargs) -> QuerySet:
        """The images of `queryset` as the `export_values` their rows are made from."""
        return image_export_queryset(queryset=queryset, model_version=self.model_version).values(
            *self.export_values
        )

    def export_cells(self) -> dict[str, Cell]:
        """Each export field's cell, a function of one image's `export_values`.

        Text is text ('' for none), numbers stay numbers (so a negative one is
        not taken for a formula, and spreadsheets sort and sum them), datetimes
        are ISO 8601 with the offset in the site's time zone (unambiguous in any
        tool), and the agreement is 1, 0 or empty.
        """
        zone = timezone.get_current_timezone()
        image_url = file_url_function(base_url=self.base_url)
        version_name = self.model_version.name if self.model_version else ""

        def text(name: str) -> Cell:
            return lambda values: values[name] or ""

        def iso_datetime(name: str) -> Cell:
            def cell(values):
                value = values[name]
                return "" if value is None else value.astimezone(zone).isoformat(timespec="seconds")

            return cell

        @lru_cache(maxsize=None)
        def batch_name(batch_id: int | None, name: str) -> str:
            return "" if batch_id is None else str(UploadBatch(pk=batch_id, name=name))

        return {
            "id": itemgetter("id"),
            "original_name": text("original_name"),
            "sha256": text("sha256"),
            "image_url": lambda values: image_url(values["file"]),
            "upload_batch": lambda values: batch_name(values["batch_id"], values["batch__name"]),
            "uploaded_by": text("uploaded_by__username"),
            "uploaded_at": iso_datetime("uploaded_at"),
            "model_version": lambda values: "" if values["export_predicted_label"] is None else version_name,
            "predicted_label": text("export_predicted_label"),
            "confidence": itemgetter("export_confidence"),
            "final_label": text("final_label__name"),
            "reviewed_by": text("reviewed_by__username"),
            "reviewed_at": iso_datetime("reviewed_at"),
            "agreed_with_model": lambda values: AGREEMENT_CELLS.get(values["export_agreed"], ""),
            "review_count": itemgetter("review_count"),
        }

    def export_row_function(self, selected_fields=None) -> ExportRow:
        """One image's `export_values` -> its CSV row: the chosen fields' cells, formula-escaped."""
        cells = self.export_cells()
        chosen = [cells[self.get_field_name(field)] for field in self.get_export_fields(selected_fields)]

        def row(values: dict[str, Any]) -> list[Any]:
            return [escape_formula(cell(values)) for cell in chosen]

        return row

    def get_export_headers(self, selected_fields=None):
        return [escape_formula(header) for header in super().get_export_headers(selected_fields)]

    def export(self, queryset=None, **kwargs) -> tablib.Dataset:
        """The admin's immediate export: import-export's Dataset, with rows from `export_row_function`."""
        self.before_export(queryset, **kwargs)
        if queryset is None:
            queryset = self.get_queryset()
        selected = kwargs.get("export_fields")
        row = self.export_row_function(selected)
        dataset = tablib.Dataset(headers=self.get_export_headers(selected_fields=selected))
        for values in self.filter_export(queryset, **kwargs).iterator(chunk_size=self.get_chunk_size()):
            dataset.append(row(values))
        self.after_export(queryset, dataset, **kwargs)
        return dataset

    def export_resource(self, instance, selected_fields=None, **kwargs):
        raise NotImplementedError("Label rows are made from values, not instances: use export_row_function().")


def _probability(probabilities: list[float] | None, index: int) -> float | None:
    if not probabilities or index >= len(probabilities):
        return None
    return probabilities[index]


class ImageLabelWithProbabilitiesResource(ImageLabelResource):
    """The label export plus one `prob_<class>` column per class of the model version."""

    export_key = "labels_with_probabilities"
    export_values = (*ImageLabelResource.export_values, "export_probabilities")

    class Meta(ImageLabelResource.Meta):
        name = "Labels with class probabilities"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for class_name in self._class_names():
            name = f"prob_{class_name}"
            self.fields[name] = _column(name)

    def _class_names(self) -> list[str]:
        return self.model_version.class_names if self.model_version else []

    def export_cells(self) -> dict[str, Cell]:
        cells = super().export_cells()
        for index, class_name in enumerate(self._class_names()):
            cells[f"prob_{class_name}"] = lambda values, index=index: _probability(
                values["export_probabilities"], index
            )
        return cells


EXPORT_RESOURCES: dict[str, type[ImageLabelResource]] = {
    resource.export_key: resource for resource in (ImageLabelResource, ImageLabelWithProbabilitiesResource)
}


class LabelImportResource(resources.ModelResource):
    """Existing labels from a CSV: each row becomes a Review by the importing user.

    Columns: `sha256` (or `original_name`, or `file`, the storage name) to find
    the image, and `label` (`final_label`, as in the label export, is accepted
    too). Each row goes through `review_submit`, so the image's current label
    follows, and `agreed` is set against the active version's prediction. A row
    with no label, or the image's current one, is skipped (an export imports
    back unchanged). An unknown image or label is a validation error of that
    row; any error rolls the whole file back.
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
            # The keys as _row_value reads them: an exported '=name is looked up as =name.
            values = {_cell_text(value) for value in dataset[column] if value not in (None, "")}
            lookup = {"sha256": "sha256__in", "original_name": "original_name__in", "file": "file__in"}[column]
            for batch in id_chunks(sorted(values), IN_QUERY_MAX_IDS):
                for image in Image.objects.filter(**{lookup: batch}):
                    key_value = image.file.name if column == "file" else getattr(image, column)
                    self._images.setdefault((column, key_value), []).append(image)
        image_ids = [images[0].pk for images in self._images.values()]
        active_version_id = model_version_active_id()
        for ids in id_chunks(image_ids, IN_QUERY_MAX_IDS):
            for prediction in Prediction.objects.filter(
                image_id__in=ids, model_version_id=active_version_id
            ).select_related("label"):
                self._active_predictions[prediction.image_id] = prediction

    def _row_value(self, row, columns) -> tuple[str, str]:
        for column in columns:
            value = row.get(column)
            if value not in (None, ""):
                return column, _cell_text(value)
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

    def _find_label(self, row) -> Label | None:
        _, value = self._row_value(row, self.LABEL_COLUMNS)
        if not value:
            return None
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
        # No label (an unreviewed image in the label export) or the image's current
        # one changes nothing: the row is skipped, so an export imports back as it was.
        instance.import_unchanged = instance.label_id in (None, instance.image.final_label_id)

    def skip_row(self, instance: Review, original, row, import_validation_errors=None) -> bool:
        return not import_validation_errors and getattr(instance, "import_unchanged", False)

    def save_instance(self, instance: Review, is_create, row, **kwargs):
        review = review_submit(
            image=instance.image,
            reviewer=kwargs["user"],
            label=instance.label,
            prediction=self._active_predictions.get(instance.image.pk),
            source=Review.Source.IMPORT,
        )
        # Later rows of the file compare against this label, as they would after a commit.
        instance.image.final_label_id = review.label_id
        # The row result (preview, admin log) reports the Review just written.
        instance.pk = review.pk
        instance.reviewer = review.reviewer
        instance.prediction = review.prediction
        instance.agreed = review.agreed
        instance.source = review.source
        instance.created_at = review.created_at


def _cell_text(value: Any) -> str:
    """An import cell as the text the export was given (stripped, formula quote removed)."""
    return unescape_formula(str(value).strip())
