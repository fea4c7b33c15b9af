"""Import labels from a CSV on the server, with the rules of the admin's import.

    python manage.py import_labels labels.csv --dry-run
    python manage.py import_labels labels.csv --user lead [--overwrite]

Columns `original_name`, `sha256` or `file`, plus `label` (the label export's
`final_label` too). The whole file is checked first; a file with an invalid row
changes nothing. Applied, it is one operation, undone as a whole from the admin
(Label operations). Images already reviewed, open on someone's review screen or
gold are skipped and counted unless --overwrite (which needs a user holding
predictions.change_review, i.e. a Lead; gold images are never changed).
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from predictions.services.label_imports import label_csv_read, label_rows_apply, label_rows_check

PROBLEMS_SHOWN = 20


class Command(BaseCommand):
    help = "Import labels (original_name or sha256, label) from a CSV file as one undoable operation."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, metavar="FILE", help="CSV with a label column")
        parser.add_argument("--dry-run", action="store_true", help="check and report; change nothing")
        parser.add_argument(
            "--user", metavar="USERNAME", help="record the reviews as this user's (default: the only superuser)"
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="also change images that are already reviewed (Leads only)"
        )

    def handle(self, *args, file: Path, dry_run: bool, user: str | None, overwrite: bool, **options):
        importer = self._user(user)
        if overwrite and not importer.has_perm("predictions.change_review"):
            raise CommandError(f"{importer} may not change reviewed images (predictions.change_review).")
        try:
            with file.open("rb") as handle:
                header, rows = label_csv_read(file=handle)
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise CommandError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except ValidationError as exc:
            raise CommandError(f"{file}: {' '.join(exc.messages)}") from exc
        quiet = options["verbosity"] == 0
        try:
            with tqdm(total=len(rows), unit="row", desc="checked", disable=quiet) as bar:
                check = label_rows_check(
                    header=header, rows=rows, user=importer, overwrite_reviewed=overwrite,
                    progress=lambda done: bar.update(done - bar.n),
                )  # fmt: skip
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        report = check.report()
        self._summary(report)
        if not check.is_valid:
            raise CommandError(f"Nothing imported: {report['invalid']} invalid row(s).")
        if dry_run:
            self.stdout.write("Dry run: nothing changed.")
            return
        with tqdm(total=len(check.decisions), unit="image", desc="applied", disable=quiet) as bar:
            result = label_rows_apply(
                check=check, user=importer, file_name=file.name, overwrite_reviewed=overwrite,
                progress=lambda _result, done: bar.update(done - bar.n),
            )  # fmt: skip
        if result is None:
            self.stdout.write("Nothing to change.")
            return
        skipped = result.skipped_text()
        self.stdout.write(
            self.style.SUCCESS(f"{result.changed} label(s) imported as {result.operation}")
            + (f"; left alone meanwhile: {skipped}" if skipped else "")
        )

    def _user(self, username: str | None):
        users = get_user_model().objects
        if username:
            try:
                return users.get_by_natural_key(username)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {username!r}") from None
        superusers = list(users.filter(is_superuser=True, is_active=True)[:2])
        if len(superusers) != 1:
            raise CommandError("Name the user the reviews are recorded for: --user USERNAME.")
        return superusers[0]

    def _summary(self, report: dict) -> None:
        lines = [
            f"{report['rows']} rows: {report['change']} change a label, {report['unchanged']} change nothing, "
            f"{sum(report['skipped'].values())} skipped, {report['invalid']} invalid."
        ]
        lines += [f"  skipped, {reason}: {count}" for reason, count in report["skipped"].items()]
        for problem in report["problems"][:PROBLEMS_SHOWN]:
            errors = "; ".join(f"{name}: {message}" for name, message in problem["errors"].items())
            lines.append(f"  row {problem['row']}: {errors}")
        if report["invalid"] > PROBLEMS_SHOWN:
            lines.append(f"  … and {report['invalid'] - PROBLEMS_SHOWN} more invalid rows.")
        self.stdout.write("\n".join(lines))
