"""Sources: where frames come from. One factory, :func:`open_source`, and one table, :data:`SOURCE_KINDS`:
data saying how each kind is recognised, which class reads it and which options its constructor takes.

=========================  ============================================================  ====================
spec                       source                                                        options it takes
=========================  ============================================================  ====================
``photo.jpg``              one image file
``photos/``                a folder, recursive, sorted; each file once, in order         ``glob``
``list.txt``               a list file: one image path a line (relative to the list)
``clip.mp4``               a video file, every frame in order
``clip.mp4``, ``live``     the video replayed at its own rate, newest frame only         timeouts
``0``, ``camera:0``        a camera by index; an existing file or folder named ``0``     ``give_up_s``
                           wins over the camera (``camera:0`` does not)
``/dev/video0``            a V4L2 device (also ``v4l2:///dev/video0``)                   ``give_up_s``
``rtsp://``, ``http://``   a network stream (RTSP, HTTP MJPEG, ...)                      timeouts, ``give_up_s``
``csi://0``                a Jetson CSI camera (composes the nvarguscamerasrc pipeline)  timeouts, ``give_up_s``
``... ! appsink``          a GStreamer pipeline string                                   timeouts, ``give_up_s``
=========================  ============================================================  ====================

An option a kind does not take does not apply to it and is not passed (``glob`` means nothing to a
camera). Every source is an iterator of Frames and a context manager that closes it.

Only regular files are read. A folder entry that is not used (a file that is not
named like an image, a hidden name, something that is not a regular file, a broken
link, a link loop, a link to a folder, which is not followed) is yielded once, in
its place, as a Frame whose ``skip`` says why: the run reports it and counts it.
The entries of a list file, or of a list of image paths, that are not regular files
are yielded the same way; any other path that is not a regular file or a folder is
refused when the source opens.

Live sources (cameras, streams, GStreamer, ``live=True`` videos) read in their
own thread and keep only the newest frame: a slow model never builds a backlog,
and each overwritten frame is counted in ``dropped``. Reads never block longer
than the open/read timeouts; a dropped stream reconnects with back-off (the
frame size is re-checked) and no frame is ever invented or delivered twice. It
keeps trying for as long as the run lasts, unless ``give_up_s`` says when a
stream that stays down ends instead (a supervisor then restarts the process).
"""
from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import DataError
from ..imaging.errors import ImageError
from ..imaging.files import (BROKEN_LINK, LINK_LOOP, MAX_FILE_BYTES, NOT_REGULAR, is_image_file, read_file,
                             require_regular, stat_path)

log = logging.getLogger("cnnedge.runtime")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mjpeg", ".mjpg", ".h264", ".h265", ".3gp")
LIST_SUFFIXES = (".txt", ".lst", ".list")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 5_000


HIDDEN = "hidden"
NOT_IMAGE = "not an image"
UNREADABLE = "unreadable folder"
SKIP_KINDS = (NOT_IMAGE, HIDDEN, NOT_REGULAR, BROKEN_LINK, LINK_LOOP, UNREADABLE)


class SourceError(DataError):
    """A source that cannot be opened (missing camera, unreachable URL, unknown path)."""


@dataclass(frozen=True)
class Skipped:
    """A path a file source does not read: ``kind`` (one of SKIP_KINDS, what a summary counts)
    and ``reason`` (the line a report shows)."""

    path: str
    kind: str
    reason: str


@dataclass
class Frame:
    """One unit of work: a file to decode, or a captured frame."""

    source: str
    timestamp: float  # wall clock at capture / file read
    t0: float  # perf_counter at capture / file read, for latency
    frame: int | None = None
    path: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    skip: Skipped | None = None  # a path that is reported, not read


class Source:
    """Base: an iterator of Frames with ``name``, ``live``, ``total`` (None if unknown),
    ``dropped`` and ``reconnects`` counters, ``gave_up`` and ``close()``; a context manager that
    closes it (closing twice is harmless)."""

    live = False
    name = ""
    total: int | None = None
    dropped = 0
    reconnects = 0
    gave_up = False  # a live source that stayed down past its give_up_s

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource(Source):
    """Image files, each yielded once in the given order (decoding happens in the pool);
    :class:`Skipped` entries are yielded in their place as Frames with ``skip`` set."""

    def __init__(self, paths: Sequence[str | os.PathLike | Skipped], name: str) -> None:
        self._entries = [p if isinstance(p, Skipped) else str(p) for p in paths]
        self.paths = [p for p in self._entries if isinstance(p, str)]
        self.skips = [p for p in self._entries if isinstance(p, Skipped)]
        self.name = name
        self.total = len(self._entries)
        self._i = 0

    @property
    def skipped(self) -> int:
        return len(self.skips)

    def __next__(self) -> Frame:
        if self._i >= len(self._entries):
            raise StopIteration
        e = self._entries[self._i]
        self._i += 1
        if isinstance(e, Skipped):
            return Frame(self.name, time.time(), time.perf_counter(), path=e.path, skip=e)
        return Frame(self.name, time.time(), time.perf_counter(), path=e)


def _cv2() -> Any:
    import cv2

    return cv2


def _redact(url: str) -> str:
    """A URL without its password, for names and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _capture(target: Any, api: int, params: list[int]) -> Any:
    cv2 = _cv2()
    cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


class VideoFileSource(Source):
    """Every frame of a video file, in order (not live: nothing is dropped)."""

    def __init__(self, path: str | os.PathLike, name: str | None = None) -> None:
        cv2 = _cv2()
        self.name = name or str(path)
        self.cap = _capture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS])
        if self.cap is None:
            raise SourceError(f"{path}: cannot open as a video (not a video file, or a codec OpenCV lacks)")
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = n if n > 0 else None
        self._i = 0

    def __next__(self) -> Frame:
        if self.cap is None:
            raise StopIteration
        ok, img = self.cap.read()
        if not ok or img is None:
            self.close()
            raise StopIteration
        f = Frame(self.name, time.time(), time.perf_counter(), frame=self._i, image=img)
        self._i += 1
        return f

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class LiveSource(Source):
    """A capture read in its own thread; ``get`` returns the newest frame not yet taken.

    ``reconnect``: reopen with back-off (``backoff`` seconds, doubling up to
    ``max_backoff``) when reads fail; a file target ends at its last frame instead.
    ``give_up_s``: end the source (``gave_up`` set) when it has stayed down this
    long; None keeps trying until closed.
    ``fps``: deliver no faster than this (a video file replayed as a camera would
    deliver it); None reads as fast as the capture gives frames.
    """

    live = True

    def __init__(self, target: Any, name: str, api: int | None = None, *, timeouts: bool = True,
                 open_timeout_ms: int = OPEN_TIMEOUT_MS, read_timeout_ms: int = READ_TIMEOUT_MS,
                 reconnect: bool = True, backoff: float = 0.25, max_backoff: float = 4.0,
                 fps: float | None = None, give_up_s: float | None = None) -> None:
        cv2 = _cv2()
        self.target, self.name = target, name
        self.api = cv2.CAP_ANY if api is None else api
        self.params = ([cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_ms),
                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_ms)] if timeouts else [])
        self.reconnect, self.backoff, self.max_backoff = reconnect, backoff, max_backoff
        self.period = 1.0 / fps if fps else 0.0
        self.give_up_s = give_up_s
        self.gave_up = False
        self.dropped = self.reconnects = self.frames = self.size_changes = 0
        self.size: tuple[int, ...] | None = None
        self._cap = _capture(target, self.api, self.params)
        if self._cap is None:
            raise SourceError(f"{name}: cannot open (no such camera, unreachable address, or a format OpenCV "
                              "cannot read)")
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"capture {name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        due = time.perf_counter()
        try:
            while not self._stop.is_set():
                ok, img = self._cap.read() if self._cap is not None else (False, None)
                if not ok or img is None or img.size == 0:
                    if self._cap is not None:
                        self._cap.release()
                        self._cap = None
                    if not self.reconnect or not self._reopen():
                        break
                    continue
                if self.period:
                    if self._stop.wait(max(0.0, due - time.perf_counter())):
                        break
                    due = max(due, time.perf_counter()) + self.period  # late frames never burst
                self._publish(img)
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, img: np.ndarray) -> None:
        ts, t0 = time.time(), time.perf_counter()
        if self.size is None:
            self.size = img.shape
        elif img.shape != self.size:
            self.size_changes += 1
            log.warning("%s: frame size changed from %s to %s; frames are resized to the model input",
                        self.name, "x".join(map(str, self.size)), "x".join(map(str, img.shape)))
            self.size = img.shape
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = Frame(self.name, ts, t0, frame=self.frames, image=img)
            self.frames += 1
            self._cond.notify_all()

    def _reopen(self) -> bool:
        delay = self.backoff
        lost = time.perf_counter()
        limit = self.give_up_s
        log.warning("%s: stream lost; reconnecting%s", self.name,
                    "" if limit is None else f" (giving up after {limit:g} s)")
        while True:
            wait = delay if limit is None else min(delay, max(0.0, lost + limit - time.perf_counter()))
            if self._stop.wait(wait):
                return False
            cap = _capture(self.target, self.api, self.params)
            if cap is not None:
                self._cap = cap
                self.reconnects += 1
                log.warning("%s: reconnected (attempt after %.2f s back-off)", self.name, delay)
                return True
            if limit is not None and time.perf_counter() - lost >= limit:
                self.gave_up = True
                log.warning("%s: gave up: no frame for %.1f s", self.name, time.perf_counter() - lost)
                return False
            delay = min(delay * 2, self.max_backoff)

    def give_up_after(self, seconds: float) -> None:
        """End the source once it has been down ``seconds`` (a run's ``give_up_s`` for a source the caller
        opened); no effect on one that does not reconnect. Read by the capture thread once the stream is lost."""
        if self.reconnect:
            self.give_up_s = seconds

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken; None on timeout. StopIteration once ended."""
        with self._cond:
            if self._latest is None and not self._ended:
                self._cond.wait(timeout)
            f, self._latest = self._latest, None
            if f is None and self._ended:
                raise StopIteration
            return f

    def __next__(self) -> Frame:
        while True:
            f = self.get(0.5)
            if f is not None:
                return f

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=max(2.0, self.params[3] / 1000 + 1 if self.params else 2.0))


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The usual Jetson CSI camera pipeline, ending in an appsink that drops old frames."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width=(int){width}, "
            f"height=(int){height}, framerate=(fraction){fps}/1 ! nvvidconv flip-method={flip} ! "
            "video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def has_gstreamer() -> bool:
    info = _cv2().getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(m and m.group(1).upper() != "NO")


def folder_files(folder: Path, glob: str | None = None) -> tuple[list[Path], list[Skipped]]:
    """The files under ``folder`` that a run reads (see :func:`folder_entries`), and the
    entries it reports instead."""
    entries = folder_entries(folder, glob)
    return ([e for e in entries if isinstance(e, Path)], [e for e in entries if isinstance(e, Skipped)])


def folder_entries(folder: Path, glob: str | None = None) -> list[Path | Skipped]:
    """Every entry under ``folder``, recursive and sorted: the files to read (those matching
    ``glob``; without one, regular files named like images) and, in their places, the others
    with why they are not used. Hidden names are not entered, links to folders not followed;
    with a glob, files it does not match are left out without a report (the user chose)."""
    out: list[Path | Skipped] = []
    _walk(folder, PurePath(), _glob_pattern(glob), out)
    return out


def _glob_pattern(glob: str | None) -> str | None:
    while glob and glob.startswith("**/"):  # rglob's recursion is implied; PurePath.match has no **
        glob = glob[3:]
    return glob or None


def _walk(folder: Path, rel: PurePath, glob: str | None, out: list[Path | Skipped]) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        out.append(Skipped(str(folder), UNREADABLE, f"cannot list folder ({exc.strerror or exc})"))
        return
    for e in entries:
        path = folder / e.name
        if e.name.startswith("."):
            out.append(Skipped(str(path), HIDDEN, "hidden (the name starts with '.'); not read"))
            continue
        try:
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            _walk(path, rel / e.name, glob, out)
        elif not glob or PurePath(rel / e.name).match(glob):
            out.append(_entry(path, e, glob is not None))


def _entry(path: Path, e: os.DirEntry, globbed: bool) -> Path | Skipped:
    """A listed file, or why it is not read."""
    try:
        if e.is_symlink():
            st = stat_path(path)
            if stat.S_ISDIR(st.st_mode):
                return Skipped(str(path), NOT_REGULAR, f"a link to a folder, {os.path.realpath(path)} (links to "
                                                       "folders are not followed)")
            require_regular(path, st)
        elif not e.is_file(follow_symlinks=False):  # the listing's file type: no stat for a plain file
            require_regular(path, e.stat(follow_symlinks=False))
    except ImageError as exc:
        if exc.kind is not None:
            return Skipped(str(path), exc.kind, exc.reason)
        return path  # gone since the listing, or unreadable: its read reports it
    except OSError:
        return path
    if globbed or is_image_file(e.name):
        return path
    return Skipped(str(path), NOT_IMAGE, "not named like an image (use --glob to include it)")


def read_list_file(path: Path) -> list[Path | Skipped]:
    """The paths a list file names, one a line (relative to the list; ``#`` comments), in order;
    an entry that is not a regular file comes back as a :class:`Skipped`."""
    try:
        text = read_file(path, MAX_FILE_BYTES).decode("utf-8")
    except ImageError as exc:
        raise SourceError(f"{path}: cannot read list file ({exc.reason})") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: cannot read list file ({exc})") from None
    out: list[Path | Skipped] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(_named(p if p.is_absolute() else path.parent / p))
    return out


def _named(p: Path) -> Path | Skipped:
    """A path named in a list: itself, or a Skipped when it is not a regular file (a missing
    file is left to its read, which reports it as failed)."""
    try:
        require_regular(p, stat_path(p))
    except ImageError as exc:
        if exc.kind is not None:
            return Skipped(str(p), exc.kind, exc.reason)
    return p


class Target:
    """A source spec as the table reads it: its text, the path it names and, looked up once when a row
    asks, what is at that path. ``live``: a video file is to be replayed as a camera."""

    def __init__(self, spec: Any, live: bool = False) -> None:
        self.spec, self.live = spec, live
        self.text = str(spec)
        self._status: os.stat_result | None = None
        self._regular = False

    @property
    def scheme(self) -> str:
        return urlsplit(self.text).scheme.lower()

    @property
    def path_text(self) -> str:
        """The path the spec names (a ``file://`` URL's path, else the spec itself)."""
        return urlsplit(self.text).path if self.scheme == "file" else self.text

    @property
    def path(self) -> Path:
        return Path(self.path_text)

    @property
    def camera_index(self) -> int | None:
        """The camera an int, ``camera:N`` or a string of digits names; digits name a camera only when no
        file or folder has that name."""
        if isinstance(self.spec, int):
            return self.spec
        if isinstance(self.spec, str) and self.spec.isdigit() and not os.path.exists(self.spec):
            return int(self.spec)
        if self.text.startswith("camera:") and self.text[7:].isdigit():
            return int(self.text[7:])
        return None

    def status(self) -> os.stat_result:
        """What is at the path (links followed); a SourceError when nothing usable is."""
        if self._status is None:
            try:
                self._status = stat_path(self.path)
            except ImageError as exc:
                if exc.kind is not None:
                    raise SourceError(f"{self.path}: {exc.reason}") from None
                raise SourceError(f"{self.path}: no such file or folder (a source is an image, folder, list file, "
                                  "video, camera index, URL, csi://N or GStreamer pipeline)") from None
        return self._status

    def is_folder(self) -> bool:
        return stat.S_ISDIR(self.status().st_mode)

    def is_regular_file(self) -> bool:
        """True for a regular file; anything else at the path is a SourceError (only regular files are read)."""
        if not self._regular:
            try:
                require_regular(self.path, self.status())
            except ImageError as exc:
                raise SourceError(f"{self.path}: {exc.reason}") from None
            self._regular = True
        return True

    def has_suffix(self, suffixes: Sequence[str]) -> bool:
        """A regular file named with one of ``suffixes``."""
        return self.is_regular_file() and self.path.suffix.lower() in suffixes


TIMEOUTS = ("open_timeout_ms", "read_timeout_ms")
OPTIONS = ("glob", "live", *TIMEOUTS, "give_up_s")  # what open_source takes; each kind is given its own part
RECONNECTING = (*TIMEOUTS, "give_up_s")


@dataclass(frozen=True)
class SourceKind:
    """One row of the source table: how a spec is recognised, what builds its source, and which of
    :data:`OPTIONS` that constructor takes (the others do not apply to it and are not passed)."""

    name: str
    recognise: Callable[[Target], bool]
    build: Callable[..., Source]  # build(target, **the options it takes)
    options: tuple[str, ...] = ()


def _is_gstreamer(t: Target) -> bool:
    return "!" in t.text and ("appsink" in t.text or "src" in t.text.split("!")[0])


def _files(t: Target) -> FileSource:
    return FileSource([_named(Path(p)) for p in t.spec], name="files")


def _camera(t: Target, give_up_s: float | None = None) -> LiveSource:
    index = t.camera_index
    try:
        return LiveSource(index, f"camera:{index}", _cv2().CAP_ANY, timeouts=False, give_up_s=give_up_s)
    except SourceError:
        raise SourceError(f"camera {index}: cannot open (no such camera, or it is in use)") from None


def _v4l2_url(t: Target, give_up_s: float | None = None) -> LiveSource:
    return LiveSource(t.text[len("v4l2://"):], t.text, _cv2().CAP_V4L2, timeouts=False, give_up_s=give_up_s)


def _video_device(t: Target, give_up_s: float | None = None) -> LiveSource:
    return LiveSource(t.path_text, t.path_text, _cv2().CAP_V4L2, timeouts=False, give_up_s=give_up_s)


def _csi(t: Target, **options: Any) -> LiveSource:
    if not t.text[6:].isdigit():
        raise SourceError(f"{t.text}: expected csi://N with N the sensor id")
    return gstreamer(csi_pipeline(int(t.text[6:])), name=t.text, **options)


def _gstreamer(t: Target, **options: Any) -> LiveSource:
    return gstreamer(t.text, **options)


def _stream(t: Target, **options: Any) -> LiveSource:
    return LiveSource(t.text, _redact(t.text), _cv2().CAP_FFMPEG, **options)


def _folder(t: Target, glob: str | None = None) -> FileSource:
    return FileSource(folder_entries(t.path, glob), name=str(t.path))


def _live_video(t: Target, **options: Any) -> LiveSource:
    """A video file replayed like a camera: frames arrive at the file's own rate, so drops are repeatable."""
    p = str(t.path)
    return LiveSource(p, p, _cv2().CAP_ANY, reconnect=False, fps=video_fps(p), **options)


def _video(t: Target) -> VideoFileSource:
    return VideoFileSource(t.path)


def _list_file(t: Target) -> FileSource:
    return FileSource(read_list_file(t.path), name=str(t.path))


def _image(t: Target) -> FileSource:
    return FileSource([t.path], name=str(t.path))


SOURCE_KINDS: tuple[SourceKind, ...] = (  # in the order a spec is tried against them
    SourceKind("image files", lambda t: isinstance(t.spec, (list, tuple)), _files),
    SourceKind("camera", lambda t: t.camera_index is not None, _camera, ("give_up_s",)),
    SourceKind("v4l2 url", lambda t: t.text.startswith("v4l2://"), _v4l2_url, ("give_up_s",)),
    SourceKind("csi camera", lambda t: t.text.startswith("csi://"), _csi, RECONNECTING),
    SourceKind("gstreamer", _is_gstreamer, _gstreamer, RECONNECTING),
    SourceKind("stream", lambda t: t.scheme in STREAM_SCHEMES, _stream, RECONNECTING),
    SourceKind("video device", lambda t: t.path_text.startswith("/dev/video"), _video_device, ("give_up_s",)),
    SourceKind("folder", Target.is_folder, _folder, ("glob",)),
    SourceKind("live video", lambda t: t.has_suffix(VIDEO_SUFFIXES) and t.live, _live_video, TIMEOUTS),
    SourceKind("video", lambda t: t.has_suffix(VIDEO_SUFFIXES), _video),
    SourceKind("list file", lambda t: t.has_suffix(LIST_SUFFIXES), _list_file),
    SourceKind("image", Target.is_regular_file, _image),
)


def source_kind(target: Target) -> SourceKind:
    """The first row of :data:`SOURCE_KINDS` that recognises ``target`` (a SourceError when its path
    cannot be read as a source)."""
    return next(k for k in SOURCE_KINDS if k.recognise(target))


def open_source(spec: Any, *, glob: str | None = None, live: bool = False,
                open_timeout_ms: int = OPEN_TIMEOUT_MS, read_timeout_ms: int = READ_TIMEOUT_MS,
                give_up_s: float | None = None) -> Source:
    """A Source from a path, URL, camera index, ``csi://N`` or GStreamer string (see :data:`SOURCE_KINDS`).

    Each option goes to the constructor of the kinds that take it and does not apply to the others:
    ``glob`` to a folder, the timeouts to streams, GStreamer and replayed videos, ``give_up_s`` to
    sources that reconnect (see :class:`LiveSource`). A Source given as it is comes back as it is.
    """
    if isinstance(spec, Source):
        if give_up_s is not None and isinstance(spec, LiveSource):
            spec.give_up_after(give_up_s)
        return spec
    given = {"glob": glob, "live": live, "open_timeout_ms": open_timeout_ms, "read_timeout_ms": read_timeout_ms,
             "give_up_s": give_up_s}
    target = Target(spec, live)
    kind = source_kind(target)
    return kind.build(target, **{name: given[name] for name in kind.options})


def video_fps(path: str | os.PathLike, default: float = 30.0) -> float:
    """A video file's frame rate (CAP_PROP_FPS), or ``default`` when the container does not say."""
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if 0.0 < fps <= 1000.0 else default


def gstreamer(pipeline: str, name: str | None = None, *, open_timeout_ms: int = OPEN_TIMEOUT_MS,
              read_timeout_ms: int = READ_TIMEOUT_MS, give_up_s: float | None = None) -> LiveSource:
    """A GStreamer pipeline as a live source. OpenCV documents CAP_PROP_OPEN_TIMEOUT_MSEC and
    CAP_PROP_READ_TIMEOUT_MSEC for its FFmpeg and GStreamer back-ends, so both are passed here
    (local V4L2 cameras take none). ``give_up_s``: see :class:`LiveSource`."""
    cv2 = _cv2()
    if not has_gstreamer():
        raise SourceError("this OpenCV build has no GStreamer support (opencv-python-headless from PyPI has none); "
                          "use an OpenCV built with GStreamer (on Jetson: the system python3-opencv)")
    return LiveSource(pipeline, name or "gstreamer", cv2.CAP_GSTREAMER, open_timeout_ms=open_timeout_ms,
                      read_timeout_ms=read_timeout_ms, give_up_s=give_up_s)
