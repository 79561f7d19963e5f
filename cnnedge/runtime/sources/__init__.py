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
``... ! appsink``          a GStreamer pipeline string: live when it captures from a     ``live``, timeouts,
                           device or the network (:data:`~.gst.LIVE_ELEMENTS`,           ``give_up_s``
                           ``is-live=true``, a network ``uri=``) or ``live`` is given;
                           finite otherwise (every frame once, ends at end of stream)
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

Live sources (cameras, streams, live GStreamer pipelines, ``live=True`` videos) read in their
own thread and keep only the newest frame: a slow model never builds a backlog,
and each overwritten frame is counted in ``dropped``. Reads never block longer
than the open/read timeouts; a dropped stream reconnects with back-off (the
frame size is re-checked) and no frame is ever invented or delivered twice. It
keeps trying for as long as the run lasts, unless ``give_up_s`` says when a
stream that gives no frame (one sending garbage too) ends instead (a supervisor then restarts the process).
Opens run in a thread of their own, so Ctrl-C and SIGTERM never wait for one to time out.
The timeouts go to OpenCV where its back-end takes them (FFmpeg; GStreamer from OpenCV 4.7, not Debian 12's 4.6);
cnnedge bounds every open by the open timeout itself, and where OpenCV takes no read timeout, a read blocked past
it counts as a lost stream (a finite pipeline then ends, given up on).

Where each part lives: :mod:`.frames` (Frame, Skipped, Source, SourceError), :mod:`.capture` (OpenCV
captures and their timeouts), :mod:`.files` (image files, video files), :mod:`.live` (captures read in a
thread of their own), :mod:`.gst` (GStreamer pipelines, live or finite, and CSI), :mod:`.listing` (folders and
list files) and :mod:`.table` (the table and the factory).
"""
from __future__ import annotations

from .capture import OPEN_TIMEOUT_MS, READ_TIMEOUT_MS, video_fps
from .files import FileSource, VideoFileSource
from .frames import (HIDDEN, NOT_IMAGE, SKIP_KINDS, UNREADABLE, Frame, Skipped, Source, SourceError,
                     SourceUnavailable)
from .listing import folder_entries, folder_files, read_list_file
from .gst import csi_pipeline, gstreamer, has_gstreamer, is_live_pipeline
from .live import LiveSource, log
from .table import (LIST_SUFFIXES, OPTIONS, RECONNECTING, SOURCE_KINDS, STREAM_SCHEMES, TIMEOUTS, VIDEO_SUFFIXES,
                    SourceKind, Target, open_source, source_kind)

__all__ = ["log", "VIDEO_SUFFIXES", "LIST_SUFFIXES", "STREAM_SCHEMES", "OPEN_TIMEOUT_MS", "READ_TIMEOUT_MS", "HIDDEN",
           "NOT_IMAGE", "UNREADABLE", "SKIP_KINDS", "SourceError", "SourceUnavailable", "Skipped", "Frame", "Source",
           "FileSource", "VideoFileSource", "LiveSource", "csi_pipeline", "has_gstreamer", "folder_files", "folder_entries",
           "read_list_file", "Target", "TIMEOUTS", "OPTIONS", "RECONNECTING", "SourceKind", "SOURCE_KINDS",
           "source_kind", "open_source", "video_fps", "gstreamer", "is_live_pipeline"]
