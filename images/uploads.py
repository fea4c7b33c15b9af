"""Turning what a user sends (files, zip archives) into bounded in-memory files.

Nothing here touches the database or the storage: it only reads, with every size
limit enforced before the bytes are read, and says why a file cannot be used.
Zip archives are never extracted to disk: members are read one by one, with the
central directory's numbers checked before anything is inflated (a zip bomb is
refused without being expanded) and every read bounded (the numbers can lie).
Each file is then hashed, and decoded (``iter_inspected``) by threads working a
few files ahead of the caller, which stores them.

A file keeps its path inside its archive, or inside the folder it was dropped
or imported with, as its name (``site_a/DSC_505.jpg``): equal names in different
folders stay distinct. The path is sanitised (``safe_path``): printable
characters, ``/`` between folders, and a path that tries to leave its folder
(``..``, absolute, a drive letter) is reduced to its base name, with a note.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import IO

from django.conf import settings
from django.template.defaultfilters import filesizeformat

from ml.cores import usable_cores
from ml.decode import ImageInfo, inspect_image

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
NESTED_ARCHIVE_SUFFIXES = (
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".zst", ".7z", ".rar", ".cab",
)
# A member smaller than this cannot hurt whatever it inflates to, and small
# uncompressed images (a flat-colour BMP) legitimately compress very well.
RATIO_CHECK_MIN_BYTES = 1024 * 1024
# Image.original_name's length.
NAME_MAX_LENGTH = 255
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
# Threads that hash and decode an upload's files ahead of the one that stores them, and
# how many bytes of files they may hold beyond the one being stored.
INSPECT_WORKERS = 4
INSPECT_AHEAD_BYTES = 64 * 1024 * 1024


def human_size(num_bytes: int) -> str:
    return filesizeformat(num_bytes).replace("\xa0", " ")


@dataclass(frozen=True)
class UploadLimits:
    image_max_bytes: int
    zip_max_members: int
    zip_max_total_bytes: int
    zip_max_ratio: int

    @classmethod
    def from_settings(cls) -> UploadLimits:
        return cls(
            image_max_bytes=settings.IMAGE_MAX_BYTES,
            zip_max_members=settings.ZIP_MAX_MEMBERS,
            zip_max_total_bytes=settings.ZIP_MAX_TOTAL_BYTES,
            zip_max_ratio=settings.ZIP_MAX_RATIO,
        )


@dataclass(frozen=True)
class IncomingFile:
    """One file of an upload: its bytes, or the reason there are none.

    ``label`` names it in the report (``photos.zip/cats/tom.jpg``); ``name`` is the
    name kept on the Image: its sanitised path in its archive or folder
    (``cats/tom.jpg``). ``note`` is said whatever happens next (an unsafe path
    that was reduced to its base name).
    """

    label: str
    name: str
    data: bytes | None = None
    reason: str = ""
    note: str = ""
    sent_index: int = 0  # position among the files sent (a zip's members share their archive's)

    @property
    def rejected(self) -> bool:
        return self.data is None


def iter_incoming_files(
    files: Iterable[tuple[str, IO[bytes]]], *, limits: UploadLimits | None = None
) -> Iterator[IncomingFile]:
    """Each uploaded file read into memory; zip archives expanded member by member."""
    limits = limits or UploadLimits.from_settings()
    for sent_index, (client_name, fp) in enumerate(files):
        name, escapes = safe_path(client_name)
        if _looks_like_zip(name, fp):
            for member in iter_zip_members(name, fp, limits=limits):
                yield replace(member, sent_index=sent_index)
        else:
            incoming = read_file(client_name or name, name, fp, max_bytes=limits.image_max_bytes)
            note = _unsafe_note(client_name, name) if escapes else ""
            yield replace(incoming, note=note, sent_index=sent_index)


@dataclass(frozen=True)
class InspectedFile:
    """An incoming file with its content hash and what its decode found, both
    None when it was refused before (``incoming.rejected``). ``info`` is None also
    when the content was stored already (not decoded) or did not decode: the
    caller looks for the content among the stored images, and decodes it again
    for the reason when it is not there."""

    incoming: IncomingFile
    sha256: str | None = None
    info: ImageInfo | None = None
    looked_up: bool = False  # ``stored`` was asked about the content and said no


def iter_inspected(
    incoming: Iterable[IncomingFile],
    *,
    max_pixels: int,
    workers: int | None = None,
    stored: Callable[[str], bool] | None = None,
) -> Iterator[InspectedFile]:
    """``incoming`` in order, each file hashed, then validated (``inspect_image`` with its
    perceptual hash) in a thread pool up to two files a thread ahead.

    Pillow lets go of the GIL, so an upload's decoding spreads over the cores while
    the caller stores (512 photos on a 16-core GPU machine: 6.0 s on one
    thread, 2.0 s on four; eight were no faster). Ahead means at most ``2 * workers``
    files and INSPECT_AHEAD_BYTES. A file whose content hash ``stored`` says is stored
    already is not decoded (``info`` None): a folder imported again costs no decoding.
    When ``incoming`` fails, the files read before it are still yielded, then the error raised.
    """
    workers = workers or min(INSPECT_WORKERS, usable_cores())
    pending: deque[Future[InspectedFile]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="upload-inspect")
    try:
        failure: Exception | None = None
        ahead_bytes = 0
        files = iter(incoming)
        while True:
            try:
                item = next(files)
            except StopIteration:
                break
            except Exception as exc:  # the caller's files: those read before are still stored
                failure = exc
                break
            pending.append(_inspection(pool, item, max_pixels=max_pixels, stored=stored))
            ahead_bytes += len(item.data or b"")
            while len(pending) >= 2 * workers or (pending and ahead_bytes > INSPECT_AHEAD_BYTES):
                checked = pending.popleft().result()
                ahead_bytes -= len(checked.incoming.data or b"")
                yield checked
        while pending:
            yield pending.popleft().result()
        if failure is not None:
            raise failure
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _inspection(
    pool: ThreadPoolExecutor, item: IncomingFile, *, max_pixels: int, stored: Callable[[str], bool] | None
) -> Future[InspectedFile]:
    """The file's inspection: done at once when it was refused or its content is stored, else queued."""
    done: Future[InspectedFile] = Future()
    if item.rejected:
        done.set_result(InspectedFile(item))
        return done
    sha256 = hashlib.sha256(item.data).hexdigest()  # 0.3 ms for 700 KB: not worth a thread
    if stored is not None and stored(sha256):
        done.set_result(InspectedFile(item, sha256=sha256))
        return done
    return pool.submit(_inspected, item, sha256=sha256, max_pixels=max_pixels, looked_up=stored is not None)


def _inspected(incoming: IncomingFile, *, sha256: str, max_pixels: int, looked_up: bool) -> InspectedFile:
    try:
        info = inspect_image(incoming.data, name=incoming.name, max_pixels=max_pixels, with_hash=True)
    except Exception:  # ImageDecodeError, or worse: the caller's own decode reports it
        info = None
    return InspectedFile(incoming, sha256=sha256, info=info, looked_up=looked_up)


def read_file(label: str, name: str, fp: IO[bytes], *, max_bytes: int) -> IncomingFile:
    """Read ``fp`` whole, refusing it from its size alone when that is known and too big."""
    size = _known_size(fp)
    if size is not None and size > max_bytes:
        return IncomingFile(label, name, reason=_too_big(size, max_bytes))
    try:
        # The size it says, when it says one: a read of max_bytes allocates that much
        # first (50 MB for every photo cost a quarter of a millisecond a file).
        data = fp.read(max_bytes + 1 if size is None else size + 1)
        if size is not None and len(data) > size:  # it lied, or grew: read on, still bounded
            data += fp.read(max_bytes + 1 - len(data))
    except OSError as exc:
        return IncomingFile(label, name, reason=f"cannot read file ({exc})")
    if len(data) > max_bytes:
        return IncomingFile(label, name, reason=_too_big(None, max_bytes))
    return IncomingFile(label, name, data=data)


def printable(text: str) -> str:
    """``text`` without what Django's upload parser drops from a file name: every character
    that is not printable (controls, bidi overrides such as U+202E, zero-width spaces)."""
    return "".join(char for char in text if char.isprintable())


def base_name(raw: str) -> tuple[str, bool]:
    """The last path component of ``raw`` and whether ``raw`` tried to leave its folder."""
    cleaned = printable(raw or "")
    parts = cleaned.replace("\\", "/").split("/")
    name = parts[-1].strip()
    if name in ("", ".", ".."):
        name = "unnamed"
    escapes = cleaned.startswith(("/", "\\")) or ".." in parts or bool(_DRIVE_LETTER.match(cleaned))
    return name, escapes


def safe_path(raw: str) -> tuple[str, bool]:
    """``raw`` as a relative path kept as an image's name, and whether it tried to leave its folder.

    Printable characters only, folders joined by ``/``, no empty or ``.`` parts.
    A path that tries to leave (``..``, absolute, a drive letter) is reduced to
    its base name. One too long for the name loses its leading folders.
    """
    name, escapes = base_name(raw)
    if escapes:
        return name, True
    parts = [part.strip() for part in printable(raw or "").replace("\\", "/").split("/")]
    folders = [part for part in parts[:-1] if part not in ("", ".")]
    while folders and len("/".join([*folders, name])) > NAME_MAX_LENGTH:
        folders.pop(0)
    return "/".join([*folders, name]), False


def _unsafe_note(raw: str, name: str) -> str:
    return f"unsafe path {printable(raw)!r} reduced to {name!r}"


# --- zip archives ---------------------------------------------------------------


def _hidden_member(name: str) -> bool:
    """A member left out as the import command leaves hidden files out of a folder: a dot file or
    anything in a dot folder (.DS_Store), and the resource forks macOS adds to a zip (__MACOSX/._x.jpg)."""
    parts = name.replace("\\", "/").split("/")
    return any(part == "__MACOSX" or (part.startswith(".") and part not in (".", "..")) for part in parts)


def _listed_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [info for info in archive.infolist() if not info.is_dir() and not _hidden_member(info.filename)]


def iter_zip_members(archive_name: str, fp: IO[bytes], *, limits: UploadLimits) -> Iterator[IncomingFile]:
    """The archive's files, each read with a bounded read, or one rejection for the archive."""
    if not _is_seekable(fp):
        # zipfile needs to seek to the central directory; a stream is bounded first.
        incoming = read_file(archive_name, archive_name, fp, max_bytes=limits.zip_max_total_bytes)
        if incoming.rejected:
            yield incoming
            return
        fp = io.BytesIO(incoming.data)
    try:
        archive = zipfile.ZipFile(fp)
        members = _listed_members(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        yield IncomingFile(archive_name, archive_name, reason=f"not a readable zip archive ({exc})")
        return

    with archive:
        if not members:
            # Otherwise nothing in the report would say the archive was received.
            yield IncomingFile(archive_name, archive_name, reason="archive contains no files")
            return
        archive_problem = _archive_problem(members, limits)
        if archive_problem:
            yield IncomingFile(archive_name, archive_name, reason=archive_problem)
            return
        inflated_total = 0
        for info in members:
            room = limits.zip_max_total_bytes - inflated_total
            incoming = _read_member(archive, archive_name, info, limits, room=room)
            inflated_total += len(incoming.data or b"")
            yield incoming


def count_upload_items(path: str | os.PathLike) -> int:
    """How many report entries a file on disk will give: its members for a zip, else one."""
    name = os.fspath(path)
    if not os.path.isfile(name):  # opening a pipe would wait for a writer
        return 1
    try:
        with open(name, "rb") as fp:
            if not _looks_like_zip(name, fp):
                return 1
            with zipfile.ZipFile(fp) as archive:
                return max(1, len(_listed_members(archive)))
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return 1


def _archive_problem(members: list[zipfile.ZipInfo], limits: UploadLimits) -> str:
    """Refuse a whole archive from its central directory, before inflating anything."""
    if len(members) > limits.zip_max_members:
        return f"archive has {len(members)} files, over the limit of {limits.zip_max_members} per archive"
    declared_total = sum(info.file_size for info in members)
    if declared_total > limits.zip_max_total_bytes:
        return (
            f"archive would expand to {human_size(declared_total)}, "
            f"over the {human_size(limits.zip_max_total_bytes)} limit per archive"
        )
    return ""


def _read_member(
    archive: zipfile.ZipFile, archive_name: str, info: zipfile.ZipInfo, limits: UploadLimits, *, room: int
) -> IncomingFile:
    name, escapes = safe_path(info.filename)
    if escapes:
        label = f"{archive_name}/{name}"
        note = f"unsafe path {info.filename!r} in the archive reduced to {name!r}"
    else:
        label = f"{archive_name}/{printable(info.filename)}"
        note = ""

    def refuse(reason: str) -> IncomingFile:
        return IncomingFile(label, name, reason=reason, note=note)

    if name.lower().endswith(NESTED_ARCHIVE_SUFFIXES):
        return refuse("archive inside an archive: skipped (nested archives are not expanded)")
    if info.flag_bits & 0x1:
        return refuse("encrypted (password-protected) files are not supported")
    if info.file_size > limits.image_max_bytes:
        return refuse(_too_big(info.file_size, limits.image_max_bytes))
    ratio = _compression_ratio(info)
    if info.file_size >= RATIO_CHECK_MIN_BYTES and ratio > limits.zip_max_ratio:
        return refuse(
            f"compression ratio {ratio:.0f}:1 is over the {limits.zip_max_ratio}:1 limit "
            "(possible zip bomb; not expanded)"
        )

    # The header's sizes can lie: never read more than the limits allow.
    max_bytes = min(limits.image_max_bytes, room)
    try:
        with archive.open(info) as member:
            data = member.read(max_bytes + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        return refuse(f"corrupt file in the archive ({exc})")
    except NotImplementedError as exc:
        return refuse(f"unsupported compression method ({exc})")
    except RuntimeError as exc:  # zipfile's "password required" and friends
        return refuse(f"cannot read file in the archive ({exc})")
    if len(data) > max_bytes:
        if max_bytes < limits.image_max_bytes:
            return refuse(f"archive expands to more than the {human_size(limits.zip_max_total_bytes)} limit")
        return refuse(_too_big(None, limits.image_max_bytes))
    if data.startswith(ZIP_MAGICS):
        return refuse("archive inside an archive: skipped (nested archives are not expanded)")
    return IncomingFile(label, name, data=data, note=note)


def _compression_ratio(info: zipfile.ZipInfo) -> float:
    if info.file_size == 0:
        return 0.0
    if info.compress_size == 0:
        return float("inf")
    return info.file_size / info.compress_size


# --- helpers --------------------------------------------------------------------


def _too_big(size: int | None, max_bytes: int) -> str:
    if size is None:
        return f"file is larger than the {human_size(max_bytes)} limit per image"
    return f"file is {human_size(size)}, over the {human_size(max_bytes)} limit per image"


def _known_size(fp: IO[bytes]) -> int | None:
    size = getattr(fp, "size", None)  # Django's UploadedFile and File
    if isinstance(size, int):
        return size
    if _is_seekable(fp):
        position = fp.tell()
        end = fp.seek(0, os.SEEK_END)
        fp.seek(position)
        return end - position
    return None


def _is_seekable(fp: IO[bytes]) -> bool:
    try:
        return bool(fp.seekable())
    except (AttributeError, ValueError):
        return False


def _looks_like_zip(name: str, fp: IO[bytes]) -> bool:
    # The content decides (a JPEG named photo.zip is a JPEG); only a stream that
    # cannot be peeked at is taken at its name.
    if not _is_seekable(fp):
        return name.lower().endswith(".zip")
    position = fp.tell()
    head = fp.read(4)
    fp.seek(position)
    return head in ZIP_MAGICS
