"""Reading images from strangers: OpenCV decode with limits, and flagged damage.

OpenCV returns None for garbage, a half-grey image for a truncated JPEG and
raises for a pixel bomb; each becomes an :class:`ImageError` that a folder run
reports and skips.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm")
MAX_FILE_BYTES = 256 << 20  # the most bytes read from one image (or list) file
MAX_PIXELS = 64_000_000  # about 8000x8000: larger headers are treated as pixel bombs

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

_REDUCED = {1: None, 2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


# Why a path is not read, as a run's summary counts them (ImageError.kind, sources' Skipped.kind).
NOT_REGULAR = "not a regular file"
BROKEN_LINK = "broken link"
LINK_LOOP = "link loop"

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class ImageError(DataError):
    """One image file that cannot be used; a folder run reports it and goes on.

    ``kind`` is set when the path is refused before any read: NOT_REGULAR, BROKEN_LINK or LINK_LOOP.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, kind: str | None = None):
        self.path = None if path is None else str(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{path}: {reason}" if path is not None else reason)


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def jpeg_header(data: bytes) -> tuple[tuple[int, int] | None, bool]:
    """One walk of a JPEG's headers: ((width, height) from its frame header or None, whether it is truncated).

    The marker segments are walked from SOI to the first scan (SOS), skipping APPn
    segments whole (an EXIF thumbnail carries its own FFD9); after the scan header,
    entropy-coded data stuffs every FF as FF00, so the first FFD9 is the EOI
    (progressive files have several scans; their EOI is still the first FFD9).
    Bytes after the EOI (a phone's "motion photo" video, padding) are allowed.
    Only whether an FFD9 follows matters, so it is looked for from the end, where
    the EOI of a whole file sits: a forward search crawls through the many FF00
    pairs of the entropy-coded data (45 µs for a 46 KB photo, against under 1 µs).
    Bytes that do not follow the marker structure count as whole when an FFD9 follows the SOI.
    A tight loop without slices or generators: it runs once for every file a folder run reads.
    """
    size = None
    i, n = 2, len(data)
    while True:
        if i + 2 > n:
            return size, True  # ended inside the headers
        if data[i] != 0xFF:
            return size, data.rfind(b"\xff\xd9", 2) == -1  # not the structure we know
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # EOI before any scan: nothing to half-decode
            return size, False
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if i + 4 > n:
            return size, True
        seg = (data[i + 2] << 8) | data[i + 3]
        if seg < 2:
            return size, data.rfind(b"\xff\xd9", 2) == -1
        if marker == 0xDA:  # SOS: entropy-coded data follows
            start = i + 2 + seg
            return size, start > n or data.rfind(b"\xff\xd9", start) == -1
        if size is None and 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 < n:
            size = ((data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6])  # SOFn: the frame size
        i += 2 + seg
        if i > n:
            return size, True


def _png_truncated(data: bytes) -> bool:
    """True when a PNG's chunk walk (length, type, data, CRC) runs out before IEND.
    Bytes after IEND are allowed."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    i, n = 8, len(data)
    while True:
        if i + 8 > n:
            return True
        length = int.from_bytes(data[i:i + 4], "big")
        ctype = data[i + 4:i + 8]
        end = i + 12 + length
        if end > n:
            return True
        if ctype == b"IEND":
            return False
        i = end


_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8"


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header without decoding, or None if unknown."""
    if data.startswith(_PNG):
        return _png_size(data)
    return jpeg_header(data)[0] if data.startswith(_JPEG) else None


def _factor(size: tuple[int, int], height: int, width: int) -> int:
    """The largest reduction (1, 2, 4 or 8) that keeps a ``size`` (width, height) image at least
    ``height`` x ``width``."""
    w, h = size
    for r in (8, 4, 2):
        if w // r >= width and h // r >= height:
            return r
    return 1


def reduce_factor(data: bytes, height: int, width: int,
                  need: Callable[[int, int], tuple[int, int]] | None = None) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) that keeps the image at least
    ``height`` x ``width`` (or ``need(h, w)`` for a file of ``h`` x ``w``: the size the resize
    mode scales to, which a crop makes larger than the input): a photo at least 2x that
    decodes at 1/2 to 1/8 size, much faster, before the final resize. Other formats
    decode at full size."""
    size = jpeg_header(data)[0] if data.startswith(_JPEG) else None
    if size is None:
        return 1
    return _factor(size, *need(size[1], size[0])) if need is not None else _factor(size, height, width)


def decode_image(data: bytes, path: str | os.PathLike | None = None, reduce: int = 1,
                 need: Callable[[int, int], tuple[int, int]] | None = None, rgb: bool = False) -> np.ndarray:
    """Decode bytes to a BGR uint8 HxWx3 array (OpenCV's order), or RGB with ``rgb``; or raise ImageError.

    ``reduce`` (1, 2, 4 or 8) asks libjpeg to decode at 1/reduce size, which is much
    cheaper when the model input is far smaller than the photo. With ``need`` (file
    ``h, w`` -> the smallest ``h, w`` wanted) the factor is chosen as :func:`reduce_factor`
    does, from the same walk of the headers that checks the file.
    """
    import cv2

    if not data:
        raise ImageError(path, "empty file")
    size = None
    jpeg = data.startswith(_JPEG)
    if jpeg:
        size, cut = jpeg_header(data)
    elif data.startswith(_PNG):
        size, cut = _png_size(data), _png_truncated(data)
    else:
        cut = False
    if cut:
        raise ImageError(path, "truncated image (no end marker); OpenCV would half-decode it")
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageError(path, f"{size[0]}x{size[1]} pixels is over the {MAX_PIXELS}-pixel decode limit "
                               "(a decompression bomb?)")
    if need is not None:
        reduce = _factor(size, *need(size[1], size[0])) if jpeg and size is not None else 1
    elif reduce not in _REDUCED:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
    flag = (_FLAGS or _flags(cv2))[reduce, rgb]
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decode failed"
        raise ImageError(path, f"cannot decode ({'too many pixels' if 'pixels' in msg.lower() else msg})") from None
    if img is None:
        raise ImageError(path, "not a readable image")
    if rgb and _SWAP_RGB:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


_FLAGS: dict[tuple[int, bool], int] = {}  # imdecode's flag for (reduction, rgb), filled on first use
_SWAP_RGB = False  # an OpenCV without IMREAD_COLOR_RGB (before 4.10): decode BGR, then swap


def _flags(cv2: Any) -> dict[tuple[int, bool], int]:
    """imdecode's flag for each (reduction, rgb): the IMREAD_REDUCED_COLOR_n flags with their colour
    bit swapped for IMREAD_COLOR_RGB where this OpenCV has it."""
    global _SWAP_RGB
    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)
    _SWAP_RGB = rgb is None
    flags = {}
    for r, name in _REDUCED.items():
        bgr = cv2.IMREAD_COLOR if name is None else getattr(cv2, name)
        flags[r, False] = bgr
        flags[r, True] = bgr if rgb is None else (bgr & ~cv2.IMREAD_COLOR) | rgb
    _FLAGS.update(flags)  # whole, in one step: another thread may be reading it
    return _FLAGS


def stat_path(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` (links followed) where a missing file, a broken link and a link loop are ImageErrors."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(path, f"broken link (its target {os.readlink(path)!r} does not exist)",
                             BROKEN_LINK) from None
        raise ImageError(path, "no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(path, "link loop (a symbolic link that leads back to itself)", LINK_LOOP) from None
        if exc.errno == errno.ENOTDIR:
            raise ImageError(path, "no such file") from None
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None


def require_regular(path: str | os.PathLike, st: os.stat_result) -> None:
    """ImageError (kind NOT_REGULAR) unless ``st`` is a regular file: a FIFO would block a read
    forever, and a device such as /dev/zero never ends."""
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "is a folder, not an image", NOT_REGULAR)
    what = _KINDS.get(stat.S_IFMT(st.st_mode), "not a plain file")
    if os.path.islink(path):
        what = f"a link to {what}, {os.path.realpath(path)}"
    raise ImageError(path, f"not a regular file ({what}); only regular files are read", NOT_REGULAR)


def read_file(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of one regular file, at most ``limit`` of them; problems become ImageError.

    The path is checked with ``stat`` before it is opened, and opened with O_NONBLOCK, so a
    FIFO swapped in between cannot block. A file that reads as ``stat`` said (one read of its
    size and one byte more giving exactly its size) is done in four system calls; any other
    (swapped since, growing, /proc files and devices that report 0, a short read) has its open
    descriptor checked again and is read on, stopping one byte past ``limit``. Each call lets
    another thread take the GIL, which costs more than the call on a busy pipeline.
    """
    st = stat_path(path)
    if not stat.S_ISREG(st.st_mode):
        require_regular(path, st)
    if st.st_size > limit:
        raise ImageError(path, f"{st.st_size} bytes is over the {limit}-byte file limit")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        first = os.read(fd, st.st_size + 1)
        if len(first) == st.st_size:
            return first
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            require_regular(path, st)
        return _read_capped(fd, path, st.st_size, limit, first)
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _read_capped(fd: int, path: str | os.PathLike, size: int, limit: int, first: bytes = b"") -> bytes:
    """Read on to the end after ``first``, or raise one byte past ``limit``. Each read asks for what
    fstat's ``size`` says is left and one byte more; a file longer than it said is read on in
    growing chunks."""
    parts = [first] if first else []
    got = len(first)
    if got > limit:
        raise ImageError(path, f"more than {limit} bytes: over the file limit")
    want = size - got + 1 if got <= size else max(got, 1 << 16)
    while True:
        chunk = os.read(fd, min(want, limit + 1 - got))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
        if got > limit:
            raise ImageError(path, f"more than {limit} bytes: over the file limit")
        want = size - got + 1 if got <= size else max(got, 1 << 16)


def read_image(path: str | os.PathLike, reduce: int = 1) -> np.ndarray:
    """Read and decode one image file with the size and damage checks of decode_image."""
    return decode_image(read_file(path), Path(path), reduce)
