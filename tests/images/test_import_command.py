"""python manage.py import_images: folders and zips on the server, one batch per run."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from images import services
from images.models import Image, UploadBatch

from .conftest import make_zip, tiny_png

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("import_images", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_imports_a_folder_recursively_and_a_zip_as_one_batch(tmp_path, uploader, monkeypatch):
    monkeypatch.setattr(services, "UPLOAD_FLUSH_EVERY", 3)  # several flushes, still one batch
    folder = tmp_path / "shoot"
    (folder / "day1").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for number in range(4):
        (folder / "day1" / f"{number}.png").write_bytes(tiny_png(number))
    (folder / "top.png").write_bytes(tiny_png(10))
    (folder / "notes.txt").write_text("shot on a Tuesday\n")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / ".hidden" / "skip.png").write_bytes(tiny_png(11))
    archive = tmp_path / "more.zip"
    archive.write_bytes(make_zip([("a.png", tiny_png(20)), ("b.png", tiny_png(21)), ("dup.png", tiny_png(10))]))

    output = run(str(folder), str(archive), "--name", "Tuesday", "--user", "uploader")

    batch = UploadBatch.objects.get()
    assert (batch.name, batch.source, batch.created_by) == ("Tuesday", UploadBatch.Source.COMMAND, uploader)
    assert (batch.accepted_count, batch.duplicate_count, batch.rejected_count) == (7, 1, 1)
    assert Image.objects.filter(batch=batch, uploaded_by=uploader).count() == 7
    files = {entry["file"]: entry for entry in batch.report}
    assert "shoot/day1/0.png" in files and "more.zip/a.png" in files
    assert files["more.zip/dup.png"]["status"] == "duplicate"
    assert not any("skip.png" in name or "DS_Store" in name for name in files)
    assert "Tuesday (#%d): 7 accepted, 1 duplicate(s), 1 rejected." % batch.pk in output
    assert "shoot/notes.txt: not an image (looks like text)" in output


def test_work_is_queued_as_the_import_goes(tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(services, "UPLOAD_FLUSH_EVERY", 2)
    for number in range(5):
        (tmp_path / f"{number}.png").write_bytes(tiny_png(number))
    with django_capture_on_commit_callbacks() as callbacks:
        run(str(tmp_path))
    assert len(callbacks) == 3  # 2 + 2 + 1 images


def test_the_first_files_are_queued_early_then_at_doubling_intervals(tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    """The cluster starts on the first few files while the rest arrive; later flushes grow up to the cap."""
    monkeypatch.setattr(services, "UPLOAD_FIRST_FLUSH", 2)
    monkeypatch.setattr(services, "UPLOAD_FLUSH_EVERY", 5)
    for number in range(20):
        (tmp_path / f"{number:02d}.png").write_bytes(tiny_png(number))
    with django_capture_on_commit_callbacks() as callbacks:
        run(str(tmp_path))
    assert [len(callback.keywords["image_ids"]) for callback in callbacks] == [2, 2, 4, 5, 5, 2]


def test_missing_path_and_unknown_user_are_errors(tmp_path):
    with pytest.raises(CommandError, match="no such file or folder"):
        run(str(tmp_path / "nope"))
    (tmp_path / "a.png").write_bytes(tiny_png(1))
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        run(str(tmp_path), "--user", "ghost")
    assert not UploadBatch.objects.exists()


def test_unreadable_file_is_reported_not_fatal(tmp_path, monkeypatch):
    from images.management.commands import import_images

    (tmp_path / "ok.png").write_bytes(tiny_png(1))
    (tmp_path / "locked.png").write_bytes(tiny_png(2))

    def open_unless_locked(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied")
        return open(path, *args, **kwargs)

    monkeypatch.setattr(import_images, "open", open_unless_locked, raising=False)
    output = run(str(tmp_path))

    batch = UploadBatch.objects.get()
    assert (batch.accepted_count, batch.rejected_count) == (1, 1)
    assert "locked.png: cannot read file ([Errno 13] Permission denied)" in output


def test_a_pipe_in_the_folder_is_refused_not_waited_on(tmp_path):
    import os
    import signal

    (tmp_path / "ok.png").write_bytes(tiny_png(1))
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would wait for a writer, forever

    class Waited(BaseException):  # not an OSError: the code under test catches those
        pass

    def waited(signum, frame):
        raise Waited("the import waited on the pipe")

    previous = signal.signal(signal.SIGALRM, waited)
    signal.setitimer(signal.ITIMER_REAL, 30, 1)  # then every second, until the test ends
    try:
        output = run(str(tmp_path))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    batch = UploadBatch.objects.get()
    assert (batch.accepted_count, batch.rejected_count) == (1, 1)
    assert "pipe.png: cannot read file (not a regular file (a pipe, a device or a socket))" in output


HOSTILE = "invoice\u202egnp.exe\u200b.png"  # right-to-left override, zero-width space


def test_import_images_cleans_names_as_the_admin_upload_does(tmp_path, client_for, uploader):
    (tmp_path / HOSTILE).write_bytes(tiny_png(1))
    archive = tmp_path / "more.zip"
    archive.write_bytes(make_zip([(HOSTILE.replace("invoice", "zipped"), tiny_png(2))]))

    call_command("import_images", str(tmp_path / HOSTILE), str(archive), stdout=io.StringIO(), stderr=io.StringIO())
    client_for(uploader).post(
        "/admin/images/image/upload/", {"files": [SimpleUploadedFile(HOSTILE.replace("invoice", "admin"), tiny_png(3))]}
    )

    names = sorted(Image.objects.values_list("original_name", flat=True))
    assert names == ["admingnp.exe.png", "invoicegnp.exe.png", "zippedgnp.exe.png"]
