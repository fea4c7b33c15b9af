"""Label imports: a CSV of (image, label) rows checked, then applied as one undoable operation.

One service behind the three ways in: the admin's import screen (small files,
through django-import-export's preview, `predictions.resources.LabelImportResource`),
a LabelImportJob in the cluster (files above settings.LABEL_IMPORT_SYNC_MAX_ROWS,
dry run and apply alike: predictions.services.label_import_jobs) and
``manage.py import_labels``.

Columns: ``sha256``, ``original_name`` or ``file`` (the storage name) finds the
image (the first of them filled in a row), ``label`` (or ``final_label``, as the
label export names it) gives its label. An image uploaded in a folder or a zip is
named with its path there (``site_a/DSC_505.jpg``); a bare ``DSC_505.jpg`` finds
it too, unless images in several folders have that name (the row says which). Cells are read as the export wrote them:
a formula-escaped name (``'=x.jpg``) is looked up as ``=x.jpg``.

Checking reads in bulk: each block of rows looks its keys up IN_QUERY_MAX_IDS at a
time, with the images' current state and active predictions in the same pass.
Each row gets one outcome: it changes the image's label, changes nothing (no
label, the image's current one, a repeat), is skipped by the rule that protects
human work (reviewed, claimed, gold; see predictions.services.operations), or is
invalid (unknown image or label, ambiguous name, two labels for one image). A
file with an invalid row is applied not at all, as before.

Applying writes through ``label_operation_apply``: one LabelOperation (undone as
a whole), short batched transactions, and the rule checked again on the rows
themselves, so an image reviewed between the check and the apply is left alone.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.utils import timezone

from images.models import Image
from predictions.models import Label, LabelOperation, Prediction, Review
from predictions.resources import unescape_formula
from predictions.selectors.versions import model_version_active_id
from predictions.services.operations import (
    DECISION_IMAGE_FIELDS,
    LabelDecision,
    OperationResult,
    label_decision_skip_reason,
    label_operation_apply,
)
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks

IMAGE_COLUMNS = ("sha256", "original_name", "file")
LABEL_COLUMNS = ("label", "final_label")
# Rows checked per block: one progress step, and the keys looked up together.
CHECK_BLOCK = 5000
# Invalid rows kept in a report, each naming its row and field.
REPORT_PROBLEMS = 100

# Paths named in the message of a bare name found in several folders.
FOLDERS_LISTED = 3



class RowOutcome:
    CHANGE = "change"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    INVALID = "invalid"


@dataclass(slots=True)
class CheckedRow:
    """One data row (``number`` counts from 1, the header not included) and what the import does with it."""

    number: int
    image_key: str  # "original_name 'x.jpg'", for the preview
    label_name: str
    outcome: str
    note: str = ""  # why it is unchanged or skipped; for a change of a reviewed image, the label it replaces
    errors: dict[str, str] = field(default_factory=dict)  # field ("image", "label") -> message
    image_id: int | None = None


@dataclass
class LabelImportCheck:
    rows: list[CheckedRow]
    decisions: list[LabelDecision]

    @property
    def counts(self) -> Counter:
        return Counter(row.outcome for row in self.rows)

    @property
    def is_valid(self) -> bool:
        return not any(row.outcome == RowOutcome.INVALID for row in self.rows)

    def report(self) -> dict:
        """A JSON-able summary: counts by outcome, skip reasons, the first invalid rows."""
        counts = self.counts
        return {
            "rows": len(self.rows),
            "change": counts[RowOutcome.CHANGE],
            "unchanged": counts[RowOutcome.UNCHANGED],
            "skipped": dict(Counter(row.note for row in self.rows if row.outcome == RowOutcome.SKIPPED)),
            "invalid": counts[RowOutcome.INVALID],
            "problems": [
                {"row": row.number, "errors": row.errors}
                for row in self.rows
                if row.outcome == RowOutcome.INVALID
            ][:REPORT_PROBLEMS],
        }


Progress = Callable[[int], None]


# --- reading ---------------------------------------------------------------------------


def label_csv_read(*, file) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a CSV file (bytes or text, UTF-8 with or without a BOM).

    ValidationError for a file the csv module cannot read (a quote left open swallows the
    rest of the file into one field, and a field over the module's limit stops it), with the
    line its row starts on.
    """
    raw = file.read()
    text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    rows: list[list[str]] = []
    starts = 1  # the line the record being read starts on
    try:
        header = next(reader, [])
        starts = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append(row)
            starts = reader.line_num + 1
    except csv.Error as exc:
        raise ValidationError(
            f"Not a CSV this import can read: the row starting at line {starts}: {exc} (a quote left open?)"
        ) from exc
    return header, rows


def label_csv_row_count(*, file) -> int:
    """Data rows of an uploaded CSV (the file is read from its start and left at its start)."""
    file.seek(0)
    try:
        return len(label_csv_read(file=file)[1])
    finally:
        file.seek(0)


def _cell(value) -> str:
    """A cell as the text the export was given (stripped, formula quote removed)."""
    return "" if value is None else unescape_formula(str(value).strip())


# --- checking --------------------------------------------------------------------------


def _columns(header: Sequence[str]) -> tuple[list[tuple[str, int]], list[int]]:
    positions = {str(name).strip(): index for index, name in enumerate(header or ())}
    image_columns = [(name, positions[name]) for name in IMAGE_COLUMNS if name in positions]
    label_columns = [positions[name] for name in LABEL_COLUMNS if name in positions]
    if not image_columns or not label_columns:
        names = ", ".join(str(name) for name in header or ()) or "no header"
        # Excel in many locales saves "CSV" with semicolons: one column named "original_name;label".
        hint = (
            " It seems to separate its columns with ';': save it as comma-separated (CSV UTF-8)."
            if len(header or ()) == 1 and ";" in str(header[0])
            else ""
        )
        raise ValidationError(
            f"The file needs a 'sha256' (or 'original_name' or 'file') column and a 'label' column; it has: {names}."
            + hint
        )
    return image_columns, label_columns


def _first_filled(row: Sequence, positions: Iterable[int]) -> str:
    for position in positions:
        if position < len(row):
            value = _cell(row[position])
            if value:
                return value
    return ""


class _Index:
    """What the rows name, looked up in bulk and kept: images by key, labels, active predictions."""

    def __init__(self):
        self.labels = {label.name: label.pk for label in Label.objects.all()}
        self.label_names = {pk: name for name, pk in self.labels.items()}
        self.active_version_id = model_version_active_id()
        self.images: dict[tuple[str, str], list[int]] = {}
        self.states: dict[int, dict] = {}
        self.predictions: dict[int, tuple[int, int]] = {}  # image id -> (prediction id, label id)
        # Bare names that match images in several folders -> those images' names (paths), for the message.
        self.folder_matches: dict[str, list[str]] = {}
        self._by_base_name: dict[str, list[tuple[int, str]]] | None = None

    def load(self, keys: Iterable[tuple[str, str]]) -> None:
        missing: dict[str, set[str]] = {}
        for column, value in keys:
            if (column, value) not in self.images:
                missing.setdefault(column, set()).add(value)
        new_ids: list[int] = []
        for column, values in missing.items():
            for value in values:
                self.images[(column, value)] = []
            for chunk in id_chunks(sorted(values), IN_QUERY_MAX_IDS):
                for state in Image.objects.filter(**{f"{column}__in": chunk}).values(column, *DECISION_IMAGE_FIELDS):
                    self.images[(column, state.pop(column))].append(state["pk"])
                    self._keep(state, new_ids)
        self._load_without_archive(missing.get("original_name", ()), new_ids)
        self._load_by_base_name(missing.get("original_name", ()), new_ids)
        if self.active_version_id is None:
            return
        for chunk in id_chunks(new_ids, IN_QUERY_MAX_IDS):
            for image_id, prediction_id, label_id in Prediction.objects.filter(
                model_version_id=self.active_version_id, image_id__in=chunk
            ).values_list("image_id", "pk", "label_id"):
                self.predictions[image_id] = (prediction_id, label_id)


    def _load_without_archive(self, names: Iterable[str], new_ids: list[int]) -> None:
        """A zip member's name as the upload's report gives it ("photos.zip/cats/tom.jpg") that is no
        image's name finds the image stored under its path in the archive ("cats/tom.jpg")."""
        inside: dict[str, str] = {}  # the name as given -> its path in the archive
        for name in names:
            parts = name.split("/")
            archive = next((i for i, part in enumerate(parts[:-1]) if part.lower().endswith(".zip")), None)
            if archive is not None and not self.images[("original_name", name)]:
                inside[name] = "/".join(parts[archive + 1 :])
        for chunk in id_chunks(sorted(set(inside.values())), IN_QUERY_MAX_IDS):
            found: dict[str, list[int]] = {}
            for state in Image.objects.filter(original_name__in=chunk).values("original_name", *DECISION_IMAGE_FIELDS):
                found.setdefault(state.pop("original_name"), []).append(state["pk"])
                self._keep(state, new_ids)
            for name, path in inside.items():
                if path in found:
                    self.images[("original_name", name)] = found[path]

    def _load_by_base_name(self, names: Iterable[str], new_ids: list[int]) -> None:
        """A bare name that is no image's name finds the image kept with its folder path
        ("DSC_505.jpg" finds "site_a/DSC_505.jpg", from a zip or a dropped folder); in
        several folders it is ambiguous, and the row says so.

        An exact name wins: "DSC_505.jpg" is the image of that name when there is one.
        The images with a folder in their name are read once, on the first such miss.
        """
        bare = [name for name in names if "/" not in name and not self.images[("original_name", name)]]
        if not bare:
            return
        if self._by_base_name is None:
            self._by_base_name = {}
            with_folder = Image.objects.filter(original_name__contains="/").values_list("pk", "original_name")
            for pk, path in with_folder.iterator(chunk_size=IN_QUERY_MAX_IDS):
                self._by_base_name.setdefault(path.rsplit("/", 1)[1], []).append((pk, path))
        found: set[int] = set()
        for name in bare:
            matches = self._by_base_name.get(name, [])
            self.images[("original_name", name)] = [pk for pk, _ in matches]
            if len(matches) > 1:
                self.folder_matches[name] = sorted(path for _, path in matches)
            found.update(pk for pk, _ in matches if pk not in self.states)
        for chunk in id_chunks(sorted(found), IN_QUERY_MAX_IDS):
            for state in Image.objects.filter(pk__in=chunk).values(*DECISION_IMAGE_FIELDS):
                self._keep(state, new_ids)

    def _keep(self, state: dict, new_ids: list[int]) -> None:
        """An image a lookup found, kept the first time (``new_ids``: whose predictions are read next)."""
        if state["pk"] not in self.states:
            self.states[state["pk"]] = state
            new_ids.append(state["pk"])


def label_rows_check(
    *,
    header: Sequence[str],
    rows: Sequence[Sequence],
    user,
    overwrite_reviewed: bool = False,
    progress: Progress | None = None,
) -> LabelImportCheck:
    """What importing these rows would do, row by row (see the module docstring).

    Raises ValidationError when the header lacks an image or a label column.
    ``progress(rows_checked)`` is called after each block of rows.
    """
    image_columns, label_columns = _columns(header)
    index = _Index()
    now = timezone.now()
    checked: list[CheckedRow] = []
    decided: dict[int, CheckedRow] = {}  # image id -> the row that gave it a label
    decisions: dict[int, LabelDecision] = {}
    for start in range(0, len(rows), CHECK_BLOCK):
        block = rows[start : start + CHECK_BLOCK]
        keyed = [_image_key(row, image_columns) for row in block]
        index.load(key for key in keyed if key)
        for offset, (row, key) in enumerate(zip(block, keyed)):
            checked.append(
                _row_check(
                    number=start + offset + 1,
                    key=key,
                    label_name=_first_filled(row, label_columns),
                    index=index,
                    decided=decided,
                    decisions=decisions,
                    user=user,
                    now=now,
                    overwrite_reviewed=overwrite_reviewed,
                )
            )
        if progress is not None:
            progress(len(checked))
    return LabelImportCheck(rows=checked, decisions=list(decisions.values()))


def _image_key(row: Sequence, image_columns: list[tuple[str, int]]) -> tuple[str, str] | None:
    for column, position in image_columns:
        if position < len(row):
            value = _cell(row[position])
            if value:
                return column, value.lower() if column == "sha256" else value  # stored as lowercase hex
    return None


def _row_check(
    *, number: int, key, label_name: str, index: _Index, decided: dict, decisions: dict, user, now,
    overwrite_reviewed: bool,
) -> CheckedRow:  # fmt: skip
    shown = f"{key[0]} '{key[1]}'" if key else ""
    row = CheckedRow(number=number, image_key=shown, label_name=label_name, outcome=RowOutcome.INVALID)
    if key is None:
        row.errors["image"] = "No image given: fill 'sha256' (or 'original_name' or 'file')."
    else:
        matches = index.images.get(key, [])
        if not matches:
            row.errors["image"] = f"No image with {shown}."
        elif len(matches) > 1 and key[1] in index.folder_matches:
            paths = index.folder_matches[key[1]]
            listed = ", ".join(paths[:FOLDERS_LISTED]) + (", ..." if len(paths) > FOLDERS_LISTED else "")
            row.errors["image"] = (
                f"{len(matches)} images in different folders are named '{key[1]}' ({listed}); "
                "give its path or its sha256 instead."
            )
        elif len(matches) > 1:
            row.errors["image"] = f"{len(matches)} images have {shown}; give its sha256 instead."
        else:
            row.image_id = matches[0]
    label_id = index.labels.get(label_name) if label_name else None
    if label_name and label_id is None:
        known = ", ".join(sorted(index.labels)) or "none defined"
        row.errors["label"] = f"Unknown label '{label_name}' (known labels: {known})."
    if row.errors:
        return row
    if label_id is None:
        return _settled(row, RowOutcome.UNCHANGED, "no label")
    earlier = decided.get(row.image_id)
    if earlier is not None:
        if earlier.label_name != label_name:
            row.outcome = RowOutcome.INVALID
            row.errors["label"] = f"Row {earlier.number} gives this image the label '{earlier.label_name}'."
            return row
        return _settled(row, RowOutcome.UNCHANGED, f"repeats row {earlier.number}")
    decided[row.image_id] = row
    state = index.states[row.image_id]
    if state["final_label_id"] == label_id:
        return _settled(row, RowOutcome.UNCHANGED, "label unchanged")
    prediction_id, predicted_label_id = index.predictions.get(row.image_id, (None, None))
    decision = LabelDecision(
        image_id=row.image_id, label_id=label_id, prediction_id=prediction_id, predicted_label_id=predicted_label_id
    )
    reason = label_decision_skip_reason(
        image=state, decision=decision, user=user, now=now, overwrite_reviewed=overwrite_reviewed
    )
    if reason:
        return _settled(row, RowOutcome.SKIPPED, reason)
    decisions[row.image_id] = decision
    if state["final_label_id"] is not None:  # a Lead's overwrite: the old label beside the new one
        return _settled(row, RowOutcome.CHANGE, f"replaces “{index.label_names[state['final_label_id']]}”")
    return _settled(row, RowOutcome.CHANGE)


def _settled(row: CheckedRow, outcome: str, note: str = "") -> CheckedRow:
    row.outcome, row.note = outcome, note
    return row


# --- applying --------------------------------------------------------------------------


def label_rows_apply(
    *,
    check: LabelImportCheck,
    user,
    file_name: str,
    overwrite_reviewed: bool = False,
    progress: Callable[[OperationResult, int], None] | None = None,
) -> OperationResult | None:
    """Apply a checked file as one undoable LabelOperation (None when it changes no label).

    Refused (ValidationError) when a row is invalid.
    """
    if not check.is_valid:
        invalid = check.counts[RowOutcome.INVALID]
        raise ValidationError(f"Nothing imported: {invalid} row(s) of {file_name} are invalid.")
    if not check.decisions:
        return None
    return label_operation_apply(
        kind=LabelOperation.Kind.IMPORT,
        decisions=check.decisions,
        user=user,
        source=Review.Source.IMPORT,
        description=f"Label import of {file_name} ({len(check.rows)} rows)",
        params={"file": file_name, "rows": len(check.rows), "overwrite_reviewed": overwrite_reviewed},
        overwrite_reviewed=overwrite_reviewed,
        progress=progress,
    )
