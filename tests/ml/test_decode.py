"""ml.decode against a corpus of good and bad files built here, each with its outcome."""

from __future__ import annotations

import io
import math
import pickle
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from PIL import Image

from ml.decode import (
    ALLOWED_FORMATS,
    ImageDecodeError,
    ImageInfo,
    inspect_image,
    make_thumbnail,
    thumbnail_jpeg,
    open_image,
)
from tests.ml.images import encode, noise_rgb

WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def close_to(actual, expected, tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


# --- builders ---------------------------------------------------------------------


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose IHDR claims ``width`` x ``height`` (8-bit grey)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = encode(noise_rgb((64, 64)), "JPEG", quality=90)
    return data[: len(data) // 2]


def sixteen_bit_png() -> bytes:
    return encode(Image.new("I;16", (8, 8), 32768), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)  # red


def exif_rotated_jpeg() -> bytes:
    """40x20 stored, left half red, right half blue; orientation 6 (rotate 90 clockwise)."""
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def transparent_palette_png() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 8, 16))  # left half red, right half index 0 = transparent
    return encode(image, "PNG", transparency=0)


def la_png() -> bytes:
    image = Image.new("LA", (16, 16), (0, 0))  # black, fully transparent
    image.paste((0, 255), (0, 0, 8, 16))  # left half opaque black
    return encode(image, "PNG")


def rgba_png() -> bytes:
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    image.paste((0, 0, 0, 128), (0, 0, 8, 16))  # left half half-transparent black
    return encode(image, "PNG")


def one_bit_png() -> bytes:
    image = Image.new("1", (16, 16), 0)
    image.paste(1, (0, 0, 8, 16))
    return encode(image, "PNG")


def multipage_tiff() -> bytes:
    pages = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", encode(Image.new("RGB", (8, 8)), "JPEG"))
    return buffer.getvalue()


def float_tiff() -> bytes:
    return encode(Image.new("F", (8, 8), 0.5), "TIFF")


# --- the corpus ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    filename: str
    build: Callable[[], bytes]
    error: str | None = None  # expected str(ImageDecodeError); None means it decodes
    format: str | None = None
    size: tuple[int, int] | None = None  # (width, height) after orientation
    pixels: tuple[tuple[tuple[int, int], tuple[int, int, int]], ...] = ()  # (xy, rgb)


CORPUS = [
    Case("empty.jpg", lambda: b"", error="empty.jpg: empty file"),
    Case("notes.jpg", lambda: b"Shopping list\n- milk\n- eggs\n",
         error="notes.jpg: not an image (looks like text)"),
    Case("photo.png", lambda: b"<!DOCTYPE html>\n<html><head><title>Login</title></head></html>",
         error="photo.png: not an image (looks like HTML)"),
    Case("archive.jpg", zip_archive, error="archive.jpg: not an image (looks like a zip archive)"),
    Case("scan.jpg", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
         error="scan.jpg: not an image (looks like a PDF)"),
    Case("cut.jpg", truncated_jpeg, error="cut.jpg: truncated or corrupt image data"),
    Case("header.jpg", lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF", error="header.jpg: truncated or corrupt image data"),
    Case("huge.png", lambda: png_with_header_size(20000, 20000),
         error="huge.png: 20000x20000 pixels is over the 50 MP limit"),
    Case("big.png", lambda: png_with_header_size(8000, 8000),
         error="big.png: 8000x8000 pixels is over the 50 MP limit"),
    Case("a.tga", lambda: encode(Image.new("RGB", (8, 8)), "TGA"),
         error="a.tga: format TGA is not allowed (allowed: JPEG, PNG, WebP, GIF, BMP, TIFF)"),
    Case("favicon.ico", lambda: encode(Image.new("RGB", (32, 32)), "ICO"),
         error="favicon.ico: format ICO is not allowed (allowed: JPEG, PNG, WebP, GIF, BMP, TIFF)"),
    Case("deep.png", sixteen_bit_png, format="PNG", size=(8, 8), pixels=(((4, 4), (128, 128, 128)),)),
    Case("print.jpg", cmyk_jpeg, format="JPEG", size=(16, 16), pixels=(((8, 8), RED),)),
    Case("phone.jpg", exif_rotated_jpeg, format="JPEG", size=(20, 40),
         pixels=(((10, 5), RED), ((10, 35), BLUE))),
    Case("anim.gif", animated_gif, format="GIF", size=(16, 16), pixels=(((8, 8), RED),)),
    Case("logo.png", transparent_palette_png, format="PNG", size=(16, 16),
         pixels=(((2, 8), RED), ((12, 8), WHITE))),
    Case("grey-alpha.png", la_png, format="PNG", size=(16, 16),
         pixels=(((2, 8), (0, 0, 0)), ((12, 8), WHITE))),
    Case("overlay.png", rgba_png, format="PNG", size=(16, 16),
         pixels=(((2, 8), (127, 127, 127)), ((12, 8), WHITE))),
    Case("fax.png", one_bit_png, format="PNG", size=(16, 16),
         pixels=(((2, 8), WHITE), ((12, 8), (0, 0, 0)))),
    Case("pages.tiff", multipage_tiff, format="TIFF", size=(16, 16), pixels=(((8, 8), RED),)),
    Case("measure.tif", float_tiff, format="TIFF", size=(8, 8), pixels=(((4, 4), (128, 128, 128)),)),
    Case("web.webp", lambda: encode(Image.new("RGB", (16, 12), BLUE), "WEBP", quality=95),
         format="WEBP", size=(16, 12), pixels=(((8, 6), BLUE),)),
    Case("old.bmp", lambda: encode(Image.new("RGB", (16, 12), RED), "BMP"),
         format="BMP", size=(16, 12), pixels=(((8, 6), RED),)),
    Case("grey.jpg", lambda: encode(Image.new("L", (16, 12), 200), "JPEG"),
         format="JPEG", size=(16, 12), pixels=(((8, 6), (200, 200, 200)),)),
]  # fmt: skip

GOOD = [case for case in CORPUS if case.error is None]
BAD = [case for case in CORPUS if case.error is not None]


def ids(cases: list[Case]) -> list[str]:
    return [case.filename for case in cases]


@pytest.mark.parametrize("case", BAD, ids=ids(BAD))
@pytest.mark.parametrize("function", [open_image, inspect_image, make_thumbnail])
def test_bad_files_are_refused_with_a_message_naming_file_and_reason(case, function):
    with pytest.raises(ImageDecodeError) as caught:
        function(case.build(), name=case.filename)
    assert str(caught.value) == case.error
    assert caught.value.filename == case.filename


@pytest.mark.parametrize("case", GOOD, ids=ids(GOOD))
def test_good_files_decode_to_oriented_rgb(case):
    image = open_image(case.build(), name=case.filename)
    assert image.mode == "RGB"
    assert image.size == case.size
    for xy, expected in case.pixels:
        assert close_to(image.getpixel(xy), expected), (xy, image.getpixel(xy), expected)


@pytest.mark.parametrize("case", GOOD, ids=ids(GOOD))
def test_inspect_reports_format_and_oriented_size(case):
    assert inspect_image(case.build(), name=case.filename) == ImageInfo(case.format, *case.size)


def test_allowed_formats_are_exactly_the_documented_ones():
    assert ALLOWED_FORMATS == ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = Image.new("I;16", (3, 1))
    for x, value in enumerate((0, 32768, 65535)):
        ramp.putpixel((x, 0), value)
    image = open_image(encode(ramp, "PNG"), name="ramp.png")
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_pixel_limit_is_the_callers_not_pillows():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match=r"100x100 pixels is over the 0.005 MP limit"):
        open_image(data, name="small.png", max_pixels=5_000)
    assert open_image(data, name="small.png", max_pixels=10_000).size == (100, 100)


def test_pillow_bomb_warning_turned_error_becomes_decode_error():
    data = png_with_header_size(10000, 10000)  # between Pillow's warning and error limits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageDecodeError, match=r"^bomb.png: 10000x10000 pixels is over"):
            open_image(data, name="bomb.png", max_pixels=200_000_000)


def test_truncated_png_is_an_error():
    data = encode(noise_rgb((64, 64)), "PNG")
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        inspect_image(data[: len(data) - 200], name="cut.png")


def test_inspect_detects_truncation_of_a_large_jpeg_even_in_draft_mode():
    data = encode(noise_rgb((1600, 1200), sigma=20), "JPEG", quality=85)
    assert inspect_image(data, name="big.jpg") == ImageInfo("JPEG", 1600, 1200)
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        inspect_image(data[: len(data) * 3 // 4], name="big.jpg")


def test_draft_decodes_large_jpegs_at_reduced_scale_but_not_below_the_asked_size():
    data = encode(noise_rgb((1600, 1200), sigma=20), "JPEG", quality=85)
    image = open_image(data, name="big.jpg", draft_size=224)
    assert image.size == (400, 300)
    assert open_image(data, name="big.jpg").size == (1600, 1200)
    small = encode(noise_rgb((300, 200)), "JPEG")
    assert open_image(small, name="small.jpg", draft_size=224).size == (300, 200)


@pytest.mark.parametrize("kind", ["bytes", "path", "str", "file", "stream"])
def test_every_kind_of_source_is_accepted(kind, tmp_path):
    data = encode(Image.new("RGB", (10, 6), RED), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    sources = {
        "bytes": lambda: data,
        "path": lambda: path,
        "str": lambda: str(path),
        "file": lambda: io.BytesIO(data),
        "stream": lambda: NonSeekable(data),
    }
    assert open_image(sources[kind](), name="a.png").size == (10, 6)


class NonSeekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_file_like_position_is_left_where_it_was():
    handle = io.BytesIO(encode(Image.new("RGB", (10, 6)), "PNG"))
    handle.seek(5)
    inspect_image(handle, name="a.png")
    assert handle.tell() == 5


def test_missing_path_is_a_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="^gone.jpg: cannot read file"):
        open_image(tmp_path / "gone.jpg", name="gone.jpg")


def test_thumbnail_is_an_oriented_jpeg_within_size():
    thumbnail = Image.open(io.BytesIO(make_thumbnail(exif_rotated_jpeg(), name="p.jpg", size=10)))
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == (5, 10)

    big = encode(noise_rgb((1600, 1200), sigma=20), "JPEG")
    assert Image.open(io.BytesIO(make_thumbnail(big, name="b.jpg"))).size == (256, 192)


def test_thumbnail_of_a_decoded_image_leaves_the_image_as_it_was():
    decoded = noise_rgb((800, 600), sigma=20)
    before = decoded.tobytes()

    thumbnail = Image.open(io.BytesIO(thumbnail_jpeg(decoded, size=320)))

    assert (thumbnail.format, thumbnail.size) == ("JPEG", (320, 240))
    assert decoded.size == (800, 600) and decoded.tobytes() == before  # still fit for the model
    small = Image.open(io.BytesIO(thumbnail_jpeg(noise_rgb((40, 30)), size=320)))
    assert small.size == (40, 30)  # never enlarged
    rgba = Image.open(io.BytesIO(thumbnail_jpeg(Image.new("RGBA", (20, 10)), size=320)))
    assert rgba.mode == "RGB"


def test_decode_error_is_a_value_error_and_pickles():
    error = ImageDecodeError("a.jpg", "empty file")
    assert isinstance(error, ValueError)
    assert str(error) == "a.jpg: empty file"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.filename, clone.reason, str(clone)) == ("a.jpg", "empty file", "a.jpg: empty file")


# --- every mode the upload accepts is predictable -----------------------------------

# Fills that reach each branch of the high-bit-depth scaling, flat ones included
# (a flat image has no range to stretch: it once divided by zero).
_FILLS = {
    "I": (0, 255, 70000, -5, -(2**31), 2**31 - 1),
    "F": (0.0, 0.5, 200.0, 70000.0, -3.5, 1e38, float("inf"), float("nan")),
    "I;16": (0, 65535),
    "I;16B": (0, 65535),
    "I;16L": (0, 65535),
    "I;16N": (0, 65535),
}


def _mode_cases() -> list[tuple[str, str, str, bytes]]:
    """(format, mode, content, file) for every mode Pillow can write in each allowed format.

    Each mode gets flat images (its zero and, for the wide modes, the `_FILLS`)
    and, where Pillow converts to it, a noisy one.
    """
    cases = []
    for fmt in ALLOWED_FORMATS:
        for mode in Image.MODES:
            images = {f"flat {fill!r}": Image.new(mode, (60, 40), fill) for fill in _FILLS.get(mode, (0,))}
            try:
                images["noise"] = noise_rgb((60, 40)).convert(mode)
            except ValueError:
                pass
            for content, image in images.items():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        data = encode(image, fmt)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # Pillow cannot write this mode in this format
                cases.append((fmt, mode, content, data))
    return cases


MODE_CASES = _mode_cases()


@pytest.fixture(scope="module")
def tiny_predictor(random_model, tiny_metadata):
    from ml.predictor import Predictor

    return Predictor(random_model, tiny_metadata, device="cpu", precision="fp32", batch_size=1)


def test_the_mode_cases_cover_the_wide_tiff_modes():
    written = {(fmt, mode) for fmt, mode, _content, _data in MODE_CASES}
    assert {("TIFF", "I"), ("TIFF", "F"), ("TIFF", "I;16"), ("PNG", "I;16"), ("JPEG", "CMYK")} <= written
    assert {fmt for fmt, *_ in MODE_CASES} == set(ALLOWED_FORMATS)


@pytest.mark.parametrize(
    "fmt, mode, content, data", MODE_CASES, ids=[f"{f}-{m}-{c}" for f, m, c, _ in MODE_CASES]
)
def test_what_the_upload_accepts_the_worker_decodes_and_thumbnails(tiny_predictor, fmt, mode, content, data):
    """The upload gate (inspect_image) and the worker (predict_sources with its thumbnail hook)
    agree: a file the gate accepts yields a prediction and a thumbnail."""
    name = f"{mode}.{fmt.lower()}"
    try:
        info = inspect_image(data, name=name)
    except ImageDecodeError:
        return  # refused at upload: the worker never sees it
    thumbnails: dict[int, bytes] = {}
    decoded_sizes: dict[int, tuple[int, int]] = {}

    def on_decoded(index, _name, image):
        decoded_sizes[index] = image.size
        thumbnails[index] = thumbnail_jpeg(image, size=32)

    ((_, result),) = tiny_predictor.predict_sources([(name, data)], on_decoded=on_decoded, decode_workers=1)

    assert not isinstance(result, ImageDecodeError), result
    assert all(math.isfinite(p) for p in result.probabilities)
    assert decoded_sizes[0] == (info.width, info.height)
    assert Image.open(io.BytesIO(thumbnails[0])).format == "JPEG"
    assert Image.open(io.BytesIO(make_thumbnail(data, name=name, size=32))).size == (32, 21)


@pytest.mark.parametrize("mode, fill", [("I", 70000), ("I", -5), ("F", 70000.0), ("F", -3.5), ("F", float("inf"))])
def test_a_flat_wide_tiff_decodes_as_a_flat_image(mode, fill):
    image = open_image(encode(Image.new(mode, (200, 100), fill), "TIFF"), name="flat.tif")

    assert (image.mode, image.size) == ("RGB", (200, 100))
    assert len({low_high for low_high in image.getextrema()}) == 1
    low, high = image.getextrema()[0]
    assert low == high
