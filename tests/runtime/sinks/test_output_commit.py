"""Putting outputs in place under hostile conditions (issue 33): a disk that fills up while cnn-infer writes
--json or --save-video (a 2 MiB tmpfs), cnn-bench's --json onto a full disk, and several runs committing the same
new --json at once. Each failure is one line naming the file, exit 1, and nothing the user had is replaced or
lost. Real cnn-infer and cnn-bench, real files and real concurrent processes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from test_hostile_reads import ROOT, _classifier_onnx, _cli, bench, error_lines, infer  # noqa: E402
from test_hostile_outputs import one_image_list  # noqa: E402
from test_hostile_streams import PartsServer, jpeg  # noqa: E402

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _classifier_onnx(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """More rows and frames than the full disk takes."""
    return one_image_list(tmp_path_factory.mktemp("many"), 600)


@pytest.fixture()
def disk(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (root only: skipped, saying why, where it cannot be mounted)."""
    d = tmp_path / "disk"
    d.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs to fill ({exc}): the full-disk cases are not checked here")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({r.stderr.strip() or 'mount failed'}; it needs root): "
                    "the full-disk cases are not checked here")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def fill(disk: Path, leave: int) -> None:
    """Leave about ``leave`` bytes free on ``disk``."""
    st = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def one_failure(r, *words: str) -> str:
    lines = error_lines(r)
    assert r.rc == 1 and len(lines) == 1 and "Traceback" not in r.err, r
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_json_onto_a_disk_that_fills_up_is_one_line_and_keeps_the_old_file(model, many, disk):
    """The write that meets the full disk fails the run at that batch (it was a traceback, OSError 28): one line
    naming the file, exit 1, the old file as it was, and what reached the disk kept as out.partial.jsonl."""
    old = disk / "out.jsonl"
    old.write_text('{"old": 1}\n')
    fill(disk, 8 << 10)
    r = infer(str(model), "--source", str(many), "--json", str(old), "--force", "--quiet", timeout=120)
    one_failure(r, str(old), "No space left on device", "old file is left as it was")
    assert old.read_text() == '{"old": 1}\n'
    assert "partial results kept in" in r.err.splitlines()[-1], r
    assert not [p for p in os.listdir(disk) if ".run-" in p], os.listdir(disk)  # no temporary left behind


def test_save_video_onto_a_full_disk_fails_and_keeps_the_old_video(model, many, disk):
    """OpenCV's writer says nothing when the disk fills up, and the cut video used to replace the old one with
    exit 0. The video is read back before it is put in place: exit 1, one line, the old video as it was."""
    old = disk / "out.avi"
    old.write_bytes(b"the user's old video")
    fill(disk, 64 << 10)
    r = infer(str(model), "--source", str(many), "--save-video", str(old), "--force", "--quiet", timeout=120)
    one_failure(r, "--save-video", str(old), "cannot be read back whole", "old file is left as it was")
    assert old.read_bytes() == b"the user's old video"
    assert not [p for p in os.listdir(disk) if ".run-" in p], os.listdir(disk)


def test_a_complete_video_still_commits(model, many, tmp_path):
    """The read-back check passes a video written whole (every container cnn-infer accepts)."""
    for name in ("out.avi", "out.mp4", "out.mkv"):
        r = infer(str(model), "--source", str(many), "--save-video", str(tmp_path / name), "--quiet",
                  "--max-frames", "40", timeout=120)
        assert r.rc == 0 and not error_lines(r), r
        cap = cv2.VideoCapture(str(tmp_path / name))
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 40
        cap.release()


def test_cnn_bench_json_onto_a_full_disk_is_one_line(model, disk):
    old = disk / "bench.json"
    old.write_text('{"old": 1}\n')
    fill(disk, 0)
    r = bench(str(model), "--backends", "ort-cpu", "--batch", "1", "--iters", "3", "--warmup", "1", "--repeats",
              "1", "--json", str(old), "--force", timeout=120)
    one_failure(r, str(old), "No space left on device")
    assert old.read_text() == '{"old": 1}\n'
    assert sorted(os.listdir(disk)) == ["bench.json", "filler"]


# --- several runs committing the same new file ---------------------------------------------------------------

def _runs_at_once(model: Path, out: Path, n: int, *extra: str) -> list[tuple[int, str]]:
    """``n`` cnn-infer processes classifying one gated stream into ``out``; (exit code, stderr) of each."""
    frame = jpeg()
    srv = PartsServer(lambda c, k: frame, gate=n)  # every run has passed its start-time check before any frame
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _cli("infer"), str(model), "--source", srv.url, "--json",
                               str(out), "--max-frames", "5", "--quiet", "--open-timeout-ms", "60000", *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
             for _ in range(n)]
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
        return [(p.returncode, err) for p, err in zip(procs, errs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        srv.stop()


def _rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) >= 5 and all("label" in r for r in rows), path
    return rows


@pytest.mark.slow
def test_runs_committing_one_new_json_at_once_never_replace_each_other(model, tmp_path):
    """Four runs into the same new --json without --force all passed the check at start and each replaced the
    last (exit 0). Now the first to finish writes it; each later one finds it there at commit, leaves it as it
    is, keeps its own results under the next free name and says where, exit 1. Nothing is lost."""
    out = tmp_path / "out.jsonl"
    ran = _runs_at_once(model, out, 4)
    assert sorted(rc for rc, _ in ran) == [0, 1, 1, 1], ran
    kept = []
    for rc, err in ran:
        assert "Traceback" not in err, err
        if rc == 1:
            lines = [ln for ln in err.splitlines() if ": error:" in ln]
            assert len(lines) == 1 and f"{out}: a file of this name appeared" in lines[0], err
            kept.append(Path(re.search(r"results are in (\S+)", lines[0])[1]))
    assert sorted(p.name for p in kept) == ["out-2.jsonl", "out-3.jsonl", "out-4.jsonl"]
    assert sorted(os.listdir(tmp_path)) == ["out-2.jsonl", "out-3.jsonl", "out-4.jsonl", "out.jsonl"]
    for p in [out, *kept]:
        _rows(p)


@pytest.mark.slow
def test_with_force_runs_committing_at_once_each_replace(model, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"old": 1}\n')
    ran = _runs_at_once(model, out, 3, "--force")
    assert [rc for rc, _ in ran] == [0, 0, 0], ran
    assert os.listdir(tmp_path) == ["out.jsonl"]
    _rows(out)


def test_a_commit_without_replace_keeps_a_file_that_appeared(tmp_path):
    """The library's side: StagedFile(replace=False) and staged_path(replace=False) link, never rename over."""
    from cnnedge.staging import OutputError, StagedFile, write_text

    target = tmp_path / "out.csv"
    staged = StagedFile(target, replace=False)
    staged.path.write_text("mine\n")
    target.write_text("theirs\n")
    (tmp_path / "out-2.csv").write_text("the user's\n")
    with pytest.raises(OutputError, match=r"out-3\.csv"):
        staged.commit()
    assert target.read_text() == "theirs\n" and (tmp_path / "out-2.csv").read_text() == "the user's\n"
    assert (tmp_path / "out-3.csv").read_text() == "mine\n"
    with pytest.raises(OutputError, match=r"out-4\.csv"):
        write_text(target, "also mine\n", replace=False)
    assert (tmp_path / "out-4.csv").read_text() == "also mine\n"
    write_text(tmp_path / "new.csv", "new\n", replace=False)
    assert (tmp_path / "new.csv").read_text() == "new\n"
    assert sorted(os.listdir(tmp_path)) == ["new.csv", "out-2.csv", "out-3.csv", "out-4.csv", "out.csv"]
