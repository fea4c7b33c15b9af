"""Import images from folders and zip archives on the server, as one upload batch."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from images.models import UploadBatch
from images.services import FileStatus, batch_add_files, batch_create
from images.uploads import count_upload_items


NOT_A_FILE = "not a regular file (a pipe, a device or a socket)"


class _Unreadable(io.RawIOBase):
    """A file that could not be opened: reading it reports why, in the batch's report."""

    def __init__(self, error: OSError):
        self.error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer):
        raise self.error


class Command(BaseCommand):
    help = (
        "Import images (folders, searched recursively, and .zip archives) as one upload batch. "
        "Thumbnails and predictions are queued for the cluster as the import goes."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or .zip archives")
        parser.add_argument("--name", default="", help="name of the upload batch (default: the paths)")
        parser.add_argument("--user", metavar="USERNAME", help="record the images as uploaded by this user")

    def handle(self, *args, paths, name, user, **options):
        uploader = self._user(user)
        files = self._files(paths)
        if not files:
            raise CommandError("No files found under " + ", ".join(paths))

        batch = batch_create(
            user=uploader, source=UploadBatch.Source.COMMAND, name=name or ", ".join(paths)[:200]
        )
        total = sum(count_upload_items(path) for path, _ in files)
        with tqdm(total=total, unit="file", disable=options["verbosity"] == 0) as progress:
            batch_add_files(
                batch=batch, files=self._opened(files), user=uploader, on_file=lambda entry: progress.update()
            )
        self._summary(batch)

    def _user(self, username: str | None):
        if not username:
            return None
        try:
            return get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}") from None

    def _files(self, paths: list[str]) -> list[tuple[Path, str]]:
        """(path on disk, name in the report) of every file to import, in a stable order."""
        found = []
        for raw in paths:
            root = Path(raw)
            if root.is_dir():
                for folder, dirnames, filenames in os.walk(root):
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    for filename in sorted(filenames):
                        if not filename.startswith("."):
                            path = Path(folder, filename)
                            found.append((path, str(path.relative_to(root.parent))))
            elif root.is_file():
                found.append((root, root.name))
            else:
                raise CommandError(f"{raw}: no such file or folder")
        return found

    def _opened(self, files: list[tuple[Path, str]]) -> Iterator[tuple[str, object]]:
        # One file open at a time, closed once the upload has read it.
        for path, label in files:
            if not path.is_file():  # a pipe would block the import forever, a device never end
                yield label, _Unreadable(OSError(NOT_A_FILE))
                continue
            try:
                fp = open(path, "rb")
            except OSError as exc:
                yield label, _Unreadable(exc)
                continue
            with fp:
                yield label, fp

    def _summary(self, batch: UploadBatch) -> None:
        self.stdout.write(
            f"{batch} (#{batch.pk}): {batch.accepted_count} accepted, "
            f"{batch.duplicate_count} duplicate(s), {batch.rejected_count} rejected."
        )
        rejected = [entry for entry in batch.report if entry["status"] == FileStatus.REJECTED]
        if rejected:
            self.stdout.write(self.style.WARNING("Rejected:"))
            for entry in rejected:
                self.stdout.write(f"  {entry['file']}: {entry['reason']}")
