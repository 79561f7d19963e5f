"""`cnn-train --force` never loses the run it replaces: killed (-9) at several moments, the old run is whole
where it was; Ctrl-C before the new run's first checkpoint keeps the old run, after it swaps the new one in;
each says which run the folder holds. Real subprocesses on the digits data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from cnnedge.artifact.card import ModelCard, sha256_file
from cnnedge.trainer.loop import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
STAGING = ".cnn-train-new"

pytestmark = pytest.mark.slow
RUN_CONFIG = {"preset": "mnist-dense", "epochs": 1, "batch_size": 32, "channels": 3, "seed": 0, "patience": 5,
              "learning_rate": 0.001, "img_size": [8, 8], "weights": None, "augment": {}, "mixed_precision": False,
              "data": "digits", "dataset_spec": {"source": "digits", "size": [8, 8], "seed": 0}}


def _old_run(run: Path) -> dict[str, bytes]:
    run.mkdir(parents=True)
    files = {name: f"old {name}".encode() for name in ARTIFACTS}
    files["train_config.json"] = json.dumps(RUN_CONFIG).encode()  # what makes the folder a run
    files.update({n: f"old {n}".encode() for n in ("model.onnx", "model.int8.onnx", "export_report.json")})
    files["notes.txt"] = b"not ours"
    for name, body in files.items():
        (run / name).write_bytes(body)
    return files


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and STAGING not in p.parts}


def _start(run: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
    cmd = [sys.executable, "-c", "from cnnedge.cli.train import console; console()", "--preset", "mnist-dense",
           "--data", "digits", "--img-size", "8", "--out", str(run), "--force", "--patience", "0", "--quiet", *extra]
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)


def _wait(proc: subprocess.Popen, log: Path, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"cnn-train ended before {what}: {log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {log.read_text()}"
        time.sleep(0.02)


def _epochs(staging: Path) -> int:
    try:
        return len((staging / "history.csv").read_text().strip().splitlines()) - 1
    except OSError:
        return 0


MOMENTS: dict[str, Callable[[Path, Path], bool]] = {
    "data loaded": lambda run, log: "data: model input" in log.read_text(),
    "new run folder started": lambda run, log: (run / STAGING / "train_config.json").is_file(),
    "first checkpoint": lambda run, log: (run / STAGING / "card.json").is_file(),
    "three epochs": lambda run, log: _epochs(run / STAGING) >= 3,
}


def test_kill_9_at_any_moment_leaves_the_old_run_whole(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _old_run(run)
    before = _snapshot(run)
    left = False
    for i, (moment, ready) in enumerate(MOMENTS.items()):
        log = tmp_path / f"kill{i}.log"
        proc = _start(run, log, "--epochs", "500")
        _wait(proc, log, lambda: ready(run, log), moment)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert _snapshot(run) == before, moment
        if left:  # the run killed before left its unfinished files; this one removed them and said so
            assert "removed the files of a --force run that was stopped" in log.read_text(), log.read_text()
        left = (run / STAGING).is_dir()
        assert left or moment == "data loaded", moment  # killed that early, it may not have started its folder
    # a run that completes replaces the old one, and clears the last killed run's files first
    log = tmp_path / "done.log"
    proc = _start(run, log, "--epochs", "2")
    assert proc.wait(timeout=300) == 0, log.read_text()
    said = log.read_text()
    assert "removed the files of a --force run" in said and f"{run} now holds the new run" in said, said
    after = _snapshot(run)
    assert set(after) == set(ARTIFACTS) | {"notes.txt"} and after["notes.txt"] == b"not ours", sorted(after)
    assert ModelCard.load(run / "card.json").provenance.source_sha256 == sha256_file(run / "model.keras")
    assert not (run / STAGING).exists()


def test_ctrl_c_before_the_first_checkpoint_keeps_the_old_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _old_run(run)
    before = _snapshot(run)
    log = tmp_path / "int.log"
    proc = _start(run, log, "--epochs", "5", "--batch-size", "1")  # a long first epoch
    _wait(proc, log, lambda: MOMENTS["new run folder started"](run, log), "the new run folder")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()
    said = log.read_text()
    assert "before the new run had a checkpoint" in said and f"{run} still holds the previous run" in said, said
    assert _snapshot(run) == before and not (run / STAGING).exists()


def test_ctrl_c_after_the_first_checkpoint_swaps_the_new_run_in(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _old_run(run)
    log = tmp_path / "int.log"
    proc = _start(run, log, "--epochs", "500")
    _wait(proc, log, lambda: MOMENTS["first checkpoint"](run, log), "the first checkpoint")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()
    said = log.read_text()
    assert f"{run} now holds the new run, the previous run is replaced" in said, said
    assert f"--resume {run}" in said, said
    after = _snapshot(run)
    # the new run's checkpoint; the old run's metrics and plots and the exports of its model are gone
    assert set(after) == {"model.keras", "card.json", "train_config.json", "history.csv", "loss.png",
                          "accuracy.png", "notes.txt"}, sorted(after)
    assert ModelCard.load(run / "card.json").provenance.source_sha256 == sha256_file(run / "model.keras")
    assert not (run / STAGING).exists()


def test_a_swap_killed_between_its_renames_is_refused_by_readers_and_finished_by_resume(tmp_path: Path) -> None:
    """A kill -9 between the renames of a committed swap left model.keras of the new run beside card.json of the
    old one, and the runtime and cnn-export read that mix. The state is built here as such a kill leaves it (two
    real runs; the new one's files staged, the swap marker written and its first rename done, as
    ``rundir.swap_in`` does them): readers refuse it in one line, and ``cnn-train --resume`` completes it."""
    from cnnedge.errors import ModelLoadError
    from cnnedge.runtime import Classifier
    from cnnedge.trainer import rundir

    runs = []
    for name in ("old", "new"):
        log = tmp_path / f"{name}.log"
        proc = _start(tmp_path / name, log, "--epochs", "1")
        assert proc.wait(timeout=300) == 0, log.read_text()
        runs.append(tmp_path / name)
    old, new = runs
    staging = old / STAGING
    staging.mkdir()
    names = [n for n in ARTIFACTS if (new / n).is_file()]
    for n in names:
        (staging / n).write_bytes((new / n).read_bytes())
    (staging / rundir.SWAP_MARKER).write_text(json.dumps({"files": names}) + "\n")
    os.replace(staging / names[0], old / names[0])  # model.keras: the first rename of the swap
    with pytest.raises(ModelLoadError, match="killed while replacing the run in this folder.*--resume"):
        Classifier(old / "model.keras")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-c", "from cnnedge.cli.export import console; console()", str(old / "model.keras"),
           "--out", str(tmp_path / "export")]
    r = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and "killed while replacing" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "export").exists()
    r = subprocess.run([sys.executable, "-c", "from cnnedge.cli.train import console; console()", "--resume",
                        str(old), "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "finished replacing its run" in r.stdout + r.stderr, r.stdout + r.stderr
    assert ModelCard.load(old / "card.json").provenance.source_sha256 == sha256_file(old / "model.keras")
    with Classifier(old / "model.keras") as clf:
        assert clf.card == ModelCard.load(new / "card.json")
