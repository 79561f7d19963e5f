"""The one table of source kinds (:data:`SOURCE_KINDS`): how a spec is recognised, which class reads it
and which options its constructor takes, and :func:`open_source`, the factory that reads it."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from ...imaging.errors import ImageError
from ...imaging.files import require_regular, stat_path
from ..limits import MAX_CAMERA_INDEX
from .capture import OPEN_TIMEOUT_MS, READ_TIMEOUT_MS, cv2_module, video_fps
from .files import FileSource, VideoFileSource
from .frames import Source, SourceError, SourceUnavailable
from .listing import folder_entries, list_entry, read_list_file
from .gst import csi_pipeline, gstreamer
from .live import LiveSource

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mjpeg", ".mjpg", ".h264", ".h265", ".3gp")
LIST_SUFFIXES = (".txt", ".lst", ".list")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")


def _redact(url: str) -> str:
    """A URL without its password, for names and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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
    return FileSource([list_entry(Path(p)) for p in t.spec], name="files")


def _camera(t: Target, give_up_s: float | None = None) -> LiveSource:
    index = t.camera_index
    if not 0 <= index <= MAX_CAMERA_INDEX:  # OpenCV crashes on -1 and refuses with a traceback past 2**31
        raise SourceError(f"camera {index}: not a camera index; they are 0..{MAX_CAMERA_INDEX}")
    try:
        return LiveSource(index, f"camera:{index}", cv2_module().CAP_ANY, timeouts=False, give_up_s=give_up_s)
    except SourceUnavailable:
        raise SourceUnavailable(f"camera {index}: cannot open (no such camera, or it is in use)") from None


def _v4l2_url(t: Target, give_up_s: float | None = None) -> LiveSource:
    return LiveSource(t.text[len("v4l2://"):], t.text, cv2_module().CAP_V4L2, timeouts=False, give_up_s=give_up_s)


def _video_device(t: Target, give_up_s: float | None = None) -> LiveSource:
    return LiveSource(t.path_text, t.path_text, cv2_module().CAP_V4L2, timeouts=False, give_up_s=give_up_s)


def _csi(t: Target, **options: Any) -> LiveSource:
    if not t.text[6:].isdigit():
        raise SourceError(f"{t.text}: expected csi://N with N the sensor id")
    return gstreamer(csi_pipeline(int(t.text[6:])), name=t.text, **options)


def _gstreamer(t: Target, **options: Any) -> LiveSource:
    return gstreamer(t.text, **options)  # live: the caller says so (--live) where the pipeline does not tell


def _stream(t: Target, **options: Any) -> LiveSource:
    return LiveSource(t.text, _redact(t.text), cv2_module().CAP_FFMPEG, **options)


def _folder(t: Target, glob: str | None = None) -> FileSource:
    return FileSource(folder_entries(t.path, glob), name=str(t.path))


def _live_video(t: Target, **options: Any) -> LiveSource:
    """A video file replayed like a camera: frames arrive at the file's own rate, so drops are repeatable."""
    p = str(t.path)
    return LiveSource(p, p, cv2_module().CAP_ANY, reconnect=False, fps=video_fps(p), **options)


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
    SourceKind("gstreamer", _is_gstreamer, _gstreamer, ("live", *RECONNECTING)),
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
    ``glob`` to a folder, ``live`` to video files and GStreamer pipelines (replayed like a camera; a pipeline
    reconnects instead of ending), the timeouts to streams, GStreamer and replayed videos, ``give_up_s`` to
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
