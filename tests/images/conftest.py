"""Bad (and awkward but good) files for the upload tests, each with its expected outcome.

Everything is built in memory, cheaply: the decompression bomb is a PNG header
that claims 20000x20000 pixels, the zip bomb a few tens of MB of zeros that
deflate to tens of KB.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass

import pytest
from PIL import Image as PILImage

from tests.conftest import image_bytes


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    status: str  # accepted | duplicate | rejected
    reason: str = ""  # expected substring of the report's reason
    format: str = ""  # expected stored format of an accepted file
    size: tuple[int, int] | None = None  # expected stored (width, height)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, without the pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + png_chunk(b"IEND", b"")
    )


def noisy_jpeg(size=(64, 48), seed=1) -> bytes:
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, "JPEG")
    return buffer.getvalue()


def tiny_png(number: int) -> bytes:
    """An 8x8 PNG that differs for every number below 65536."""
    img = PILImage.new("RGB", (8, 8), (40, 80, 120))
    img.putpixel((0, 0), (number % 256, number // 256, 7))
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """Stored 64x48 with Orientation=6 (rotate 90°): shown, and stored as, 48x64."""
    img = PILImage.new("RGB", (64, 48), (10, 120, 200))
    exif = PILImage.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def sixteen_bit_png() -> bytes:
    img = PILImage.new("I;16", (40, 30))
    img.putdata([i * 50 for i in range(40 * 30)])
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("CMYK", (50, 40), (10, 200, 30, 5)).save(buffer, "JPEG")
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [PILImage.new("P", (30, 20), color) for color in (1, 2, 3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def palette_png_with_transparency() -> bytes:
    img = PILImage.new("P", (36, 24), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 18, 24))
    buffer = io.BytesIO()
    img.save(buffer, "PNG", transparency=0)
    return buffer.getvalue()


def make_zip(
    members: list[tuple[str, bytes]], *, compression=zipfile.ZIP_DEFLATED, encrypted: frozenset[str] = frozenset()
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return _mark_encrypted(buffer.getvalue(), encrypted) if encrypted else buffer.getvalue()


def _mark_encrypted(archive: bytes, names: set[str]) -> bytes:
    """Set the "encrypted" flag bit of members, in both headers, as a real encrypted zip has it.

    (Python's zipfile cannot write encrypted members.)
    """
    data = bytearray(archive)
    for signature, flags_at, name_length_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        start = data.find(signature)
        while start != -1:
            length = int.from_bytes(data[start + name_length_at : start + name_length_at + 2], "little")
            if data[start + name_at : start + name_at + length].decode() in names:
                data[start + flags_at] |= 0x1
            start = data.find(signature, start + 4)
    return bytes(data)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """A fresh media storage per test: content-addressed files must not leak between tests."""
    location = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location), "base_url": settings.MEDIA_URL},
        },
    }
    return location


@pytest.fixture
def bad_file_cases() -> list[Case]:
    """Single files, each with its expected outcome and message."""
    truncated = noisy_jpeg()
    return [
        Case("empty.jpg", b"", "rejected", "empty file"),
        Case("notes.jpg", b"just some text, not a photo\n" * 3, "rejected", "not an image (looks like text)"),
        Case("page.png", b"<!DOCTYPE html><html><body>hi</body></html>", "rejected", "not an image (looks like HTML)"),
        Case("truncated.jpg", truncated[: len(truncated) // 2], "rejected", "truncated or corrupt image data"),
        Case("bomb.png", png_claiming(20000, 20000), "rejected", "20000x20000 pixels is over the 50 MP limit"),
        Case("deep.png", sixteen_bit_png(), "accepted", format="PNG", size=(40, 30)),
        Case("print.jpg", cmyk_jpeg(), "accepted", format="JPEG", size=(50, 40)),
        Case("rotated.jpg", exif_rotated_jpeg(), "accepted", format="JPEG", size=(48, 64)),
        Case("animated.gif", animated_gif(), "accepted", format="GIF", size=(30, 20)),
        Case("palette.png", palette_png_with_transparency(), "accepted", format="PNG", size=(36, 24)),
        Case("plain.jpg", image_bytes(color=(1, 2, 3)), "accepted", format="JPEG", size=(64, 48)),
    ]


@pytest.fixture
def zip_bomb() -> bytes:
    """One 40 MB member of zeros (under the per-image limit) that deflates to ~40 KB: ratio ~1000:1."""
    return make_zip([("bomb.bmp", bytes(40 * 1024 * 1024))])


@pytest.fixture
def upload(db):
    """upload([(name, bytes), ...], user=...) -> UploadBatch, through images.services.upload_files."""
    from images.services import upload_files

    def run(files: list[tuple[str, bytes]], *, user=None, **kwargs):
        return upload_files(files=[(name, io.BytesIO(data)) for name, data in files], user=user, **kwargs)

    return run


def entries_by_file(batch) -> dict[str, dict]:
    return {entry["file"]: entry for entry in batch.report}
