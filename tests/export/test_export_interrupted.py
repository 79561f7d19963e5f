"""cnn-export stopped from outside: SIGTERM and Ctrl-C end it as a stop (143, 130) and leave the folder as it
was; kill -9 anywhere in the commit leaves a state the next export finishes or undoes, so that the folder
holds one export's files; no temporary folder outlives the export in the system's temporary folder.

Every export here runs in a real child process and every signal is a real one, sent when the child says it
has reached the point (a progress line on stderr, or the child stopping itself: see
:func:`test_kill_9_at_each_commit_point_is_finished_or_undone_by_the_next_export`), never after a sleep.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # child processes that load ONNX Runtime or TensorFlow

SIZE = 16
EXPORT = "import sys\nfrom cnnedge.cli.export import console\nsys.argv[0] = 'cnn-export'\nconsole()\n"
HANG_GUARD_S = 600  # a child that never reaches its point is killed, and the test fails saying so


def onnx_classifier(path: Path, opset: int, seed: int = 0) -> Path:
    """A small NCHW float image classifier written with onnx.helper at ``opset`` (Conv, Relu, global pooling,
    MatMul): what a model from elsewhere looks like."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(np.zeros(8, np.float32), "B"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 10)).astype(np.float32), "G")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "G"], ["y"])]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def describe(tmp_path: Path) -> list[str]:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(i) for i in range(10)) + "\n")
    return ["--labels", str(labels), "--scale", "1/255", "--mean", "0", "--std", "1", "--rgb", "--verify", "digits",
            "--verify-size", "40", "--calib", "digits", "--calib-size", "32"]


def _default_signals() -> None:
    """In the child: SIGINT and SIGTERM as a terminal gives them (a test run in the background ignores SIGINT,
    and the child would inherit that)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


class Child:
    """A child process whose stderr is read line by line, so a signal can be sent the moment a line appears."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.p = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, env=env, preexec_fn=_default_signals)
        self.lines: list[str] = []
        self._guard = threading.Timer(HANG_GUARD_S, self.p.kill)
        self._guard.daemon = True
        self._guard.start()

    def until(self, seen: Callable[[str], bool]) -> bool:
        """Read stderr until a line satisfies ``seen`` (True) or the child ends (False)."""
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))
            if seen(self.lines[-1]):
                return True
        return False

    def finish(self) -> int:
        self.until(lambda _line: False)
        code = self.p.wait()
        self._guard.cancel()
        return code


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".cnn-export-"))


# --- no temporary folder outlives an export ---------------------------------------------------------------------

#: runs a real cnn-export that stops itself (SIGSTOP) when it first opens a file whose path holds argv[1]: an
#: audit hook on Python's own ``open`` event; the test then signals it there
_STOP_AT_OPEN = """
import os, signal, sys

needle = sys.argv[1]

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)) and needle in os.fsdecode(args[0]) and not hook.done:
        hook.done = True
        os.kill(os.getpid(), signal.SIGSTOP)

hook.done = False
sys.addaudithook(hook)
from cnnedge.cli.export import console
sys.argv = ["cnn-export", *sys.argv[2:]]
console()
"""


def test_no_cnnedge_folder_is_left_in_tmpdir_on_success_failure_or_signal(tmp_path):
    """TMPDIR points at a folder of the test's. An export of an opset-10 source (converted to 17) with FP16 and
    INT8, one that fails (the converter breaks its graph), and one stopped by SIGTERM and one killed by SIGKILL
    while the clean-up step has a graph written in its comparison folder (cnnedge-compare-*, left in /tmp by a
    kill before) leave no cnnedge-* entry there: that folder is inside the export's staging folder, which the
    next export into the folder removes once its process is dead."""
    from test_export_errors import scan_opset8_classifier

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "3"}

    def in_tmp() -> list[str]:
        return sorted(p.name for p in tmp.iterdir() if p.name.startswith("cnnedge"))

    src = onnx_classifier(tmp_path / "op10.onnx", 10)
    flags = describe(tmp_path)
    ok = Child(["-c", EXPORT, str(src), *flags, "--fp16", "--int8", "--out", str(tmp_path / "ok")], env)
    assert ok.finish() == 0, ok.lines
    broken = scan_opset8_classifier(tmp_path / "scan8.onnx")
    failed = Child(["-c", EXPORT, str(broken), *flags, "--out", str(tmp_path / "failed")], env)
    assert failed.finish() == 1, failed.lines
    assert in_tmp() == []
    stopped = tmp_path / "stopped"
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGKILL, -9)):
        c = Child(["-c", _STOP_AT_OPEN, "cnnedge-compare-", str(src), *flags, "--out", str(stopped), "--force"],
                  env)
        _, status = os.waitpid(c.p.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"the export ended before it compared graphs: {status}"
        assert list(stopped.glob(".cnn-export-*/cnnedge-compare-*")) != [] and in_tmp() == []
        c.p.send_signal(sig)
        c.p.send_signal(signal.SIGCONT)
        assert c.finish() == code, c.lines
        assert in_tmp() == []
    assert leftovers(stopped) != []  # the kill -9's staging folder, its comparison folder inside
    again = Child(["-c", EXPORT, str(src), *flags, "--out", str(stopped), "--force"], env)
    assert again.finish() == 0, again.lines
    assert sum("removed 1 staging folder" in line for line in again.lines) == 1, again.lines
    assert leftovers(stopped) == [] and in_tmp() == []


# --- SIGTERM and Ctrl-C -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_run(tmp_path_factory) -> Path:
    """A Keras model with its card, exported once with --int8: the old artifacts a stopped export must keep."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from test_export_errors import _save
    from cnnedge.export import export

    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    path = _save(model, tmp_path_factory.mktemp("keras") / "run")
    export(path, int8=True, calib_size=64, verify_size=100)
    return path


@pytest.mark.parametrize("step, sig, code", [
    ("load Keras model ...", signal.SIGTERM, 143),
    ("Keras -> ONNX (tf2onnx) ...", signal.SIGTERM, 143),
    ("INT8 ONNX (calibrating", signal.SIGTERM, 143),
    ("Keras -> ONNX (tf2onnx) ...", signal.SIGINT, 130),
])
def test_stop_signal_during_a_forced_int8_export_is_a_stop(keras_run, step, sig, code):
    """`cnn-export model.keras --force --int8` stopped at a step exits 128 + the signal with one last line
    saying so (it exited 1, the stop reported as a conversion failure); the old artifacts are untouched and no
    staging folder or commit record is left."""
    run = keras_run.parent
    for old in run.glob("model.int8.calib-*.json"):
        old.unlink()  # calibrate again: the INT8 step must take a while
    before = digests(run)
    c = Child(["-c", EXPORT, str(keras_run), "--force", "--int8", "--calib-size", "64", "--verify-size", "100"])
    assert c.until(lambda line: line.startswith(f"cnn-export: {step}")), c.lines
    c.p.send_signal(sig)
    assert c.finish() == code, c.lines
    assert c.lines[-1] == "cnn-export: interrupted" + (" (SIGTERM)" if sig == signal.SIGTERM else ""), c.lines
    assert not any("error" in line or "Traceback" in line for line in c.lines), c.lines
    assert digests(run) == before
    assert leftovers(run) == []


# --- kill -9 during the commit ----------------------------------------------------------------------------------

#: runs a real cnn-export; an audit hook (Python's own ``os.rename`` event, raised just before the syscall)
#: stops the process with SIGSTOP at the chosen rename, and the test kills it there with SIGKILL
_STOP_AT_RENAME = """
import os, signal, sys
from pathlib import Path

where, index = sys.argv[1], int(sys.argv[2])
out = Path(sys.argv[3]).resolve()
seen = []

def hook(event, args):
    if event != "os.rename":
        return
    dst = Path(os.fsdecode(args[1])).resolve()
    inside = dst.parent == out if where == "out" else dst.parent.name.startswith(".cnn-export-")
    if inside:
        seen.append(dst)
        if len(seen) == index + 1:
            os.kill(os.getpid(), signal.SIGSTOP)

sys.addaudithook(hook)
from cnnedge.cli.export import console
sys.argv = ["cnn-export", *sys.argv[4:]]
console()
"""


def sources_of(out: Path) -> set[str]:
    """The source models the folder's ONNX files and report come from (their cards' sha256, the report's model)."""
    from cnnedge.export.onnx_io import read_card

    shas = {read_card(p).provenance.source_sha256 for p in out.glob("*.onnx")}
    return shas | {hashlib.sha256(Path(json.loads((out / "export_report.json").read_text())["model"])
                                  .read_bytes()).hexdigest()}


@pytest.mark.parametrize("where, index, outcome", [
    ("staging", 0, "old"),  # a step's own atomic save in the staging folder: the commit never began
    ("out", 0, "old"),  # the commit record's rename into the folder: not written yet
    ("out", 1, "new"),  # the record written, no artifact moved yet
    ("out", 2, "new"),  # one of the three artifacts moved, two not
])
def test_kill_9_at_each_commit_point_is_finished_or_undone_by_the_next_export(tmp_path, where, index, outcome):
    """Killed for real (SIGKILL) at a rename of the commit, the export leaves its staging folder (and, once the
    record is written, a half-switched folder). The next export, before anything else, finishes the commit the
    record decided for (all new) or removes what never reached the folder (all old), says so in one line, and
    goes on: here it then refuses to replace the files without --force, and with --force it exports.

    How the kill lands exactly there: the child runs the real cnn-export with a Python audit hook (the
    ``os.rename`` event Python raises just before each rename syscall, os.replace included), which stops the
    child with SIGSTOP before the chosen rename; the test sees it stopped (waitpid WUNTRACED), checks the state,
    and sends SIGKILL, so the process dies there without running any clean-up of its own. It is left a zombie
    (waitid WNOWAIT: its pid still exists) while the next export runs, as under a parent that has not reaped
    it yet, which must count as dead."""
    from test_export_errors import cli

    old_src, new_src = onnx_classifier(tmp_path / "a.onnx", 17, 0), onnx_classifier(tmp_path / "b.onnx", 17, 1)
    out, flags = tmp_path / "out", [*describe(tmp_path), "--fp16", "--min-agreement-fp16", "0.5"]
    assert cli([str(old_src), *flags, "--out", str(out)])[0] == 0
    old_set = digests(out)
    c = Child(["-c", _STOP_AT_RENAME, where, str(index), str(out), str(new_src), *flags, "--out", str(out),
               "--force", "-q"])
    _, status = os.waitpid(c.p.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"the export ended before its rename {where} #{index}: {status}"
    assert (out / ".cnn-export-commit.json").exists() == (outcome == "new")
    os.kill(c.p.pid, signal.SIGKILL)
    os.waitid(os.P_PID, c.p.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped
    assert leftovers(out) != []
    try:
        code, err = cli_with_progress([str(new_src), *flags, "--out", str(out)])
    finally:
        c.p.wait()
        c.finish()
    said = [line for line in err.splitlines() if str(out) in line and "killed" in line]
    assert len(said) == 1, err
    assert ("completed it" in said[0]) == (outcome == "new") and ("removed" in said[0]) == (outcome == "old")
    assert code == 2 and err.strip().splitlines()[-1].endswith("exists; pass --force to overwrite it"), err
    assert leftovers(out) == []
    assert sources_of(out) == {hashlib.sha256((old_src if outcome == "old" else new_src).read_bytes()).hexdigest()}
    if outcome == "old":
        assert digests(out) == old_set
    code, err = cli_with_progress([str(new_src), *flags, "--out", str(out), "--force"])
    assert code == 0, err
    assert leftovers(out) == [] and sources_of(out) == {hashlib.sha256(new_src.read_bytes()).hexdigest()}


def cli_with_progress(argv: list[str]) -> tuple[int, str]:
    """cnn-export in this process, its progress lines and its error on one stderr."""
    from cnnedge.cli._run import run_cli
    from cnnedge.cli.export import main

    err = io.StringIO()
    code = run_cli("cnn-export", lambda a: main(a, stdout=io.StringIO(), stderr=err), argv, stderr=err)
    return code, err.getvalue()
