"""images.uploads: a sent file read within its size, and iter_inspected (each file hashed and decoded by threads ahead of the caller)."""

import hashlib
import io
import threading

import pytest

from images import uploads
from images.uploads import IncomingFile, iter_inspected

MAX_PIXELS = 50_000_000


def _incoming(make_image, count: int) -> list[IncomingFile]:
    return [IncomingFile(f"f{n}.jpg", f"f{n}.jpg", data=make_image(seed=n)) for n in range(count)]


def test_files_come_back_in_order_with_their_hash_and_what_the_decode_found(make_image):
    files = _incoming(make_image, 9)
    files.insert(3, IncomingFile("big.jpg", "big.jpg", reason="over the size limit"))
    files.insert(6, IncomingFile("cut.jpg", "cut.jpg", data=make_image(seed=99)[:60]))

    checked = list(iter_inspected(files, max_pixels=MAX_PIXELS, workers=3))

    assert [c.incoming for c in checked] == files
    for c in checked:
        if c.incoming.rejected:
            assert (c.sha256, c.info) == (None, None)
            continue
        assert c.sha256 == hashlib.sha256(c.incoming.data).hexdigest()
        if c.incoming.name == "cut.jpg":
            assert c.info is None  # the caller decodes it again for the reason
        else:
            assert (c.info.format, c.info.width, c.info.height) == ("JPEG", 64, 48)
            assert c.info.phash is not None


def test_files_are_decoded_on_several_threads_at_once(make_image, monkeypatch):
    workers = 3
    both_decoding = threading.Barrier(workers, timeout=10)
    real_inspect = uploads.inspect_image

    def inspect_together(data, **kwargs):
        both_decoding.wait()  # breaks (BrokenBarrierError) unless `workers` decodes overlap
        return real_inspect(data, **kwargs)

    monkeypatch.setattr(uploads, "inspect_image", inspect_together)

    checked = list(iter_inspected(_incoming(make_image, 2 * workers), max_pixels=MAX_PIXELS, workers=workers))

    assert all(c.info is not None for c in checked)


def test_files_read_before_the_callers_iterator_fails_still_come_back(make_image):
    files = _incoming(make_image, 5)

    def failing():
        yield from files
        raise OSError("connection dropped")

    seen = []
    with pytest.raises(OSError, match="connection dropped"):
        for checked in iter_inspected(failing(), max_pixels=MAX_PIXELS, workers=4):
            seen.append(checked.incoming)

    assert seen == files


def test_files_held_ahead_stay_under_the_byte_bound(make_image, monkeypatch):
    files = _incoming(make_image, 12)
    size = len(files[0].data)
    monkeypatch.setattr(uploads, "INSPECT_AHEAD_BYTES", 2 * size)
    read = []

    def reading():
        for item in files:
            read.append(item)
            yield item

    for n, checked in enumerate(iter_inspected(reading(), max_pixels=MAX_PIXELS, workers=4), 1):
        # the one handed over, and at most two files' bytes behind it (not 2 * workers files)
        assert len(read) - n <= 2, f"{len(read) - n} files read ahead of file {n}"
        assert checked.incoming is files[n - 1]


def test_content_stored_already_is_hashed_but_not_decoded(make_image, monkeypatch):
    files = _incoming(make_image, 6)
    stored = {hashlib.sha256(files[n].data).hexdigest() for n in (1, 2, 4)}
    decoded = []
    real_inspect = uploads.inspect_image
    monkeypatch.setattr(uploads, "inspect_image", lambda data, **kw: decoded.append(kw["name"]) or real_inspect(data, **kw))

    checked = list(iter_inspected(files, max_pixels=MAX_PIXELS, workers=2, stored=stored.__contains__))

    assert sorted(decoded) == ["f0.jpg", "f3.jpg", "f5.jpg"]
    assert [c.incoming for c in checked] == files
    assert [c.sha256 for c in checked] == [hashlib.sha256(f.data).hexdigest() for f in files]
    assert [c.info is None for c in checked] == [False, True, True, False, True, False]
    # What the store is told it need not look up again: the files found absent.
    assert [c.looked_up for c in checked] == [True, False, False, True, False, True]
    unasked = list(iter_inspected(files[:2], max_pixels=MAX_PIXELS, workers=2))
    assert [c.looked_up for c in unasked] == [False, False]


# --- reading a sent file ----------------------------------------------------------


class _Sized(io.BytesIO):
    """An uploaded file as Django gives it: with the size its parser counted."""

    def __init__(self, data: bytes, *, size: int) -> None:
        super().__init__(data)
        self.size = size


def test_a_file_is_read_with_its_own_size_not_the_limit():
    data = b"x" * 5000
    stream = _Sized(data, size=len(data))
    reads = []
    real_read = stream.read
    stream.read = lambda n=-1: reads.append(n) or real_read(n)

    incoming = uploads.read_file("a.jpg", "a.jpg", stream, max_bytes=50 * 1024 * 1024)

    assert incoming.data == data
    assert reads == [len(data) + 1], "a read of the whole limit allocates the limit"


@pytest.mark.parametrize(("stated", "limit", "whole"), [(100, 10_000, True), (100, 1000, False)])
def test_a_file_longer_than_its_stated_size_is_read_on_up_to_the_limit(stated, limit, whole):
    data = b"y" * 2000
    incoming = uploads.read_file("b.jpg", "b.jpg", _Sized(data, size=stated), max_bytes=limit)

    if whole:
        assert incoming.data == data
    else:
        assert incoming.rejected and "larger than" in incoming.reason
