"""`cnn-infer` end to end: folders with damage, sinks parsed back, videos, live streams, errors."""
from __future__ import annotations

import csv
import io
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from cnnedge.cli._run import run_cli
from cnnedge.cli.infer import main
from cnnedge.runtime.classifier import Classifier
from cnnedge.runtime.pipeline import PipelineStats
from cnnedge.runtime.sources import LiveSource, open_source

from test_runtime_models import models, split, write_images  # noqa: E402

pytest.importorskip("onnxruntime")


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_cli("cnn-infer", lambda a: main(a, out, err), list(argv), stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    paths, labels = write_images(d, 40)
    _, _, xte, _ = split()
    ok, jpg = cv2.imencode(".jpg", cv2.resize(xte[0], (256, 256)))
    (d / "3").mkdir(exist_ok=True)
    (d / "3" / "truncated.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("a text file with an image name")
    (d / "README.txt").write_text("not an image and not named like one")
    return d, paths, labels


def test_folder_with_damaged_files_sinks_and_eval(folder, tmp_path):
    d, paths, labels = folder
    jl, cs = tmp_path / "out.jsonl", tmp_path / "out.csv"
    code, out, err = cli(str(models()["onnx"]), "--source", str(d), "--json", str(jl), "--csv", str(cs),
                         "--topk", "3", "--eval", "--batch", "8", "--save-dir", str(tmp_path / "ann"))
    assert code == 0, err
    rows = [json.loads(line) for line in jl.read_text().splitlines()]
    good = [r for r in rows if "error" not in r]
    bad = {Path(r["path"]).name: r["error"] for r in rows if "error" in r}
    assert len(good) == 40 and set(bad) == {"truncated.jpg", "corrupt.png", "empty.jpg", "notes.jpg", "README.txt"}
    assert "not named like an image" in bad["README.txt"]
    assert "truncated" in bad["truncated.jpg"] and "empty" in bad["empty.jpg"]
    for r in good:
        assert {"source", "path", "timestamp", "index", "label", "score", "topk", "latency_ms"} <= set(r)
        assert len(r["topk"]) == 3 and r["topk"][0] == [r["label"], r["score"]]
    # each file exactly once, in sorted order
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    assert sorted(r["path"] for r in good) == sorted(str(p) for p in paths)
    # the same answers as the Python API
    with Classifier(models()["onnx"]) as clf:
        direct = {str(p): clf.predict(p).label for p in paths}
    assert all(direct[r["path"]] == r["label"] for r in good)
    with open(cs, newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["path"] for r in csv_rows] == [r["path"] for r in rows]
    assert all(c["label"] == j.get("label", "") for c, j in zip(csv_rows, rows))
    # stdout: one line per good file; stderr: each damaged file with its reason, and the summary
    assert len(out.splitlines()) >= 40 and all(str(p) in out for p in paths)
    for name in bad:
        assert f"{name}: " in err
    assert "40 done; 4 failed; 1 skipped (1 not an image)" in err and "p50" in err and "p99" in err and "images/s" in err
    acc = np.mean([direct[str(p)] == str(t) for p, t in zip(paths, labels)])
    assert f"accuracy {acc:.4f}" in out and "confusion" in out and "per-class recall" in out
    saved = sorted((tmp_path / "ann").glob("*.jpg"))
    assert len(saved) == 40 and cv2.imread(str(saved[0])) is not None


def test_nothing_processed_exits_non_zero(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    code, _, err = cli(str(models()["onnx"]), "--source", str(tmp_path))
    assert code == 1 and "nothing could be processed" in err and "Traceback" not in err


def test_one_line_errors(tmp_path):
    onnx = str(models()["onnx"])
    notmodel = tmp_path / "model.onnx"
    notmodel.write_text("hello")
    cases = [
        ([str(notmodel), "--source", str(tmp_path)], "not a"),
        ([onnx, "--camera", "57"], "camera 57: cannot open"),
        ([onnx, "--source", f"http://127.0.0.1:{_free_port()}/stream.mjpg", "--open-timeout-ms", "2000"],
         "cannot open"),
        ([onnx, "--source", str(tmp_path / "absent")], "no such file or folder"),
        ([onnx], "no source"),
        ([onnx, "--source", str(tmp_path), "--show"], "GUI"),
        ([onnx, "--gst", "videotestsrc ! appsink"], "GStreamer"),
        ([onnx, "--source", str(tmp_path), "--scale", "1/255"], "carries a model card"),
        ([onnx, "--source", str(tmp_path), "--json", str(notmodel / "out.jsonl")], "is not a folder"),
        ([onnx, "--source", str(tmp_path), "--save-dir", str(notmodel)], "exists and is not a folder"),
        ([onnx, "--source", str(tmp_path), "--csv", str(notmodel)], "exists; pass --force"),
    ]
    for argv, msg in cases:
        code, _, err = cli(*argv)
        lines = [ln for ln in err.splitlines() if ln.startswith("cnn-infer: error:")]
        assert code != 0 and len(lines) == 1 and msg in lines[0], (argv, err)
        assert "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_video(path: Path, n: int, size=(64, 48), fps: float = 30) -> None:
    _, _, xte, _ = split()
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    for i in range(n):
        w.write(cv2.resize(xte[i], size))
    w.release()


def test_video_file_every_frame_and_as_live_source(tmp_path):
    vid = tmp_path / "clip.avi"
    _write_video(vid, 60, fps=120)  # as a live source it replays at 120 fps: half a second
    jl = tmp_path / "v.jsonl"
    code, _, err = cli(str(models()["onnx"]), "--source", str(vid), "--json", str(jl), "--quiet",
                       "--save-video", str(tmp_path / "ann.avi"))
    assert code == 0, err
    frames = [json.loads(line)["frame"] for line in jl.read_text().splitlines()]
    assert frames == list(range(60))
    cap = cv2.VideoCapture(str(tmp_path / "ann.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    # as a live source: newest frame only, never a frame twice, never one that is not in the file
    with Classifier(models()["onnx"]) as clf:
        stats = PipelineStats()
        res = list(clf.stream(str(vid), batch=1, live=True, stats=stats))
        src = stats.sources[0]
    got = [r.frame for r in res]
    assert got == sorted(set(got)) and all(0 <= f < 60 for f in got)
    assert src.live and len(got) + src.dropped == 60 == src.frames


def test_live_source_paced_at_a_frame_rate_delivers_every_frame_once(tmp_path):
    vid = tmp_path / "paced.avi"
    _write_video(vid, 12)
    src = LiveSource(str(vid), "paced", cv2.CAP_ANY, timeouts=False, reconnect=False, fps=20)
    got, took = _drain(src)
    # 12 frames at 20 fps cannot arrive in less than 11 periods; a reader this fast misses none
    assert took >= 11 / 20 - 0.02
    assert got == list(range(12)) and src.dropped == 0


def _drain(src: LiveSource) -> tuple[list[int], float]:
    """Read a live source to its end as fast as possible: the frame numbers and the seconds taken."""
    got, t0 = [], time.perf_counter()
    try:
        while True:
            try:
                f = src.get(1.0)
            except StopIteration:
                break
            if f is not None:
                got.append(f.frame)
    finally:
        src.close()
    return got, time.perf_counter() - t0


def test_live_source_never_builds_a_backlog_behind_a_slow_model(tmp_path):
    vid = tmp_path / "fast.avi"
    _write_video(vid, 250)
    delay = 0.1
    with Classifier(models()["onnx"]) as clf:
        run = clf.backend._infer_impl

        def slow(batch):  # the real backend, made as slow as a big model on a small board
            time.sleep(delay)
            return run(batch)

        clf.backend._infer_impl = slow
        src = LiveSource(str(vid), "cam", cv2.CAP_ANY, timeouts=False, reconnect=False, fps=100)
        res = list(clf.stream(src, batch=8, max_wait_ms=10, duration=2.0))
    lat = sorted(r.latency_ms for r in res)
    frames = [r.frame for r in res]
    assert frames == sorted(set(frames)) and src.dropped > 0
    # at most one frame per live source waits while the model runs: latency stays near one
    # inference call, it does not grow with a queue of stale frames (that gave 3-6 calls)
    assert lat[len(lat) // 2] < 2.0 * delay * 1000, lat
    assert lat[-1] < 3.0 * delay * 1000, lat


def test_two_sources_share_batches(tmp_path):
    a, b = tmp_path / "a.avi", tmp_path / "b.avi"
    _write_video(a, 40)
    _write_video(b, 40, size=(80, 60))
    with Classifier(models()["onnx"]) as clf:
        stats = PipelineStats()
        res = list(clf.stream([str(a), str(b)], batch=8, max_wait_ms=50, stats=stats))
    by_src = {s: [r.frame for r in res if r.source == s] for s in (str(a), str(b))}
    assert all(v == list(range(40)) for v in by_src.values())
    mixed = {r.batch for r in res if r.source == str(a)} & {r.batch for r in res if r.source == str(b)}
    assert mixed, "no inference call carried frames from both sources"
    assert stats.batches < 80


# --- a live MJPEG-over-HTTP stream, stopped and restarted while cnn-infer reads it ------------------------
BITS = 12


def _frame(n: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    img = np.full((size[1], size[0], 3), (40, 80, 120), np.uint8)
    for b in range(BITS):
        r, c = divmod(b, 4)
        img[10 + r * 30:34 + r * 30, 10 + c * 36:40 + c * 36] = 255 if (n >> b) & 1 else 0
    return img


def _number(img: np.ndarray) -> int:
    return sum(1 << b for b in range(BITS) if img[22 + divmod(b, 4)[0] * 30, 25 + divmod(b, 4)[1] * 36].mean() > 128)


class MjpegServer:
    """multipart/x-mixed-replace JPEG frames numbered by a counter that survives restarts."""

    def __init__(self, fps: float = 40) -> None:
        self.fps, self.counter, self.sent, self.port, self.stopping = fps, 0, set(), 0, False
        self.size = (160, 120)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not server.stopping:
                        with server.lock:
                            n = server.counter
                            server.counter += 1
                        data = cv2.imencode(".jpg", _frame(n, server.size), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(data) + data + b"\r\n")
                        server.sent.add(n)
                        time.sleep(1 / server.fps)
                except OSError:
                    pass
        self.handler = Handler

    def start(self) -> None:
        self.stopping = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_live_stream_reconnects_without_duplicated_or_invented_frames():
    models()  # built before the stream's clock starts
    srv = MjpegServer()
    srv.start()
    url = f"http://127.0.0.1:{srv.port}/live.mjpg"

    restarted_at: list[int] = []

    def restart():
        time.sleep(1.5)
        srv.stop()
        time.sleep(1.0)
        restarted_at.append(srv.counter)
        srv.size = (200, 150)  # the camera came back with another resolution
        srv.start()
    threading.Thread(target=restart, daemon=True).start()
    try:
        with Classifier(models()["onnx"]) as clf:
            stats = PipelineStats()
            results = list(clf.stream(url, batch=2, duration=4.5, keep_images=True, read_timeout_ms=1000,
                                  open_timeout_ms=2000, stats=stats))
        src = stats.sources[0]
        numbers = [_number(r.image) for r in results]
        assert len(numbers) > 20
        assert all(b > a for a, b in zip(numbers, numbers[1:])), "a frame was duplicated or reordered"
        assert set(numbers) <= srv.sent, "a frame was invented"
        assert src.reconnects >= 1 and src.size_changes >= 1 and src.size == (150, 200, 3)
        assert {r.image.shape for r in results} == {(120, 160, 3), (150, 200, 3)}
        assert [r.frame for r in results] == sorted(set(r.frame for r in results))
        assert restarted_at and any(n >= restarted_at[0] for n in numbers)  # frames after the restart
        assert any(n < restarted_at[0] for n in numbers)  # and before it
        # and through the CLI: a bounded run on the same stream
        code, out, err = cli(str(models()["onnx"]), "--source", url, "--max-frames", "10", "--batch", "2")
        assert code == 0 and len(out.splitlines()) == 10 and "reconnects" in err, err
    finally:
        srv.stop()


@pytest.mark.slow
def test_stream_that_stays_down_is_given_up_with_exit_1(capsys):
    """--give-up-after: a stream that stops for good ends the run (exit 1, named in the
    summary) instead of reconnecting forever; the frames before it are all reported."""
    models()
    srv = MjpegServer()
    srv.start()
    url = f"http://127.0.0.1:{srv.port}/gone.mjpg"

    def stop_for_good():
        time.sleep(1.5)
        srv.stop()
    threading.Thread(target=stop_for_good, daemon=True).start()
    t0 = time.perf_counter()
    code, out, err = cli(str(models()["onnx"]), "--source", url, "--give-up-after", "1.5", "--duration", "30",
                         "--read-timeout-ms", "1000", "--open-timeout-ms", "1000", "--batch", "2")
    took = time.perf_counter() - t0
    assert code == 1, err
    assert "gave up on" in err and "after 1.5 s without a frame" in err and "Traceback" not in err, err
    assert len(out.splitlines()) > 10  # the frames it did classify
    assert took < 15, f"the run took {took:.1f} s; it should end soon after the 1.5 s limit"
    with pytest.raises(SystemExit) as stop:  # argparse's own usage error
        main([str(models()["onnx"]), "--source", url, "--give-up-after", "0"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--give-up-after" in err and "> 0" in err, err  # the bound, as --help states it


def test_live_video_file_replays_at_its_own_frame_rate(tmp_path):
    vid = tmp_path / "ten.avi"
    _write_video(vid, 6, fps=10)
    src = open_source(str(vid), live=True)
    assert isinstance(src, LiveSource) and src.period == pytest.approx(0.1)
    got, took = _drain(src)
    # paced like a camera: 6 frames at 10 fps take about half a second and a reader this fast misses none
    assert got == list(range(6)) and src.dropped == 0 and took >= 0.45, (got, src.dropped, took)


def test_existing_path_named_like_a_camera_index_wins(tmp_path, monkeypatch):
    """The demo's class folders are digits: --source 7 is the folder 7 when it exists."""
    from cnnedge.runtime.sources import FileSource, SourceError

    write_images(tmp_path / "digits", 20)
    monkeypatch.chdir(tmp_path / "digits")
    name = sorted(p.name for p in Path(".").iterdir())[0]
    src = open_source(name)
    assert isinstance(src, FileSource) and src.total == len(list(Path(name).iterdir()))
    Path("42").write_bytes(next(Path(name).iterdir()).read_bytes())  # an image file named like a camera index
    assert isinstance(open_source("42"), FileSource)
    code, out, err = cli(str(models()["onnx"]), "--source", name, "--quiet")
    assert code == 0 and "camera" not in err, err
    # integers, camera:N and digits with no such path stay cameras
    for spec in (57, "camera:57", "57"):
        with pytest.raises(SourceError, match="camera 57"):
            open_source(spec)


def test_gstreamer_pipeline_gets_open_and_read_timeouts():
    """OpenCV from 4.7 is handed both timeouts; before, its GStreamer back-end refuses them
    (tests/runtime/sources/test_gstreamer.py runs Debian's 4.6, where cnnedge applies them)."""
    from cnnedge.runtime.sources import has_gstreamer
    from cnnedge.runtime.sources.capture import opencv_version

    if not has_gstreamer():
        pytest.skip("this OpenCV build has no GStreamer (tests/runtime/sources/test_gstreamer.py runs Debian's)")
    src = open_source("videotestsrc num-buffers=3 ! videoconvert ! appsink", open_timeout_ms=1234,
                      read_timeout_ms=2345)
    try:
        if opencv_version() >= (4, 7, 0):
            assert src.params == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 1234, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2345]
            assert src.read_timeout_by == "opencv"
        else:
            assert src.params == [] and src.read_timeout_by == "cnnedge"
    finally:
        src.close()


def test_save_video_format_checked_before_any_frame(tmp_path):
    write_images(tmp_path / "d", 3)
    onnx = str(models()["onnx"])
    for name, msg in (("out.xyz", "cannot write '.xyz' videos"), ("out.jpg", "image extension")):
        code, out, err = cli(onnx, "--source", str(tmp_path / "d"), "--save-video", str(tmp_path / name))
        lines = [ln for ln in err.splitlines() if ln.startswith("cnn-infer: error:")]
        assert code != 0 and out == "", (out, err)  # nothing classified, nothing printed
        assert len(lines) == 1 and "--save-video" in lines[0] and msg in lines[0], err
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no probe or partial file left behind
    code, out, err = cli(onnx, "--source", str(tmp_path / "d"), "--save-video", str(tmp_path / "ok.mkv"),
                         "--quiet")
    assert code == 0 and cv2.VideoCapture(str(tmp_path / "ok.mkv")).get(cv2.CAP_PROP_FRAME_COUNT) == 3, err


def test_open_source_table(tmp_path):
    from cnnedge.runtime.sources import FileSource, csi_pipeline

    paths, _ = write_images(tmp_path / "d", 5)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(str(p.relative_to(tmp_path)) for p in paths[::-1]) + "\n# a comment\n")
    src = open_source(lst)
    assert isinstance(src, FileSource) and src.paths == [str(p) for p in paths[::-1]]
    src = open_source(tmp_path / "d", glob="*.png")
    assert src.total == 5
    assert "sensor-id=1" in csi_pipeline(1) and csi_pipeline(1).endswith("appsink drop=true max-buffers=1 sync=false")


def test_eval_with_labels_csv_and_topk_lines(tmp_path):
    paths, labels = write_images(tmp_path / "flat", 12)
    flat = tmp_path / "imgs"
    flat.mkdir()
    rows = ["path,label"]
    for i, (p, t) in enumerate(zip(paths, labels)):
        q = flat / f"{i:03d}.png"
        q.write_bytes(p.read_bytes())
        rows.append(f"imgs/{q.name},{t}")
    truth = tmp_path / "truth.csv"
    truth.write_text("\n".join(rows) + "\n")
    code, out, err = cli(str(models()["onnx"]), "--source", str(flat), "--eval", "--labels-csv", str(truth),
                         "--topk", "2")
    assert code == 0, err
    with Classifier(models()["onnx"]) as clf:
        acc = np.mean([clf.predict(p).index == t for p, t in zip(paths, labels)])
    assert f"eval: 12 images, accuracy {acc:.4f}" in out
    lines = [ln for ln in out.splitlines() if ln.startswith(str(flat))]
    assert len(lines) == 12 and all(ln.count("[") == 1 for ln in lines)


def test_third_party_model_flags_and_missing_card_warning(folder):
    d, paths, _ = folder
    code, out, err = cli(str(models()["nchw"]), "--source", str(paths[0]), "--scale", "1/255", "--rgb")
    assert code == 0, err
    assert "warning:" in err and "no model card" in err
    with pytest.warns(Warning):
        with Classifier(models()["nchw"], scale=1 / 255) as clf:
            assert out.split("\t")[1] == clf.predict(paths[0]).label


def cli_on_stream(srv: "MjpegServer", *extra: str, **popen) -> "subprocess.Popen":
    """cnn-infer in a subprocess on the server's stream (--quiet), for signal tests."""
    import subprocess

    code = "import sys; from cnnedge.cli.infer import console; sys.argv[0] = 'cnn-infer'; console()"
    return subprocess.Popen([sys.executable, "-c", code, str(models()["onnx"]), "--source",
                             f"http://127.0.0.1:{srv.port}/s.mjpg", "--quiet", *extra],
                            **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen})


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path):
    """SIGINT ends the run with exit code 130 and the summary; an existing --json file is left as it was and
    what was done is kept beside it as out.partial.jsonl, named on the last line (issue 12)."""
    import signal

    models()
    old = tmp_path / "out.jsonl"
    old.write_text('{"old": "results"}\n')
    srv = MjpegServer(fps=30)
    srv.start()
    try:
        proc = cli_on_stream(srv, "--json", str(old), "--force")
        time.sleep(6.0)  # start-up (imports, model load) and a few seconds of frames
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        srv.stop()
    assert proc.returncode == 130, err
    assert "interrupted;" in err and " done; 0 failed" in err and "Traceback" not in err
    assert old.read_text() == '{"old": "results"}\n'
    partial = tmp_path / "out.partial.jsonl"
    rows = [json.loads(line) for line in partial.read_text().splitlines()]
    done = int(re.search(r"interrupted; (\d+) done", err)[1])
    assert 0 < len(rows) <= done and all("label" in r for r in rows)  # a batch is counted before it is written
    assert str(partial) in err.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.partial.jsonl"]  # no temporary left


def test_save_dir_keeps_a_file_already_there_unless_force(folder, tmp_path):
    """Issue 33: --save-dir replaced an existing file without --force. It now takes the next free name."""
    d, paths, _ = folder
    ann = tmp_path / "ann"
    first = f"000000_{sorted(paths)[0].stem}.jpg"
    ann.mkdir()
    (ann / first).write_bytes(b"mine")
    code, _, err = cli(str(models()["onnx"]), "--source", str(d), "--save-dir", str(ann), "--quiet")
    assert code == 0, err
    assert (ann / first).read_bytes() == b"mine" and (ann / first.replace(".jpg", "-2.jpg")).stat().st_size > 100
    code, _, err = cli(str(models()["onnx"]), "--source", str(d), "--save-dir", str(ann), "--quiet", "--force")
    assert code == 0, err
    assert (ann / first).read_bytes() != b"mine"
