"""cnnedge.staging: a staged file and a staged folder, each written by a real child process that is stopped at
a chosen point (an audit hook sends it SIGSTOP; the test waits for that with waitpid, no timer) and then killed
with SIGKILL there, or left alive: what the kill leaves, and what the next writer does with it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cnnedge.staging import (Layout, StagedFile, StagedFolder, pending, recover, staged_path, sweep, sweep_files,
                             write_text)
from cnnedge.staging.owner import me

ROOT = Path(__file__).resolve().parents[2]
PER_PROCESS = Layout(".test-stage-", ".test-commit.json")
ONE_FOLDER = Layout(".test-new", ".test-new/record.json")

#: the child: stops itself (SIGSTOP) just before its ``index``-th rename (Python's ``os.rename`` audit event,
#: raised by os.replace too) or, with index -1, once its work is staged; then does the work given as argv[3]
_CHILD = """
import os, signal, sys
from pathlib import Path

index, target, work = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
seen = []

def hook(event, args):
    if event == "os.rename":
        seen.append(args)
        if len(seen) == index + 1:
            os.kill(os.getpid(), signal.SIGSTOP)

sys.addaudithook(hook)
from cnnedge.staging import Layout, StagedFile, StagedFolder

if work == "file":
    staged = StagedFile(target)
    staged.path.write_text("new")
    if index < 0:
        os.kill(os.getpid(), signal.SIGSTOP)
    staged.commit()
else:
    from cnnedge.artifact.staged import TRAIN

    layout = {"per-process": Layout(".test-stage-", ".test-commit.json"),
              "one-folder": Layout(".test-new", ".test-new/record.json"), "train": TRAIN}[work]
    folder = StagedFolder(target, layout)
    for name in ("a", "b", "c"):
        (folder.path / name).write_text("new")
    if index < 0:
        os.kill(os.getpid(), signal.SIGSTOP)
    folder.commit(remove=["old-only"])
"""


class Stopped:
    """A child stopped at its point: alive until :meth:`kill`, which leaves it a zombie (dead, not reaped)."""

    def __init__(self, index: int, target: Path, work: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.p = subprocess.Popen([sys.executable, "-c", _CHILD, str(index), str(target), work], env=env)
        _, status = os.waitpid(self.p.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"the child ended before its point: {status}"

    def kill(self) -> None:
        os.kill(self.p.pid, signal.SIGKILL)
        os.waitid(os.P_PID, self.p.pid, os.WEXITED | os.WNOWAIT)

    def reap(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_staged_file_killed_before_its_rename_leaves_the_old_file_and_is_swept_once_dead(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    child = Stopped(-1, target, "file")
    try:
        [left] = hidden(tmp_path)
        assert left.startswith(".out.csv.run-") and left.endswith(".tmp.csv")
        assert sweep_files(target) == [] and hidden(tmp_path) == [left]  # its writer lives (stopped)
        child.kill()
        assert target.read_text() == "old"
        staged = StagedFile(target)  # the next writer sweeps the dead one's file
        assert hidden(tmp_path) == [staged.path.name]
        staged.path.write_text("next")
        assert staged.commit() == target and target.read_text() == "next" and hidden(tmp_path) == []
    finally:
        child.reap()


def test_a_staged_file_killed_at_its_rename_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    child = Stopped(0, target, "file")
    try:
        child.kill()
        assert target.read_text() == "old"
        write_text(target, "next")
        assert target.read_text() == "next" and hidden(tmp_path) == []
    finally:
        child.reap()


def test_staged_path_removes_its_file_on_failure_and_keeps_a_file_that_appeared(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(ValueError):
        with staged_path(target) as tmp:
            assert tmp.suffix == ".onnx" and tmp.parent == tmp_path
            tmp.write_text("half")
            raise ValueError("the writer failed")
    assert list(tmp_path.iterdir()) == []
    staged = StagedFile(target, replace=False)
    staged.path.write_text("mine")
    target.write_text("theirs")
    from cnnedge.staging import OutputError

    with pytest.raises(OutputError, match="model-2.onnx"):
        staged.commit()
    assert target.read_text() == "theirs" and (tmp_path / "model-2.onnx").read_text() == "mine"


def _old_set(out: Path) -> None:
    out.mkdir()
    for name in ("a", "b", "c", "old-only"):
        (out / name).write_text("old")


def _contents(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}


OLD = {"a": "old", "b": "old", "c": "old", "old-only": "old"}
NEW = {"a": "new", "b": "new", "c": "new"}


@pytest.mark.parametrize("layout, work", [(PER_PROCESS, "per-process"), (ONE_FOLDER, "one-folder")])
@pytest.mark.parametrize("index, outcome", [(-1, "old"), (0, "old"), (1, "new"), (3, "new")])
def test_a_staged_folder_killed_at_each_point_is_rolled_forward_or_swept(tmp_path, layout, work, index, outcome):
    """index -1: staged, no commit; 0: the record's rename; 1: the first file's; 3: the last file's."""
    out = tmp_path / "out"
    _old_set(out)
    child = Stopped(index, out, work)
    try:
        assert pending(out, layout) is False  # a live writer: its commit is under way, or has not begun
        assert sweep(out, layout) == [] and recover(out, layout).rolled is False
        child.kill()
        assert pending(out, layout) is (outcome == "new")
        done = recover(out, layout)
        assert done.rolled is (outcome == "new") and done.whole
        if outcome == "new":
            assert done.moved == ["a", "b", "c"][index - 1:] and done.owner is not None
            assert done.owner.pid == child.p.pid
        assert _contents(out) == (NEW if outcome == "new" else OLD)
        assert hidden(out) == [] and not pending(out, layout)
    finally:
        child.reap()


def test_a_record_without_an_owner_counts_as_dead_and_a_missing_staging_folder_keeps_it(tmp_path):
    """An older record (no pid) was written by a process that is gone; one whose staging folder is gone cannot be
    completed: it stays, and readers keep refusing the folder."""
    out = tmp_path / "out"
    _old_set(out)
    (out / ".test-new").mkdir()
    (out / ".test-new" / "a").write_text("new")
    (out / ".test-new" / "record.json").write_text(json.dumps({"files": ["a"]}))
    assert pending(out, ONE_FOLDER)
    done = recover(out, ONE_FOLDER, stale=lambda files: ["old-only"])
    assert done.moved == ["a"] and _contents(out) == {"a": "new", "b": "old", "c": "old"}
    (out / ".test-commit.json").write_text(json.dumps({"pid": me().pid + 10 ** 7, "staging": ".test-stage-1-x",
                                                       "files": ["b"]}))
    done = recover(out, PER_PROCESS)
    assert done.rolled and not done.whole and pending(out, PER_PROCESS)


def test_a_commit_in_this_process_leaves_nothing_and_a_live_staging_folder_is_not_swept(tmp_path):
    out = tmp_path / "out"
    _old_set(out)
    folder = StagedFolder(out, PER_PROCESS)
    (folder.path / "a").write_text("new")
    assert sweep(out, PER_PROCESS) == []  # this process's own
    assert folder.commit(remove=["old-only"]) == ["a"]
    assert _contents(out) == {"a": "new", "b": "old", "c": "old"} and hidden(out) == []


def test_cnn_train_refuses_a_folder_where_a_live_force_run_builds_and_sweeps_a_dead_ones(tmp_path):
    """The trainer's staging folder follows the same rule: a live owner's is refused (it is building there now),
    a dead owner's is removed, aloud."""
    from cnnedge.errors import FileExistsRefused
    from cnnedge.trainer import rundir

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"preset": "mnist-dense", "dataset_spec": {}}))
    (run / "model.keras").write_text("old")
    child = Stopped(-1, run, "train")
    said: list[str] = []
    try:
        with pytest.raises(FileExistsRefused, match=rf"another cnn-train run \(process {child.p.pid}\) is building"):
            rundir.check_out(run, True, said.append)
        assert (run / ".cnn-train-new" / "a").exists() and said == []
        child.kill()
        rundir.check_out(run, True, said.append)
        assert not (run / ".cnn-train-new").exists() and (run / "model.keras").read_text() == "old"
        assert len(said) == 1 and "removed the files of a --force run that was stopped" in said[0]
    finally:
        child.reap()


def test_a_pid_reused_by_a_later_process_is_dead_and_another_hosts_owner_is_left_alone():
    from cnnedge.staging.owner import HOST, Owner, parse_token

    parent = os.getppid()
    stat = Path(f"/proc/{parent}/stat").read_text()
    started = stat[stat.rfind(")") + 2:].split()[19]
    assert Owner(parent, started, HOST).alive()
    assert not Owner(parent, str(int(started) + 1), HOST).alive()  # that pid now names a later process
    other = "0" * 8 if HOST != "0" * 8 else "1" * 8
    assert Owner(parent + 10 ** 7, "", other).alive()  # not checkable from here
    assert parse_token(Owner(parent, started).token + "-abc") == Owner(parent, started, HOST)
    assert parse_token("notapid-x") is None


def test_another_hosts_commit_record_is_under_way_while_fresh_and_cut_once_older_than_a_commit_takes(tmp_path):
    """A container writing into a mounted folder is another host here: its pid cannot be checked. Its record is
    a commit under way for COMMIT_GRACE_S (a commit is renames), then one cut midway: readers refuse the folder
    and the next writer rolls it forward."""
    from cnnedge.staging.folders import COMMIT_GRACE_S
    from cnnedge.staging.owner import HOST

    out = tmp_path / "out"
    _old_set(out)
    (out / ".test-new").mkdir()
    (out / ".test-new" / "a").write_text("new")
    record = out / ".test-new" / "record.json"
    other = "0" * 8 if HOST != "0" * 8 else "1" * 8
    record.write_text(json.dumps({"files": ["a"], "pid": 7, "started": "12", "host": other}))
    assert not pending(out, ONE_FOLDER) and not recover(out, ONE_FOLDER).rolled
    old = record.stat().st_mtime - COMMIT_GRACE_S - 1
    os.utime(record, (old, old))
    assert pending(out, ONE_FOLDER)
    done = recover(out, ONE_FOLDER, stale=lambda files: ["old-only"])
    assert done.moved == ["a"] and _contents(out) == {"a": "new", "b": "old", "c": "old"}
    assert not pending(out, ONE_FOLDER)
