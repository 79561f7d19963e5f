"""Sources: the spec table (which kind reads which spec, which options reach its constructor) and
sources as context managers. Real files, a real video and a local MJPEG stream on 127.0.0.1."""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from cnnedge.runtime.sources import (OPTIONS, SOURCE_KINDS, FileSource, LiveSource, Source, Target,
                                     VideoFileSource, open_source, source_kind)

from test_infer_cli import MjpegServer  # noqa: E402
from test_runtime_models import split, write_images  # noqa: E402


def write_video(path: Path, n: int, fps: float = 30) -> Path:
    _, _, digits, _ = split()
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert w.isOpened()
    for i in range(n):
        w.write(cv2.resize(digits[i], (64, 48)))
    w.release()
    return path


def kind_of(spec, live: bool = False) -> str:
    return source_kind(Target(spec, live)).name


def test_each_spec_is_read_by_its_row_of_the_table(tmp_path):
    paths, _ = write_images(tmp_path / "d", 3)
    lst = tmp_path / "list.txt"
    lst.write_text(str(paths[0]) + "\n")
    vid = write_video(tmp_path / "clip.avi", 3)
    assert [kind_of(s) for s in ([str(p) for p in paths], 3, "camera:3", "v4l2:///dev/video9", "csi://0",
                                 "videotestsrc ! appsink", "rtsp://cam.local/live", "http://h/x.mjpg",
                                 "/dev/video9", "file:///dev/video9", tmp_path / "d", lst, vid, paths[0])] == [
        "image files", "camera", "camera", "v4l2 url", "csi camera", "gstreamer", "stream", "stream",
        "video device", "video device", "folder", "list file", "video", "image"]
    assert kind_of(vid, live=True) == "live video" and kind_of(f"file://{vid}") == "video"
    names = [k.name for k in SOURCE_KINDS]
    assert len(names) == len(set(names))
    assert all(set(k.options) <= set(OPTIONS) for k in SOURCE_KINDS)


def test_options_reach_the_constructor_of_the_kinds_that_take_them(tmp_path):
    vid = write_video(tmp_path / "clip.avi", 30)
    with open_source(vid, live=True, open_timeout_ms=1234, read_timeout_ms=2345, give_up_s=3.0) as src:
        assert isinstance(src, LiveSource)
        assert src.params == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 1234, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2345]
        assert src.give_up_s is None and not src.reconnect  # a replayed file ends: it has nothing to give up
    srv = MjpegServer()
    srv.start()
    try:
        url = f"http://127.0.0.1:{srv.port}/live.mjpg"
        with open_source(url, give_up_s=2.5, open_timeout_ms=3000, read_timeout_ms=1500) as src:
            assert src.give_up_s == 2.5 and src.reconnect
            assert src.params == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 3000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 1500]
            assert src.get(5.0) is not None
    finally:
        srv.stop()


def test_options_a_kind_does_not_take_are_not_applied(tmp_path):
    paths, _ = write_images(tmp_path / "d", 4)
    src = open_source(tmp_path / "d", live=True, open_timeout_ms=5, give_up_s=1.0)
    assert isinstance(src, FileSource) and src.paths == [str(p) for p in sorted(paths)]
    with pytest.raises(TypeError, match="max_frames"):
        open_source(tmp_path / "d", max_frames=3)  # not an option of any source, as before


def test_a_source_given_as_it_is_takes_the_runs_give_up_s(tmp_path):
    vid = write_video(tmp_path / "clip.avi", 30)
    with LiveSource(str(vid), "loop", cv2.CAP_ANY, timeouts=False) as reconnecting:
        assert open_source(reconnecting, give_up_s=2.0) is reconnecting and reconnecting.give_up_s == 2.0
    with LiveSource(str(vid), "once", cv2.CAP_ANY, timeouts=False, reconnect=False) as ending:
        assert open_source(ending, give_up_s=2.0) is ending and ending.give_up_s is None


def test_every_source_is_a_context_manager_that_closes_once_or_twice(tmp_path):
    write_images(tmp_path / "d", 2)
    vid = write_video(tmp_path / "clip.avi", 5)
    with open_source(tmp_path / "d") as files:
        assert len(list(files)) == 2
    with open_source(vid) as video:
        assert isinstance(video, VideoFileSource) and next(video).frame == 0
    assert video.cap is None and list(video) == []
    with open_source(vid, live=True) as live:
        assert live.get(5.0) is not None
    assert len(list(live)) <= 1  # closed: at most the one frame it held, then the end
    for src in (files, video, live):
        assert isinstance(src, Source)
        src.close()  # a second close is harmless
        with src:
            pass
