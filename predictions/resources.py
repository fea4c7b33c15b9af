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
from datetime import date
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
from import_export.results import Error, RowResult

from images.models import Image, UploadBatch
from predictions.models import ModelVersion, Review
from predictions.selectors.exports import image_export_queryset
from predictions.selectors.label_audit import label_audit_latest_finished, label_suspect_score_subquery
from predictions.selectors.versions import model_version_active
from predictions.services.prediction_rows import PROBABILITY_DECIMALS

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
        "reviewed_by__username", "reviewed_at", "export_agreed", "review_count", "label_source",
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
    # Who decided the current label: screen, grid, import, auto (auto-accepted), similar.
    label_source = _column("label_source")

    class Meta:
        model = Image
        name = "Labels (one row per image)"
        fields = (
            "id", "original_name", "sha256", "image_url", "upload_batch", "uploaded_by", "uploaded_at",
            "model_version", "predicted_label", "confidence", "final_label", "reviewed_by", "reviewed_at",
            "agreed_with_model", "review_count", "label_source",
        )  # fmt: skip
        export_order = fields
        chunk_size = 2000

    def __init__(self, *, base_url: str = "", model_version: ModelVersion | None | str = ACTIVE_VERSION, **kwargs):
        """`base_url` ("https://host/") makes image URLs absolute; the predictions
        shown are `model_version`'s, by default the active one's (None: none)."""
        super().__init__(**kwargs)
        self.base_url = base_url
        self.model_version = model_version_active() if model_version == ACTIVE_VERSION else model_version

    @classmethod
    def export_filename(cls, *, day: date, extension: str = "csv") -> str:
        """The file's name: what it holds and the day it was taken, "labels-with-probabilities-2026-11-29.csv"."""
        return f"{cls.export_key.replace('_', '-')}-{day:%Y-%m-%d}.{extension}"

    def filter_export(self, queryset: QuerySet[Image], **kwargs) -> QuerySet:
        """The images of `queryset` as the `export_values` their rows are made from."""
        return image_export_queryset(queryset=queryset, model_version=self.model_version).values(
            *self.export_values
        )

    def export_cells(self) -> dict[str, Cell]:
        """Each export field's cell, a function of one image's `export_values`.

        Text is text ('' for none), numbers stay numbers (so a negative one is
        not taken for a formula, and spreadsheets sort and sum them; the confidence
        rounded as the stored probabilities are, 6 places), datetimes
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
            "confidence": lambda values: _rounded(values["export_confidence"]),
            "final_label": text("final_label__name"),
            "reviewed_by": text("reviewed_by__username"),
            "reviewed_at": iso_datetime("reviewed_at"),
            "agreed_with_model": lambda values: AGREEMENT_CELLS.get(values["export_agreed"], ""),
            "review_count": itemgetter("review_count"),
            "label_source": text("label_source"),
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


def _rounded(value: float | None) -> float | None:
    # The worker stores the confidence as the model's float32 gave it (0.8999999761581421)
    # and the probabilities rounded (prediction_rows): the export shows both alike.
    return None if value is None else round(value, PROBABILITY_DECIMALS)


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


class ImageLabelWithSuspectScoreResource(ImageLabelResource):
    """The label export plus `suspect_score`: the latest finished label audit's score of the current
    label (low: probably wrong; predictions/services/label_audit.py), blank where it scored none.

    A resource of its own, chosen on the export form like the probabilities one, so the
    plain export keeps its columns and costs no audit look-up.
    """

    export_key = "labels_with_suspect_scores"
    export_values = (*ImageLabelResource.export_values, "export_suspect_score")

    suspect_score = _column("suspect_score")

    class Meta(ImageLabelResource.Meta):
        name = "Labels with suspect scores"
        fields = (*ImageLabelResource.Meta.fields, "suspect_score")
        export_order = fields

    def filter_export(self, queryset: QuerySet[Image], **kwargs) -> QuerySet:
        score = label_suspect_score_subquery(audit=label_audit_latest_finished())
        return super().filter_export(queryset.annotate(export_suspect_score=score), **kwargs)

    def export_cells(self) -> dict[str, Cell]:
        cells = super().export_cells()
        cells["suspect_score"] = lambda values: "" if values["export_suspect_score"] is None else values["export_suspect_score"]
        return cells


EXPORT_RESOURCES: dict[str, type[ImageLabelResource]] = {
    resource.export_key: resource
    for resource in (ImageLabelResource, ImageLabelWithProbabilitiesResource, ImageLabelWithSuspectScoreResource)
}


class _FileRefused(Error):
    """A whole file refused for a reason its user can act on (no image column, say): the preview
    shows the reason alone, not import-export's traceback of a server error."""

    traceback = ""


class LabelImportResource(resources.ModelResource):
    """Existing labels from a CSV, on import-export's preview screen (files of up to
    settings.LABEL_IMPORT_SYNC_MAX_ROWS rows; bigger ones run as a LabelImportJob).

    Columns: `sha256` (or `original_name`, or `file`, the storage name) to find
    the image, and `label` (`final_label`, as in the label export, is accepted
    too). The rows are checked and applied by predictions.services.label_imports,
    the one import service; this resource turns its outcomes into import-export's
    result: a row that labels an open image is "new", one that changes a reviewed
    image's label (a Lead's explicit choice) is "update" with the label it replaces
    in its note (the old -> new list before anything is applied), a row that changes nothing (no
    label, the image's current one: an export imports back unchanged) or that
    the rule protecting reviewed, claimed and gold images skips is "skip", and
    an unknown image or label is a validation error of its row. A file with an
    invalid row is applied not at all. Applied, the file is one undoable
    LabelOperation whose reviews are by the importing user with source
    "Imported" (`result.operation_result`; None when no label changes).
    """

    image = fields.Field(attribute="image", column_name="image", readonly=True)
    label = fields.Field(attribute="label", column_name="label", readonly=True)

    class Meta:
        model = Review
        name = "Labels (sha256 or original_name, label)"
        fields = ("image", "label")

    def get_user_visible_fields(self):
        # What the import screen lists as the expected columns.
        return [
            fields.Field(column_name="sha256 | original_name | file"),
            fields.Field(column_name="label"),
        ]

    def import_data(self, dataset, dry_run=False, raise_errors=False, **kwargs):
        """Check every row in bulk, and apply the file unless `dry_run` or a row is invalid.

        Takes the user as `user=` and a Lead's choice to change reviewed images
        as `overwrite_reviewed=`, as the admin passes them.
        """
        # Imported here: the service reads unescape_formula from this module.
        from predictions.services.label_imports import RowOutcome, label_rows_apply, label_rows_check

        user = kwargs.get("user")
        overwrite = bool(kwargs.get("overwrite_reviewed"))
        result = self.get_result_class()()
        result.diff_headers = ["image", "label", "note"]
        result.total_rows = len(dataset)
        result.operation_result = None
        try:
            check = label_rows_check(
                header=dataset.headers or [], rows=[list(row) for row in dataset], user=user,
                overwrite_reviewed=overwrite,
            )  # fmt: skip
        except ValidationError as exc:
            if raise_errors:
                raise
            result.append_base_error(_FileRefused(" ".join(exc.messages)))
            return result
        for row in check.rows:
            values = {"image": row.image_key or "-", "label": row.label_name or "-", "note": row.note}
            if row.outcome == RowOutcome.INVALID:
                errors = {name: ValidationError(message, code="invalid") for name, message in row.errors.items()}
                result.append_invalid_row(row.number, values, ValidationError(errors))
                result.totals[RowResult.IMPORT_TYPE_INVALID] += 1
                continue
            row_result = self.get_row_result_class()()
            if row.outcome != RowOutcome.CHANGE:
                row_result.import_type = RowResult.IMPORT_TYPE_SKIP
            elif row.note:  # replaces a reviewed image's label
                row_result.import_type = RowResult.IMPORT_TYPE_UPDATE
            else:
                row_result.import_type = RowResult.IMPORT_TYPE_NEW
            row_result.diff = [values["image"], values["label"], values["note"]]
            result.append_row_result(row_result)
            result.increment_row_result_total(row_result)
        if not dry_run and check.is_valid:
            result.operation_result = label_rows_apply(
                check=check, user=user, file_name=kwargs.get("file_name") or "a file", overwrite_reviewed=overwrite
            )
        return result
