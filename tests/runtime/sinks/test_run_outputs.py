"""cnn-infer's outputs and the run function (issue 12): a run that does not complete never replaces an earlier
output, a kill -9 leftover is cleaned by the next run, odd file names get their rows, bad flags are refused."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnedge.cli import run_cli
from cnnedge.cli.infer import main
from cnnedge.errors import CnnEdgeError, UsageError

from test_runtime_models import models, write_images  # noqa: E402

pytest.importorskip("onnxruntime")
CLI = "import sys; from cnnedge.cli.infer import console; sys.argv[0] = 'cnn-infer'; console()"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_cli("cnn-infer", lambda a: main(a, out, err), list(argv), stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    write_images(d, 12)
    return d


def test_a_run_that_fails_midway_keeps_the_old_file_and_a_partial(photos, tmp_path):
    """run() with a sink that fails after 5 results: exit code 1, the old JSONL untouched, the 5 rows written
    kept as out.partial.jsonl; a run that completes replaces the file and leaves nothing beside it."""
    from cnnedge.runtime import Classifier, run
    from cnnedge.runtime.sinks import ErrorSink, JsonlSink, Sink

    class Breaks(Sink):
        def __init__(self) -> None:
            self.n = 0

        def write(self, r) -> None:
            self.n += 1
            if self.n > 5:
                raise CnnEdgeError("the disk went away")

    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with Classifier(models()["onnx"]) as clf:
        jl = JsonlSink(target, force=True)
        summary = run(photos, clf, [jl, Breaks()], batch=4)
        assert summary.exit_code == 1 and summary.error == "the disk went away" and not summary.complete
        assert summary.partial == [tmp_path / "out.partial.jsonl"]
        assert "partial results kept in" in summary.partial_lines()[0]
        assert target.read_text() == "old\n"
        # sinks take a batch at a time: the second batch of 4 (with the 6th result) went to JSONL first
        assert len((tmp_path / "out.partial.jsonl").read_text().splitlines()) == 8
        done = run(photos, clf, [JsonlSink(target, force=True), ErrorSink(io.StringIO())], batch=4)
    assert done.exit_code == 0 and done.partial == []
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 12 and all("label" in r for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.partial.jsonl"]


def test_error_sink_names_the_frame_of_a_bad_video_frame():
    from cnnedge.runtime.results import Result
    from cnnedge.runtime.sinks import ErrorSink

    err = io.StringIO()
    with ErrorSink(err) as s:
        s.write(Result("clip.mp4", 0.0, frame=17, error="bad frame (empty image)"))
        s.write(Result("photos", 0.0, path="photos/a.png", error="not an image"))
        s.write(Result("photos", 0.0, path="photos/b.png"))  # not a failure: nothing printed
    assert err.getvalue().splitlines() == ["skipped clip.mp4#17: bad frame (empty image)",
                                           "skipped photos/a.png: not an image"]


@pytest.mark.slow
def test_kill_9_keeps_the_old_json_and_the_next_run_cleans_up(photos, tmp_path):
    """kill -9 of `cnn-infer --json out.jsonl --force` in the middle of a stream: the old file is whole, a
    hidden temporary is left; the next run into the same place completes, replaces the file and removes it."""
    from test_infer_cli import MjpegServer, cli_on_stream

    models()
    target = tmp_path / "out.jsonl"
    target.write_text('{"old": 1}\n')
    srv = MjpegServer(fps=30)
    srv.start()
    try:
        proc = cli_on_stream(srv, "--json", str(target), "--force", stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            temps: list[Path] = []
            while time.monotonic() < deadline and not any(p.stat().st_size for p in temps):
                time.sleep(0.2)  # until rows reach the temporary (the run is under way)
                temps = [p for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl.")]
            assert temps and temps[0].stat().st_size > 0, "the run never started writing"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        srv.stop()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [temps[0].name]  # the leftover
    res = subprocess.run([sys.executable, "-c", CLI, str(models()["onnx"]), "--source", str(photos), "--quiet",
                          "--json", str(target), "--force"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(target.read_text().splitlines()) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # leftover removed, no partial


def test_a_temporary_of_a_live_run_is_not_removed(tmp_path):
    """The clean-up takes only temporaries whose writer is gone: one whose writer lives stays."""
    from cnnedge.staging import StagedFile, sweep_files

    live = StagedFile(tmp_path / "out.csv")
    live.path.write_text("rows")
    assert sweep_files(tmp_path / "out.csv") == []
    second = StagedFile(tmp_path / "out.csv")  # another run into the same place leaves the first alone
    assert live.path.exists() and second.path != live.path
    second.discard()
    assert live.commit() == tmp_path / "out.csv" and (tmp_path / "out.csv").read_text() == "rows"


def test_a_file_name_that_is_not_utf8_gets_its_row(tmp_path):
    """A 0xFF byte in a file name: every file gets its JSON and CSV row with the name as it is, stdout shows
    \\xff, and a strict ASCII stdout does not end the run."""
    import cv2

    d = tmp_path / "photos"
    paths, _ = write_images(d, 3)
    odd = os.path.join(os.fsencode(d), b"\xffodd.png")
    with open(odd, "wb") as fh:
        fh.write(paths[0].read_bytes())
    assert cv2.imread(str(paths[0])) is not None
    jl, cs = tmp_path / "out.jsonl", tmp_path / "out.csv"
    code, out, err = cli(str(models()["onnx"]), "--source", str(d), "--json", str(jl), "--csv", str(cs))
    assert code == 0, err
    rows = [json.loads(line) for line in jl.read_text(encoding="ascii").splitlines()]  # JSON escapes the byte
    assert len(rows) == 4 and all("label" in r for r in rows)
    assert odd in [os.fsencode(r["path"]) for r in rows]
    with open(cs, "rb") as fh:
        data = fh.read()
    assert odd in data  # CSV keeps the name's own bytes
    table = list(csv.DictReader(io.StringIO(data.decode("utf-8", "surrogateescape"))))
    assert len(table) == 4
    assert "\\xffodd.png\t" in out
    res = subprocess.run([sys.executable, "-c", CLI, str(models()["onnx"]), "--source", str(d)],
                         capture_output=True, timeout=120, env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert res.returncode == 0, res.stderr
    assert b"\\xffodd.png\t" in res.stdout and len(res.stdout.splitlines()) == 4


def test_max_wait_ms_must_be_finite_and_a_finished_folder_closes_its_batch(photos, capsys):
    for bad in ("inf", "nan", "-1", "1e999", "soon"):
        with pytest.raises(SystemExit) as exit_:
            main([str(models()["onnx"]), "--source", str(photos), "--max-wait-ms", bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "argument --max-wait-ms: expected" in err and bad in err, (bad, err)
    from cnnedge.runtime import Classifier

    with Classifier(models()["onnx"]) as clf:
        for bad in (float("inf"), float("nan"), -1.0):
            with pytest.raises(UsageError, match="max_wait_ms must be a finite number >= 0"):
                list(clf.stream(photos, max_wait_ms=bad))
    t0 = time.monotonic()
    code, _, err = cli(str(models()["onnx"]), "--source", str(photos), "--max-wait-ms", "1e9", "--batch", "64",
                       "--quiet")
    assert code == 0 and "12 done" in err, err
    assert time.monotonic() - t0 < 60  # the batch closed when the folder ended, not after 1e9 ms


def test_topk_below_one_is_refused():
    from cnnedge.runtime import Classifier

    frame = np.zeros((32, 32, 3), np.uint8)
    with Classifier(models()["onnx"]) as clf:
        assert len(clf.predict(frame, topk=3).topk) == 3
        for k in (-1, 0):
            with pytest.raises(UsageError, match="topk must be a whole number >= 1"):
                clf.predict(frame, topk=k)
            with pytest.raises(UsageError, match="topk"):
                clf.postprocess(clf.infer(frame[None]), k)
        with pytest.raises(UsageError, match="topk"):
            Classifier(models()["onnx"], topk=0)


def test_save_video_replaces_the_old_file_only_on_commit(tmp_path):
    """--save-video's sink: closed without a commit it keeps the frames as out.partial.avi (a video OpenCV
    reads back) and leaves the old out.avi alone; committed, it replaces out.avi."""
    import cv2

    from cnnedge.runtime.results import Prediction, Result
    from cnnedge.runtime.sinks import VideoSink

    frames = [np.full((48, 64, 3), v, np.uint8) for v in (40, 120, 200)]
    results = [Result("cam", 0.0, frame=i, prediction=Prediction("a", 0.9, 0, [("a", 0.9)]), image=f)
               for i, f in enumerate(frames)]
    target = tmp_path / "out.avi"
    target.write_bytes(b"old video")
    sink = VideoSink(target, fps=10, force=True)
    sink.write_batch(results)
    sink.close()
    assert target.read_bytes() == b"old video" and sink.partial == tmp_path / "out.partial.avi"
    cap = cv2.VideoCapture(str(sink.partial))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 3
    with VideoSink(target, fps=10, force=True) as done:
        done.write_batch(results)
    assert done.partial is None and target.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.avi", "out.partial.avi"]


def test_max_frames_counts_what_the_sinks_got(photos, tmp_path):
    """--max-frames 5 on 12 images in batches of 4: the run stops inside the second batch, and the summary
    says 5 done, as the JSONL holds 5 rows (it said 8: the whole batch was counted)."""
    out = tmp_path / "o.jsonl"
    code, _, err = cli(str(models()["onnx"]), "--source", str(photos), "--batch", "4", "--max-frames", "5",
                       "--json", str(out), "--quiet", "--no-progress")
    assert code == 0 and "5 done; 0 failed" in err, err
    assert len(out.read_text().splitlines()) == 5
