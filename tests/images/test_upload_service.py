"""images.services.upload_files: every bad file gets its reason, every good one is stored."""

import hashlib
import io
import zipfile
from unittest import mock

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from images.models import Image, UploadBatch
from images.services import image_create, upload_files
from images.thumbnails import thumbnails_create

from .conftest import entries_by_file, make_zip, noisy_jpeg

pytestmark = pytest.mark.django_db


def test_each_bad_file_is_reported_with_its_reason_and_good_files_are_stored(upload, bad_file_cases, uploader):
    batch = upload([(case.name, case.data) for case in bad_file_cases], user=uploader)

    entries = entries_by_file(batch)
    for case in bad_file_cases:
        entry = entries[case.name]
        assert entry["status"] == case.status, (case.name, entry)
        assert case.reason in entry["reason"], (case.name, entry)
        if case.status == "accepted":
            image = Image.objects.get(pk=entry["image_id"])
            assert (image.format, image.width, image.height) == (case.format, *case.size), case.name
            assert image.original_name == case.name
            assert image.uploaded_by == uploader and image.batch == batch
            assert default_storage.open(image.file.name).read() == case.data
        else:
            assert entry["image_id"] is None
    accepted = [case for case in bad_file_cases if case.status == "accepted"]
    assert (batch.accepted_count, batch.duplicate_count, batch.rejected_count) == (
        len(accepted),
        0,
        len(bad_file_cases) - len(accepted),
    )
    assert Image.objects.count() == len(accepted)
    batch.refresh_from_db()
    assert len(batch.report) == len(bad_file_cases)


def test_stored_name_is_content_addressed_with_the_detected_format(upload, make_image):
    png = make_image(seed=1, fmt="PNG")
    batch = upload([("holiday.JPG", png)])  # the client's extension is not trusted

    image = Image.objects.get()
    digest = hashlib.sha256(png).hexdigest()
    assert image.sha256 == digest
    assert image.file.name == f"images/{digest[:2]}/{digest[2:4]}/{digest}.png"
    assert image.original_name == "holiday.JPG"
    assert batch.report[0]["status"] == "accepted"


def test_good_files_are_thumbnailed_and_predicted_once_committed(
    upload, bad_file_cases, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction

    with django_capture_on_commit_callbacks(execute=True):
        batch = upload([(case.name, case.data) for case in bad_file_cases])

    good = Image.objects.filter(batch=batch)
    assert good.count() == batch.accepted_count > 0
    assert set(Prediction.objects.filter(model_version=active_model_version).values_list("image", flat=True)) == set(
        good.values_list("pk", flat=True)
    )
    assert not good.filter(thumbnail="").exists()
    assert batch.jobs.get().total == batch.accepted_count


def test_nothing_is_queued_before_commit(upload, make_image, django_capture_on_commit_callbacks):
    with mock.patch("images.thumbnails.async_task") as async_task:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            upload([("a.jpg", make_image(seed=1))])
        async_task.assert_not_called()
        assert len(callbacks) == 1
        # No model to predict with: the thumbnail is a task of its own.
        with mock.patch("predictions.services.jobs.enqueue_predictions", return_value=None) as enqueue:
            callbacks[0]()
    image = Image.objects.get()
    async_task.assert_called_once_with("images.tasks.make_thumbnails", [image.pk])
    enqueue.assert_called_once()
    assert enqueue.call_args.kwargs["image_ids"] == [image.pk]
    assert enqueue.call_args.kwargs["reason"] == "upload"


def test_with_an_active_model_the_prediction_worker_makes_the_thumbnails(
    upload, make_image, active_model_version, django_capture_on_commit_callbacks
):
    with mock.patch("images.thumbnails.async_task") as thumbnail_tasks, mock.patch(
        "predictions.services.jobs.async_task"
    ) as prediction_tasks:
        with django_capture_on_commit_callbacks(execute=True):
            upload([("a.jpg", make_image(seed=1)), ("b.jpg", make_image(seed=2))])

    thumbnail_tasks.assert_not_called()
    assert [c.args[0] for c in prediction_tasks.call_args_list] == ["predictions.tasks.predict_chunk"]
    assert sorted(prediction_tasks.call_args.args[2]) == sorted(Image.objects.values_list("pk", flat=True))


def test_without_an_active_model_uploads_are_still_thumbnailed(
    upload, make_image, model_version_factory, django_capture_on_commit_callbacks
):
    model_version_factory(active=False)
    with django_capture_on_commit_callbacks(execute=True):
        upload([("a.jpg", make_image(seed=1)), ("b.jpg", make_image(seed=2))])

    assert Image.objects.count() == 2
    assert not Image.objects.filter(thumbnail="").exists()


def test_same_upload_twice_is_reported_as_duplicates_with_links(upload, make_image):
    files = [("a.jpg", make_image(seed=1)), ("b.jpg", make_image(seed=2))]
    first = upload(files)
    second = upload(files)

    assert (second.accepted_count, second.duplicate_count) == (0, 2)
    ids = {entry["file"]: entry["image_id"] for entry in first.report}
    for entry in second.report:
        assert entry["status"] == "duplicate"
        assert entry["image_id"] == ids[entry["file"]]
        assert "already uploaded as" in entry["reason"]
    assert Image.objects.count() == 2
    for image in Image.objects.all():
        folder = image.file.name.rsplit("/", 1)[0]
        assert default_storage.listdir(folder)[1] == [image.file.name.rsplit("/", 1)[1]]


def test_files_uploaded_again_are_not_decoded_again(upload, make_image, monkeypatch):
    files = [("a.jpg", make_image(seed=1)), ("b.jpg", make_image(seed=2))]
    upload(files)
    decodes = mock.Mock(side_effect=AssertionError("decoded a stored file"))
    monkeypatch.setattr("images.uploads.inspect_image", decodes)
    monkeypatch.setattr("images.services.inspect_image", decodes)

    again = upload([*files, ("renamed.jpg", files[0][1])])

    assert [entry["status"] for entry in again.report] == ["duplicate"] * 3
    decodes.assert_not_called()


def test_a_new_files_content_is_looked_up_once(upload, make_image):
    """The read-ahead asks whether each file's content is stored; storing it does not ask again."""
    files = [(f"new-{seed}.jpg", make_image(seed=seed)) for seed in range(4)]

    with CaptureQueriesContext(connection) as queries:
        batch = upload(files)

    assert batch.accepted_count == 4
    lookups = [query["sql"] for query in queries if '"images_image"."sha256" =' in query["sql"]]
    assert len(lookups) == len(files), lookups


def test_repeated_file_within_one_upload_is_a_duplicate(upload, make_image):
    data = make_image(seed=3)
    batch = upload([("one.jpg", data), ("copy-of-one.jpg", data)])

    entries = entries_by_file(batch)
    assert entries["one.jpg"]["status"] == "accepted"
    assert entries["copy-of-one.jpg"]["status"] == "duplicate"
    assert entries["copy-of-one.jpg"]["image_id"] == entries["one.jpg"]["image_id"]
    assert "earlier in this upload" in entries["copy-of-one.jpg"]["reason"]


def test_duplicate_link_shows_on_the_batch_page(upload, make_image, client_for, uploader):
    data = make_image(seed=5)
    first = upload([("first.jpg", data)])
    second = upload([("again.jpg", data)])

    response = client_for(uploader).get(f"/admin/images/uploadbatch/{second.pk}/change/")
    image_id = first.report[0]["image_id"]
    assert f'href="/admin/images/image/{image_id}/change/"' in response.content.decode()


def test_file_over_the_size_limit_is_refused_from_its_size(upload, make_image):
    big = make_image(seed=1, size=(300, 300))
    with override_settings(IMAGE_MAX_BYTES=1000):
        batch = upload([("big.jpg", big)])

    reason = batch.report[0]["reason"]
    assert batch.report[0]["status"] == "rejected"
    assert "over the 1000 bytes limit per image" in reason
    assert "big.jpg" == batch.report[0]["file"]


def test_file_over_the_size_limit_is_not_read_whole(make_image):
    big = make_image(seed=1, size=(300, 300))
    stream = io.BytesIO(big)
    with override_settings(IMAGE_MAX_BYTES=1000), mock.patch.object(stream, "read", wraps=stream.read) as read:
        batch = upload_files(files=[("big.jpg", stream)], user=None)
    assert batch.rejected_count == 1
    assert all(call.args and call.args[0] <= 1001 for call in read.call_args_list)


def test_a_row_that_fails_does_not_lose_the_other_files_nor_leave_its_file(upload, make_image):
    real_create = Image.objects.create
    calls = []

    def flaky_create(**fields):
        calls.append(fields["original_name"])
        if fields["original_name"] == "bad-luck.jpg":
            raise RuntimeError("disk on fire")
        return real_create(**fields)

    unlucky = make_image(seed=2)
    with mock.patch.object(Image.objects, "create", side_effect=flaky_create):
        batch = upload([("fine.jpg", make_image(seed=1)), ("bad-luck.jpg", unlucky), ("also-fine.jpg", make_image(seed=3))])

    entries = entries_by_file(batch)
    assert entries["fine.jpg"]["status"] == entries["also-fine.jpg"]["status"] == "accepted"
    assert entries["bad-luck.jpg"]["status"] == "rejected"
    assert "could not be stored" in entries["bad-luck.jpg"]["reason"]
    digest = hashlib.sha256(unlucky).hexdigest()
    assert not default_storage.exists(f"images/{digest[:2]}/{digest[2:4]}/{digest}.jpg")
    assert Image.objects.count() == 2


def _race_winner_row(data: bytes, file_name: str) -> Image:
    """The row another upload of the same content commits while ours is being stored."""
    return Image.objects.create(
        file=file_name,
        sha256=hashlib.sha256(data).hexdigest(),
        original_name="winner.jpg",
        width=64,
        height=48,
        format="JPEG",
        size_bytes=len(data),
    )


@pytest.mark.parametrize("winner_has_other_file", [False, True])
def test_concurrent_upload_of_the_same_new_file_is_a_duplicate_not_a_crash(make_image, winner_has_other_file):
    from images import services

    data = make_image(seed=9)
    real_store = services.file_store
    winner = {}

    def store_then_lose_the_race(name, content):
        stored = real_store(name, content)
        winner["image"] = _race_winner_row(data, name + ".other.jpg" if winner_has_other_file else name)
        return stored

    with mock.patch.object(services, "file_store", side_effect=store_then_lose_the_race):
        batch = upload_files(files=[("loser.jpg", io.BytesIO(data))], user=None)

    entry = batch.report[0]
    assert entry["status"] == "duplicate"
    assert entry["image_id"] == winner["image"].pk
    assert Image.objects.count() == 1
    digest = hashlib.sha256(data).hexdigest()
    # Our file is kept only when the winner's row points at it.
    assert default_storage.exists(f"images/{digest[:2]}/{digest[2:4]}/{digest}.jpg") is not winner_has_other_file


def test_file_left_by_a_failed_attempt_is_reused(make_image):
    data = make_image(seed=4)
    digest = hashlib.sha256(data).hexdigest()
    name = f"images/{digest[:2]}/{digest[2:4]}/{digest}.jpg"
    default_storage.save(name, io.BytesIO(data))

    stored = image_create(data=data, name="again.jpg")

    assert stored.created and stored.image.file.name == name
    assert default_storage.listdir(f"images/{digest[:2]}/{digest[2:4]}")[1] == [f"{digest}.jpg"]


# --- zip archives -------------------------------------------------------------------


def test_zip_members_are_expanded_with_their_paths_and_unsafe_paths_reported(upload, make_image):
    archive = make_zip(
        [
            ("photos/", b""),
            ("photos/cats/tom.jpg", make_image(seed=1)),
            ("../../evil.jpg", make_image(seed=2)),
            ("../../etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n"),
            ("/abs/path.png", make_image(seed=3, fmt="PNG")),
            ("readme.txt", b"These are my photos.\n"),
        ]
    )
    batch = upload([("photos.zip", archive)])

    entries = entries_by_file(batch)
    assert set(entries) == {
        "photos.zip/photos/cats/tom.jpg",
        "photos.zip/evil.jpg",
        "photos.zip/passwd",
        "photos.zip/path.png",
        "photos.zip/readme.txt",
    }  # the directory is skipped silently
    assert entries["photos.zip/photos/cats/tom.jpg"]["status"] == "accepted"
    assert entries["photos.zip/photos/cats/tom.jpg"]["reason"] == ""
    assert entries["photos.zip/evil.jpg"]["status"] == "accepted"
    assert "unsafe path '../../evil.jpg' in the archive reduced to 'evil.jpg'" in entries["photos.zip/evil.jpg"]["reason"]
    assert entries["photos.zip/passwd"]["status"] == "rejected"
    assert "reduced to 'passwd'" in entries["photos.zip/passwd"]["reason"]
    assert "not an image (looks like text)" in entries["photos.zip/passwd"]["reason"]
    assert entries["photos.zip/path.png"]["status"] == "accepted"
    assert "not an image (looks like text)" in entries["photos.zip/readme.txt"]["reason"]
    # A safe path in the archive is the image's name; an unsafe one is reduced to its base name.
    assert set(Image.objects.values_list("original_name", flat=True)) == {"photos/cats/tom.jpg", "evil.jpg", "path.png"}
    # Nothing was written outside the content-addressed folders.
    assert default_storage.listdir("") == (["images"], [])


def test_hidden_members_of_a_zip_are_left_out_as_in_a_folder(upload, make_image):
    archive = make_zip(
        [
            ("shoot/a.jpg", make_image(seed=1)),
            ("__MACOSX/shoot/._a.jpg", b"\0\5\26\7 resource fork"),  # what macOS adds to every zip it makes
            ("shoot/.DS_Store", b"\0\0\0\1Bud1"),
            ("shoot/.thumbs/a.jpg", make_image(seed=2)),
            ("./shoot/b.jpg", make_image(seed=3)),  # "." is a folder of the path, not a hidden one
        ]
    )
    batch = upload([("shoot.zip", archive)])

    assert set(entries_by_file(batch)) == {"shoot.zip/shoot/a.jpg", "shoot.zip/./shoot/b.jpg"}
    assert (batch.accepted_count, batch.rejected_count) == (2, 0)


def test_equal_names_in_different_folders_of_a_zip_stay_distinct(upload, make_image):
    """site_a/DSC_505.jpg was stored as DSC_505.jpg, the same name as site_b's (issue 17, item 7)."""
    archive = make_zip(
        [
            ("site_a/DSC_505.jpg", make_image(seed=1)),
            ("site_b/DSC_505.jpg", make_image(seed=2)),
            ("site_c\\windows\\DSC_505.jpg", make_image(seed=3)),  # a zip made on Windows
            ("./site_d//DSC_505.jpg", make_image(seed=4)),
            ("site_e/\u202eevil\u200b/DSC_505.jpg", make_image(seed=5)),
        ]
    )
    batch = upload([("sites.zip", archive)])

    assert batch.accepted_count == 5
    assert sorted(Image.objects.values_list("original_name", flat=True)) == [
        "site_a/DSC_505.jpg",
        "site_b/DSC_505.jpg",
        "site_c/windows/DSC_505.jpg",
        "site_d/DSC_505.jpg",
        "site_e/evil/DSC_505.jpg",
    ]


def test_a_path_too_long_for_the_name_keeps_its_innermost_folders(upload, make_image):
    deep = "/".join(f"folder-{number:02d}-{'x' * 20}" for number in range(12)) + "/DSC_505.jpg"
    batch = upload([("deep.zip", make_zip([(deep, make_image(seed=1))]))])

    name = Image.objects.get().original_name
    assert len(deep) > 255 >= len(name)
    assert deep.endswith("/" + name) and name.endswith("folder-11-" + "x" * 20 + "/DSC_505.jpg")
    assert batch.report[0]["file"] == "deep.zip/" + deep  # the report names the member in full


def test_zip_bomb_is_refused_from_the_central_directory_without_inflating(upload, zip_bomb, make_image):
    archive = make_zip([("ok.jpg", make_image(seed=1)), ("bomb.bmp", bytes(40 * 1024 * 1024))])
    opened = []
    real_open = zipfile.ZipFile.open

    def recording_open(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    with mock.patch.object(zipfile.ZipFile, "open", recording_open):
        batch = upload([("innocent.zip", archive)])

    entries = entries_by_file(batch)
    assert entries["innocent.zip/ok.jpg"]["status"] == "accepted"
    bomb = entries["innocent.zip/bomb.bmp"]
    assert bomb["status"] == "rejected"
    assert "compression ratio" in bomb["reason"] and "over the 100:1 limit" in bomb["reason"]
    assert "bomb.bmp" not in opened and opened == ["ok.jpg"]


def _claim_size(archive: bytes, claimed: int) -> bytes:
    """Rewrite the uncompressed size in the local and central headers of a one-member zip."""
    data = bytearray(archive)
    local = data.index(b"PK\x03\x04")
    data[local + 22 : local + 26] = claimed.to_bytes(4, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = claimed.to_bytes(4, "little")
    return bytes(data)


def test_member_whose_header_lies_about_its_size_is_not_read_past_the_limit(upload, make_image):
    real = noisy_jpeg(size=(100, 100))
    assert len(real) > 2000
    archive = _claim_size(make_zip([("liar.jpg", real)], compression=zipfile.ZIP_STORED), 100)
    requested = []
    real_read = zipfile.ZipExtFile.read

    def recording_read(self, n=-1):
        requested.append(n)
        return real_read(self, n)

    with override_settings(IMAGE_MAX_BYTES=2000), mock.patch.object(zipfile.ZipExtFile, "read", recording_read):
        batch = upload([("liar.zip", archive)])

    assert batch.report[0]["file"] == "liar.zip/liar.jpg"
    assert batch.report[0]["status"] == "rejected"
    assert requested and all(0 < n <= 2001 for n in requested)
    assert not Image.objects.exists()


def test_archive_over_the_total_expanded_size_is_refused_whole(upload, make_image):
    archive = make_zip([(f"{i}.jpg", make_image(seed=i)) for i in range(3)])
    with override_settings(ZIP_MAX_TOTAL_BYTES=1000):
        batch = upload([("many.zip", archive)])
    assert batch.report == [
        {"file": "many.zip", "status": "rejected", "reason": mock.ANY, "image_id": None}
    ]
    assert "would expand to" in batch.report[0]["reason"] and "over the 1000 bytes limit" in batch.report[0]["reason"]


def test_archive_with_too_many_members_is_refused_whole(upload, make_image):
    archive = make_zip([(f"{i}.jpg", make_image(seed=i)) for i in range(3)])
    with override_settings(ZIP_MAX_MEMBERS=2):
        batch = upload([("many.zip", archive)])
    assert batch.rejected_count == 1
    assert batch.report[0]["reason"] == "archive has 3 files, over the limit of 2 per archive"
    assert not Image.objects.exists()


def test_nested_archives_are_skipped_with_a_message(upload, make_image):
    inner = make_zip([("deep.jpg", make_image(seed=1))])
    archive = make_zip(
        [("inner.zip", inner), ("disguised.jpg", inner), ("backup.tar.gz", b"\x1f\x8b" + b"\0" * 30), ("top.jpg", make_image(seed=2))]
    )
    batch = upload([("outer.zip", archive)])

    entries = entries_by_file(batch)
    for name in ("inner.zip", "disguised.jpg", "backup.tar.gz"):
        assert entries[f"outer.zip/{name}"]["status"] == "rejected"
        assert "nested archives are not expanded" in entries[f"outer.zip/{name}"]["reason"]
    assert entries["outer.zip/top.jpg"]["status"] == "accepted"
    assert list(Image.objects.values_list("original_name", flat=True)) == ["top.jpg"]


def test_encrypted_members_are_rejected(upload, make_image):
    archive = make_zip([("secret.jpg", make_image(seed=1)), ("open.jpg", make_image(seed=2))], encrypted={"secret.jpg"})
    batch = upload([("mixed.zip", archive)])
    entries = entries_by_file(batch)
    assert entries["mixed.zip/secret.jpg"]["status"] == "rejected"
    assert "encrypted" in entries["mixed.zip/secret.jpg"]["reason"]
    assert entries["mixed.zip/open.jpg"]["status"] == "accepted"


def test_corrupt_zip_is_one_rejection_naming_the_archive(upload, make_image):
    batch = upload([("broken.zip", b"PK\x03\x04" + b"garbage" * 20), ("fine.jpg", make_image(seed=1))])
    entries = entries_by_file(batch)
    assert entries["broken.zip"]["status"] == "rejected"
    assert "not a readable zip archive" in entries["broken.zip"]["reason"]
    assert entries["fine.jpg"]["status"] == "accepted"
    assert len(batch.report) == 2


def test_zip_is_recognised_by_content_whatever_its_name(upload, make_image):
    archive = make_zip([("a.jpg", make_image(seed=1))])
    batch = upload([("download", archive)])
    assert batch.report[0]["file"] == "download/a.jpg"
    assert batch.accepted_count == 1


def test_an_empty_zip_leaves_a_report_line(upload, make_image):
    batch = upload([("empty.zip", make_zip([])), ("fine.jpg", make_image(seed=1))])

    assert batch.report[0] == {
        "file": "empty.zip", "status": "rejected", "reason": "archive contains no files", "image_id": None,
    }
    assert (batch.accepted_count, batch.rejected_count, len(batch.report)) == (1, 1, 2)


def test_a_picture_named_zip_is_judged_by_its_content(upload, make_image):
    batch = upload([("photo.zip", make_image(seed=1))])

    assert batch.report[0]["file"] == "photo.zip" and batch.report[0]["status"] == "accepted", batch.report
    assert Image.objects.get().format == "JPEG"


def test_bad_and_good_files_mixed_with_archives_in_one_upload(upload, bad_file_cases, zip_bomb, make_image):
    archive = make_zip([("z1.jpg", make_image(seed=11)), ("z2.png", make_image(seed=12, fmt="PNG"))])
    files = [(case.name, case.data) for case in bad_file_cases] + [("bomb.zip", zip_bomb), ("two.zip", archive)]
    batch = upload(files)

    good = [case for case in bad_file_cases if case.status == "accepted"]
    assert batch.accepted_count == len(good) + 2
    assert Image.objects.filter(batch=batch).count() == len(good) + 2
    assert entries_by_file(batch)["bomb.zip/bomb.bmp"]["status"] == "rejected"
    assert UploadBatch.objects.get().rejected_count == batch.rejected_count


# --- thumbnails -----------------------------------------------------------------------


def test_thumbnails_are_made_once_and_a_broken_file_gets_none(upload, make_image):
    batch = upload([("a.jpg", make_image(seed=1, size=(800, 600))), ("b.png", make_image(seed=2, fmt="PNG"))])
    broken = Image.objects.get(original_name="b.png")
    with default_storage.open(broken.file.name, "wb") as fp:
        fp.write(b"no longer an image")
    ids = list(Image.objects.filter(batch=batch).values_list("pk", flat=True))

    assert thumbnails_create(image_ids=ids) == 1
    assert thumbnails_create(image_ids=ids) == 0  # idempotent

    good = Image.objects.get(original_name="a.jpg")
    assert good.thumbnail.name == f"thumbnails/{good.sha256[:2]}/{good.sha256[2:4]}/{good.sha256}.jpg"
    from PIL import Image as PILImage

    with default_storage.open(good.thumbnail.name) as fp:
        thumb = PILImage.open(fp)
        assert thumb.format == "JPEG" and max(thumb.size) <= 320
    broken.refresh_from_db()
    assert broken.thumbnail == ""


def test_thumbnails_set_points_only_images_without_one_and_removes_the_losers_files(upload, make_image):
    from images.thumbnails import thumbnail_file_save, thumbnails_set

    upload([(f"{name}.jpg", make_image(seed=seed)) for seed, name in enumerate(["lacking", "taken", "same"])])
    lacking, taken, same = (Image.objects.get(original_name=f"{name}.jpg") for name in ["lacking", "taken", "same"])
    saved = {image.pk: thumbnail_file_save(sha256=image.sha256, jpeg=b"jpeg of " + image.sha256.encode()) for image in
             (lacking, taken, same)}  # fmt: skip
    # Another maker got there first: with a file of its own, and with this same file.
    Image.objects.filter(pk=taken.pk).update(thumbnail="thumbnails/other-maker.jpg")
    Image.objects.filter(pk=same.pk).update(thumbnail=saved[same.pk].name)

    assert thumbnails_set(saved=saved) == 1

    assert Image.objects.get(pk=lacking.pk).thumbnail.name == saved[lacking.pk].name
    assert Image.objects.get(pk=taken.pk).thumbnail.name == "thumbnails/other-maker.jpg"
    assert not default_storage.exists(saved[taken.pk].name)  # the loser's file is gone
    assert default_storage.exists(saved[same.pk].name)  # the winner's, which is the same file, stays
    assert default_storage.exists(saved[lacking.pk].name)
