"""Hostile paths and hostile ONNX files: refused quickly, in one line, with bounded memory.

Every run that could hang or eat memory if the guard broke runs in a subprocess under a
timeout and an address-space limit. Its peak memory is the child's own VmHWM, read at exit
(``ru_maxrss`` of a child forked from this test process would include the pages it inherited).
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from test_runtime_models import models, write_images  # noqa: E402

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30
AS_LIMIT = 6 << 30  # a runaway read or allocation fails here instead of taking the shared machine's memory
MAX_RSS_MB = 1500
_PEAK = ("import atexit, os\n"
         "def _peak():\n"
         "    with open('/proc/self/status') as f:\n"
         "        kb = next(ln.split()[1] for ln in f if ln.startswith('VmHWM'))\n"
         "    with open(os.environ['PEAK_FILE'], 'w') as f:\n"
         "        f.write(kb)\n"
         "atexit.register(_peak)\n")


class Ran:
    def __init__(self, rc: int, out: str, err: str, seconds: float, rss_mb: float) -> None:
        self.rc, self.out, self.err, self.seconds, self.rss_mb = rc, out, err, seconds, rss_mb

    def __repr__(self) -> str:
        return f"rc={self.rc} {self.seconds:.1f}s {self.rss_mb:.0f}MB\nstdout: {self.out[-2000:]}\nstderr: {self.err[-3000:]}"


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def run(code: str, *args: str, timeout: float = TIMEOUT_S,
        on_output: Callable[[subprocess.Popen], None] | None = None) -> Ran:
    """Run Python ``code`` with ``args`` and the worktree's cnnedge, under a timeout and RLIMIT_AS;
    kill it if it overruns (the caller's assertion then fails on the time). ``on_output(proc)``
    is called once the child has written its first stdout line."""
    fd, peak_file = tempfile.mkstemp(prefix="peak-")
    os.close(fd)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", "PEAK_FILE": peak_file}
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", _PEAK + code, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, preexec_fn=_limit, cwd=str(ROOT))
    bufs: dict[str, list[bytes]] = {"out": [], "err": []}
    first = threading.Event()

    def pump(stream, key: str) -> None:
        for line in stream:
            bufs[key].append(line)
            if key == "out":
                first.set()

    threads = [threading.Thread(target=pump, args=(p.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(p.stderr, "err"), daemon=True)]
    for t in threads:
        t.start()
    called = False
    while p.poll() is None:
        if on_output is not None and not called and first.is_set():
            called = True
            on_output(p)
        if time.monotonic() - t0 > timeout:
            p.kill()
            p.wait()
            break
        time.sleep(0.02)
    seconds = time.monotonic() - t0
    for t in threads:
        t.join(5)
    peak = Path(peak_file).read_text()
    os.unlink(peak_file)
    dec = lambda k: b"".join(bufs[k]).decode("utf-8", "backslashreplace")  # noqa: E731
    return Ran(p.returncode, dec("out"), dec("err"), seconds, int(peak) / 1024 if peak else float("inf"))


def _cli(tool: str) -> str:
    return f"import sys\nfrom cnnedge.cli.{tool} import console\nsys.argv[0] = 'cnn-{tool}'\nconsole()\n"


def infer(*argv: str, **kw) -> Ran:
    """cnn-infer on this file's card-less models: the preprocessing is assumed, as they test other things."""
    return run(_cli("infer"), *argv, "--assume-preprocessing", **kw)


def bench(*argv: str, **kw) -> Ran:
    return run(_cli("bench"), *argv, **kw)


def assert_quick_and_small(r: Ran) -> None:
    assert r.seconds < TIMEOUT_S and r.rss_mb < MAX_RSS_MB, r
    assert "Traceback" not in r.err, r


def error_lines(r: Ran) -> list[str]:
    return [ln for ln in r.err.splitlines() if ": error:" in ln]


@pytest.fixture()
def hostile(tmp_path: Path) -> dict[str, Path]:
    """A FIFO and a link to /dev/zero, both named like images."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    return {"fifo": fifo, "zero": zero}


# --- the reader itself ------------------------------------------------------------------------------

def test_read_file_refuses_non_regular_files_without_reading(hostile):
    """In a subprocess: a broken guard would block (FIFO) or read until memory runs out (/dev/zero)."""
    code = ("import sys\nfrom cnnedge.imaging.errors import ImageError\nfrom cnnedge.imaging.files import read_file\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        read_file(p)\n        print('READ', p)\n"
            "    except ImageError as e:\n        print(e.kind, '|', e)\n")
    r = run(code, str(hostile["fifo"]), str(hostile["zero"]))
    assert r.rc == 0, r
    assert_quick_and_small(r)
    lines = r.out.splitlines()
    assert lines[0].startswith("not a regular file | ") and "pipe.png" in lines[0] and "a FIFO" in lines[0], r
    assert lines[1].startswith("not a regular file | ") and "/dev/zero" in lines[1] and "character device" in lines[1]


def test_a_fifo_swapped_in_after_the_stat_cannot_block(hostile, tmp_path):
    """The race the O_NONBLOCK open closes: ``stat`` saw a regular file, ``open`` gets a FIFO.
    The stat is replaced by a regular file's to make the race happen every time."""
    regular = tmp_path / "real.png"
    regular.write_bytes(b"x" * 10)
    code = ("import os, sys\nfrom cnnedge.imaging import files\nfrom cnnedge.imaging.errors import ImageError\n"
            "files.stat_path = lambda p: os.stat(sys.argv[2])\n"
            "try:\n    files.read_file(sys.argv[1])\n    print('READ')\n"
            "except ImageError as e:\n    print(e)\n")
    r = run(code, str(hostile["fifo"]), str(regular), timeout=15)
    assert r.rc == 0 and "not a regular file (a FIFO)" in r.out, r


def test_reads_are_capped_whatever_fstat_says(tmp_path):
    from cnnedge.imaging.errors import ImageError
    from cnnedge.imaging.files import read_file

    status = read_file("/proc/self/status")  # a regular file whose fstat size is 0
    assert os.stat("/proc/self/status").st_size == 0 and b"VmRSS" in status
    with pytest.raises(ImageError, match="more than 64 bytes"):
        read_file("/proc/self/status", limit=64)
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 1000)
    with pytest.raises(ImageError, match="1000 bytes is over the 999-byte file limit"):
        read_file(big, limit=999)
    assert read_file(big, limit=1000) == b"\0" * 1000


# --- through cnn-infer and the Python API -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_source_that_is_not_a_regular_file_is_refused_in_one_line(hostile, kind):
    """Image paths given with --source are a list of files: the bad one is a skipped row, named once."""
    bad = hostile[kind]
    r = infer(str(models()["onnx"]), "--source", str(bad))
    assert_quick_and_small(r)
    named = [ln for ln in r.err.splitlines() if str(bad) in ln]
    assert r.rc == 1 and len(named) == 1 and "not a regular file" in named[0], r
    assert "0 done; 0 failed; 1 skipped (1 not a regular file)" in r.err and "nothing could be processed" in r.err
    # any other source spec that is not a regular file or folder is refused when it opens
    video = bad.with_suffix(".mp4")
    os.rename(bad, video)
    r = infer(str(models()["onnx"]), "--source", str(video))
    assert_quick_and_small(r)
    lines = error_lines(r)
    assert r.rc == 2 and len(lines) == 1 and str(video) in lines[0] and "not a regular file" in lines[0], r


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_list_file_entry_that_is_not_a_regular_file_is_a_skipped_row(hostile, kind, tmp_path):
    bad = hostile[kind]
    good, _ = write_images(tmp_path / "imgs", 2)
    lst = tmp_path / "list.txt"
    lst.write_text(f"{good[0]}\n{bad.name}\n{good[1]}\n")
    out = tmp_path / "out.jsonl"
    r = infer(str(models()["onnx"]), "--source", str(lst), "--json", str(out), "--batch", "2")
    assert_quick_and_small(r)
    assert r.rc == 0, r
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [Path(x["path"]).name for x in rows] == [good[0].name, bad.name, good[1].name]  # the list's order
    assert "not a regular file" in rows[1]["error"] and "error" not in rows[0] and "error" not in rows[2]
    assert [ln for ln in r.err.splitlines() if bad.name in ln] == [f"skipped {bad}: {rows[1]['error']}"], r
    assert "2 done; 0 failed; 1 skipped (1 not a regular file)" in r.err, r


def test_list_file_that_is_a_fifo_is_refused(tmp_path):
    lst = tmp_path / "list.txt"
    os.mkfifo(lst)
    r = infer(str(models()["onnx"]), "--source", str(lst))
    assert_quick_and_small(r)
    lines = error_lines(r)
    assert r.rc == 2 and len(lines) == 1 and "list.txt" in lines[0] and "FIFO" in lines[0], r


def test_predict_refuses_a_fifo_and_a_dev_zero_link(hostile):
    code = ("import sys\nfrom cnnedge.runtime import Classifier\nfrom cnnedge.errors import DataError\n"
            "clf = Classifier(sys.argv[1])\n"
            "for p in sys.argv[2:]:\n"
            "    try:\n        clf.predict(p)\n        print('PREDICTED', p)\n"
            "    except DataError as e:\n        print(type(e).__name__, '|', e)\n")
    r = run(code, str(models()["onnx"]), str(hostile["fifo"]), str(hostile["zero"]))
    assert r.rc == 0, r
    assert_quick_and_small(r)
    lines = r.out.splitlines()
    assert len(lines) == 2 and all(ln.startswith("ImageError | ") and "not a regular file" in ln for ln in lines), r


def test_folder_reports_every_unused_entry_once_with_its_reason(hostile, tmp_path):
    d = hostile["fifo"].parent / "photos"
    good, _ = write_images(d, 3)
    os.rename(hostile["fifo"], d / "pipe.png")
    os.rename(hostile["zero"], d / "zero.png")
    (d / "dangling.png").symlink_to(d / "gone.png")
    (d / "loop_a.png").symlink_to(d / "loop_b.png")
    (d / "loop_b.png").symlink_to(d / "loop_a.png")
    (d / ".hidden.png").write_bytes(good[0].read_bytes())
    (d / ".cache").mkdir()
    (d / ".cache" / "x.png").write_bytes(good[0].read_bytes())  # inside a hidden folder: not listed
    (d / "notes.txt").write_text("not an image")
    (d / "up").symlink_to(d)  # a link to a folder (here its own parent) is not followed
    out, csv_out = tmp_path / "out.jsonl", tmp_path / "out.csv"
    r = infer(str(models()["onnx"]), "--source", str(d), "--json", str(out), "--csv", str(csv_out), "--quiet")
    assert_quick_and_small(r)
    assert r.rc == 0, r
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    errors = {Path(x["path"]).name: x["error"] for x in rows if "error" in x}
    assert sorted(Path(x["path"]).name for x in rows if "error" not in x) == sorted(p.name for p in good)
    assert len(rows) == len(good) + len(errors)  # each entry once
    expect = {"pipe.png": "not a regular file (a FIFO)", "zero.png": "a link to a character device, /dev/zero",
              "dangling.png": "broken link", "loop_a.png": "link loop", "loop_b.png": "link loop",
              ".hidden.png": "hidden", ".cache": "hidden", "notes.txt": "not named like an image",
              "up": "a link to a folder"}
    assert set(errors) == set(expect), errors
    for name, why in expect.items():
        assert why in errors[name], (name, errors[name])
    assert len(csv_out.read_text().splitlines()) == 1 + len(rows)
    assert ("3 done; 0 failed; 9 skipped (2 hidden, 1 broken link, 2 link loop, 1 not an image, "
            "3 not a regular file)") in r.err, r
    for name in expect:  # --quiet still names each one, once
        assert sum(f"/{name}: " in ln for ln in r.err.splitlines()) == 1, (name, r.err)


def test_ctrl_c_ends_a_long_run(tmp_path):
    good, _ = write_images(tmp_path / "imgs", 1)
    lst = tmp_path / "long.txt"
    lst.write_text(f"{good[0]}\n" * 200_000)  # minutes of work

    def interrupt(p: subprocess.Popen) -> None:
        p.send_signal(signal.SIGINT)

    r = infer(str(models()["onnx"]), "--source", str(lst), "--batch", "4", timeout=60, on_output=interrupt)
    assert r.seconds < 45 and "interrupted" in r.err and "Traceback" not in r.err, r
    assert r.rc in (0, 130), r  # 130 once an interrupted run exits as interrupted


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("suffix", [".onnx", ".keras"])
def test_model_path_that_is_not_a_regular_file_is_refused(hostile, kind, suffix, tmp_path):
    model = hostile[kind].rename(hostile[kind].with_suffix(suffix))
    write_images(tmp_path / "imgs", 1)
    runs = [infer(str(model), "--source", str(tmp_path / "imgs")), bench(str(model)), run(_cli("export"), str(model))]
    for r in runs:
        assert_quick_and_small(r)
        lines = error_lines(r)
        assert r.rc == 2 and len(lines) == 1 and str(model) in lines[0] and "not a regular file" in lines[0], r


# --- hostile ONNX files ----------------------------------------------------------------------------

def _classifier_onnx(path: Path, *, bomb: tuple[int, ...] | None = None, flatten_hw: int | None = None,
                     card_hw: int = 8, dynamic_hw: bool = False, batch: int | None = None,
                     raw_card_hw: int | None = None) -> Path:
    """A small uint8 NHWC classifier built with onnx.helper, with a model card.

    ``bomb``: a ConstantOfShape of that shape feeds the output (ORT must allocate it at run);
    ``flatten_hw``: the graph reshapes its input to flatten_hw x flatten_hw x 3, so any other
    size fails inside ORT; ``card_hw``: the input size the card claims; ``dynamic_hw``: the
    graph takes any height and width (its size then comes from the card); ``batch``: a fixed
    batch size; ``raw_card_hw``: written into the card's JSON past the card class's checks."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cnnedge.artifact.card import ONNX_KEY, InputSpec, ModelCard, Preprocess

    rng = np.random.default_rng(0)
    hw = None if dynamic_hw else card_hw
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)]
    inits = []
    if flatten_hw:
        n = flatten_hw * flatten_hw * 3
        inits += [numpy_helper.from_array(np.array([0, n], np.int64), "flat_shape"),
                  numpy_helper.from_array(rng.normal(size=(n, 10)).astype(np.float32) / n, "w")]
        nodes += [helper.make_node("Reshape", ["xf", "flat_shape"], ["flat"]),
                  helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    else:
        inits += [numpy_helper.from_array(rng.normal(size=(3, 10)).astype(np.float32), "w")]
        nodes += [helper.make_node("ReduceMean", ["xf"], ["m"], axes=[1, 2], keepdims=0),
                  helper.make_node("MatMul", ["m", "w"], ["logits"])]
    last = "logits"
    if bomb:
        inits.append(numpy_helper.from_array(np.array(bomb, np.int64), "bomb_shape"))
        nodes += [helper.make_node("ConstantOfShape", ["bomb_shape"], ["big"],
                                   value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
                  helper.make_node("ReduceMax", ["big"], ["bmax"], keepdims=0),
                  helper.make_node("Add", ["logits", "bmax"], ["logits2"])]
        last = "logits2"
    nodes.append(helper.make_node("Softmax", [last], ["y"], axis=1))
    graph = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("x", TensorProto.UINT8,
                                                                               [batch or "N", hw, hw, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch or "N", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    card = ModelCard(name=path.stem, classes=tuple(str(i) for i in range(10)),
                     input=InputSpec(card_hw, card_hw, 3, "NHWC", "uint8", "RGB"),
                     preprocess=Preprocess(resize="stretch", in_graph=True), output="probabilities")
    text = card.to_json()
    if raw_card_hw is not None:
        data = json.loads(text)
        data["input"]["height"] = data["input"]["width"] = raw_card_hw
        text = json.dumps(data)
    m.metadata_props.add(key=ONNX_KEY, value=text)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _one_line_failure(r: Ran, name: str, *words: str) -> str:
    assert_quick_and_small(r)
    lines = error_lines(r)
    assert r.rc == 1 and len(lines) == 1 and name in lines[0], r
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_honest_helper_model_runs(tmp_path):
    """The builder's graphs are sound: without the hostile part the same model classifies."""
    from cnnedge.runtime import Classifier

    for kw in ({}, {"flatten_hw": 8}, {"dynamic_hw": True}):
        with Classifier(_classifier_onnx(tmp_path / "ok.onnx", **kw), "ort-cpu") as clf:
            pred = clf.predict(np.full((20, 20, 3), 128, np.uint8))
            assert 0 <= pred.index < 10 and 0 < pred.score <= 1


def test_constant_of_shape_bomb_is_one_line_in_cnn_infer_and_cnn_bench(tmp_path):
    model = _classifier_onnx(tmp_path / "bomb.onnx", bomb=(100_000, 100_000, 10))  # 400 GB of float32
    write_images(tmp_path / "imgs", 2)
    r = infer(str(model), "--source", str(tmp_path / "imgs"), "--backend", "ort-cpu")
    line = _one_line_failure(r, "bomb.onnx", "400 GB", "ConstantOfShape")
    assert "Non-zero status" not in line and "onnxruntime_src" not in line
    r = bench(str(model), "--backends", "ort-cpu", "--batch", "1", "--iters", "3", "--warmup", "1", "--repeats", "1")
    _one_line_failure(r, "bomb.onnx", "400 GB", "ConstantOfShape")
    # predict's per-frame path runs through a buffer bound to the session: mapped the same way
    code = ("import sys, numpy as np\nfrom cnnedge.runtime import Classifier\nfrom cnnedge.errors import ModelLoadError\n"
            "clf = Classifier(sys.argv[1], 'ort-cpu', warmup=False)\n"
            "try:\n    clf.predict(np.zeros((8, 8, 3), np.uint8))\n"
            "except ModelLoadError as e:\n    print(e)\n")
    r = run(code, str(model))
    assert_quick_and_small(r)
    assert r.rc == 0 and "400 GB" in r.out and "ConstantOfShape" in r.out and len(r.out.splitlines()) == 1, r


def test_card_that_lies_about_the_input_size_is_one_line(tmp_path):
    """The graph only takes 8x8 (it reshapes to 8*8*3), its card says 16x16: ORT fails in the warm-up."""
    model = _classifier_onnx(tmp_path / "liar.onnx", flatten_hw=8, card_hw=16, dynamic_hw=True)
    write_images(tmp_path / "imgs", 2)
    r = infer(str(model), "--source", str(tmp_path / "imgs"), "--backend", "ort-cpu")
    _one_line_failure(r, "liar.onnx", "Reshape", "card")


def test_huge_declared_input_is_one_line_not_a_memory_error(tmp_path):
    """A graph that fixes a batch of 8 at 16384x16384 (what a card may claim at most): the warm-up
    or benchmark batch is 6.4 GB, which this test's address-space limit refuses at once, as a
    smaller machine would. The same size claimed by the card of a dynamic-size graph, and a card
    claiming more than a card may, are refused as well, each in one line naming the file."""
    from cnnedge.artifact.card import MAX_SIDE

    write_images(tmp_path / "imgs", 2)
    fixed = _classifier_onnx(tmp_path / "huge.onnx", card_hw=MAX_SIDE, batch=8)
    dynamic = _classifier_onnx(tmp_path / "huge_dyn.onnx", card_hw=MAX_SIDE, dynamic_hw=True, batch=8)
    beyond = _classifier_onnx(tmp_path / "huger.onnx", dynamic_hw=True, raw_card_hw=100_000)
    for model in (fixed, dynamic, beyond):
        r = infer(str(model), "--source", str(tmp_path / "imgs"), "--backend", "ort-cpu")
        _one_line_failure(r, model.name)
        r = bench(str(model), "--backends", "ort-cpu", "--batch", "8", "--iters", "3", "--warmup", "1",
                  "--repeats", "1")
        _one_line_failure(r, model.name)


@pytest.mark.timeout(60)  # in-process: a broken guard would block on the FIFO, and this ends it
def test_labels_file_that_is_a_fifo_dev_zero_or_binary_is_one_usage_error(hostile, tmp_path):
    """--labels is read like an image: a FIFO or a /dev/zero link is refused without a read (no block, no
    unbounded read), and bytes that are not UTF-8 are a usage error naming the flag, not a traceback."""
    from cnnedge.errors import UsageError
    from cnnedge.runtime.labels import read_labels

    binary = tmp_path / "labels.txt"
    binary.write_bytes(b"\xff\xfe\x00cat\ndog\n")
    cases = {"fifo": (hostile["fifo"], "not a regular file"), "zero": (hostile["zero"], "not a regular file"),
             "binary": (binary, "not UTF-8 text")}
    for name, (path, why) in cases.items():
        t0 = time.perf_counter()
        with pytest.raises(UsageError, match=f"--labels {path}: .*{why}"):
            read_labels(path)
        assert time.perf_counter() - t0 < 5, name


# --- round two: the runtime under hostile and careless input (issue 21) ----------------------------------

def _default_signals() -> None:
    """The child starts as a terminal's foreground job would: SIGINT and SIGTERM at their defaults
    (a background job of a non-interactive shell would inherit SIGINT ignored)."""
    _limit()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _plain_onnx(path: Path, *, outputs: tuple[tuple[int, ...], ...] = ((10,),), loop_trips: int | None = None,
                metadata: dict[str, str] | None = None, hw: tuple[int | None, int | None] = (8, 8),
                channels: int | None = 3, argmax: bool = False, nan: bool = False) -> Path:
    """A small uint8 NHWC classifier without a card (a third party's), built with onnx.helper.

    ``outputs``: each output's shape after the batch (its values come from one MatMul, reshaped);
    ``loop_trips``: a Loop of that many trips runs before the MatMul (a model that never finishes);
    ``metadata``: metadata_props; ``hw``/``channels``: the input's dims (None: dynamic);
    ``argmax``: the only output is an int64 ArgMax; ``nan``: every score is NaN."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    total = int(np.prod(outputs[0]))
    w = np.full((3, total), np.nan, np.float32) if nan else rng.normal(size=(3, total)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["xf"], ["m"], axes=[1, 2], keepdims=0)]
    feed = "m"
    if loop_trips is not None:
        body = helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
            "spin", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
        inits += [numpy_helper.from_array(np.array(loop_trips, np.int64), "trips"),
                  numpy_helper.from_array(np.array(True), "go")]
        nodes.append(helper.make_node("Loop", ["trips", "go", "m"], ["m_spun"], body=body))
        feed = "m_spun"
    nodes.append(helper.make_node("MatMul", [feed, "w"], ["flat"]))
    outs = []
    if argmax:
        nodes.append(helper.make_node("ArgMax", ["flat"], ["y0"], axis=1, keepdims=0))
        outs.append(helper.make_tensor_value_info("y0", TensorProto.INT64, ["N"]))
    if not argmax:
        inits.append(numpy_helper.from_array(np.array((-1,) + outputs[0], np.int64), "s0"))
        nodes.append(helper.make_node("Reshape", ["flat", "s0"], ["y0"]))
        outs.append(helper.make_tensor_value_info("y0", TensorProto.FLOAT, ["N", *outputs[0]]))
        for i in range(1, len(outputs)):  # every extra output is a copy of the first
            nodes.append(helper.make_node("Identity", ["y0"], [f"y{i}"]))
            outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["N", *outputs[0]]))
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", hw[0], hw[1], channels])
    m = helper.make_model(helper.make_graph(nodes, "plain", [x], outs, inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _patch(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    return path


def _usage_error(r: Ran, *words: str, rc: int = 2) -> str:
    assert_quick_and_small(r)
    lines = error_lines(r)
    assert r.rc == rc and len(lines) == 1, r
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _api(code: str, *args: str, **kw) -> Ran:
    return run("import sys, numpy as np\nfrom cnnedge.runtime import Classifier\n"
               "from cnnedge.errors import CnnEdgeError\n" + code, *args, **kw)


BENCH_QUICK = ("--backends", "ort-cpu", "--batch", "1", "--iters", "3", "--warmup", "1", "--repeats", "1")


@pytest.mark.parametrize("key", ["names", "cnnedge.card", "ZZKEY"])
def test_metadata_that_is_not_utf8_is_one_line_everywhere(tmp_path, key):
    """Item 1: a metadata key or value with bytes that are not UTF-8 (patched into the file)."""
    bad = b"\xff\xfe\xc0\x80"
    model = _plain_onnx(tmp_path / "m.onnx", metadata={"ZZKEY" if key == "ZZKEY" else key: "QQQQ"})
    _patch(model, b"ZZKEY" if key == "ZZKEY" else b"QQQQ", bad + (b"Y" if key == "ZZKEY" else b""))
    write_images(tmp_path / "imgs", 1)
    for r in (infer(str(model), "--source", str(tmp_path / "imgs")), bench(str(model), *BENCH_QUICK)):
        _usage_error(r, "m.onnx", "UTF-8", rc=1)
    r = _api("try:\n    Classifier(sys.argv[1])\nexcept CnnEdgeError as e:\n    print(type(e).__name__, '|', e)\n",
             str(model))
    assert r.rc == 0 and "ModelLoadError | " in r.out and "UTF-8" in r.out and "m.onnx" in r.out, r


def _spinner(tmp_path: Path) -> Path:
    return _plain_onnx(tmp_path / "spin.onnx", loop_trips=10 ** 15)


def test_a_warm_up_that_outlasts_the_load_timeout_is_refused(tmp_path):
    """Item 2: a Loop of 10^15 trips spins in the warm-up; --load-timeout-s ends it, naming the file."""
    model = _spinner(tmp_path)
    write_images(tmp_path / "imgs", 1)
    r = infer(str(model), "--source", str(tmp_path / "imgs"), "--load-timeout-s", "2")
    line = _usage_error(r, "spin.onnx", "--load-timeout-s", rc=1)
    assert r.seconds < 15, r
    assert "2 s" in line, line
    r = bench(str(model), *BENCH_QUICK, "--load-timeout-s", "2")
    _usage_error(r, "spin.onnx", "--load-timeout-s", rc=1)
    r = _api("try:\n    Classifier(sys.argv[1], load_timeout_s=1)\nexcept CnnEdgeError as e:\n    print(e)\n",
             str(model))
    assert r.rc == 0 and "load_timeout_s" in r.out and "spin.onnx" in r.out and r.seconds < 15, r


def _signal_after(sig: int, delay: float) -> Callable[[subprocess.Popen], None]:
    def send(p: subprocess.Popen) -> None:
        time.sleep(delay)
        p.send_signal(sig)
    return send


def _run_default_signals(code: str, *args: str, sig: int, delay: float | None = None,
                         when: Callable[[], bool] | None = None, wait: float = 180, timeout: float = 40,
                         repeat: int = 1) -> Ran:
    """Like :func:`run`, with default signal handling, sending ``sig`` ``delay`` s after the start, or, with
    ``when``, as soon as ``when()`` is true (polled while the child runs, for at most ``wait`` s: an event,
    not a timer, so a loaded machine only makes it wait longer). ``Ran.seconds`` counts from the signal;
    it is infinite when no signal was sent (the child ended first, or ``when()`` never came true)."""
    assert (delay is None) != (when is None), "delay or when, not both"
    fd, peak_file = tempfile.mkstemp(prefix="peak-")
    os.close(fd)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PEAK_FILE": peak_file,
           "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", _PEAK + code, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, preexec_fn=_default_signals, cwd=str(ROOT))
    sent: list[float] = []
    done = threading.Event()

    def send() -> None:  # ``repeat`` times, 1 ms apart, as `timeout` and some supervisors do
        for i in range(repeat):
            if p.poll() is None:
                p.send_signal(sig)
                sent.append(time.monotonic())
                if i + 1 < repeat:
                    time.sleep(0.001)

    def watch() -> None:
        deadline = t0 + wait
        while not done.is_set() and p.poll() is None and time.monotonic() < deadline:
            if when():
                send()
                return
            done.wait(0.02)

    signaller = threading.Timer(delay, send) if when is None else threading.Thread(target=watch, daemon=True)
    signaller.start()
    try:
        out, err = p.communicate(timeout=timeout if when is None else wait + timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    done.set()
    if when is None:
        signaller.cancel()
    signaller.join()
    end = time.monotonic()
    after = end - sent[0] if sent else float("inf")
    peak = Path(peak_file).read_text()
    os.unlink(peak_file)
    ran = Ran(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), after,
              int(peak) / 1024 if peak else float("inf"))
    return ran


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_end_a_model_that_never_finishes(tmp_path, sig, code):
    """Item 2 and 8: the Loop spins inside ONNX Runtime (the warm-up of cnn-infer, the timing loop of
    cnn-bench); the signal ends it within seconds, in one line, with 130 (Ctrl-C) or 143 (SIGTERM)."""
    model = _spinner(tmp_path)
    write_images(tmp_path / "imgs", 1)
    for tool, argv in (("infer", (str(model), "--source", str(tmp_path / "imgs"), "--assume-preprocessing")),
                       ("bench", (str(model), *BENCH_QUICK))):
        r = _run_default_signals(_cli(tool), *argv, sig=sig, delay=4)
        assert r.rc == code and r.seconds < 3, r
        assert "Traceback" not in r.err and "interrupted" in r.err.lower(), r


def test_force_never_renames_over_a_device_or_a_fifo(tmp_path):
    """Item 3: --force outputs that are a character device (made here with mknod) or a FIFO are refused
    (exit 2 naming the flag), and the node is still what it was."""
    import stat

    model = _plain_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "imgs", 1)
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for node in (dev, fifo):
        for flag in ("--json", "--csv"):
            r = infer(str(model), "--source", str(tmp_path / "imgs"), flag, str(node), "--force")
            _usage_error(r, flag, str(node), "not a regular file")
        for flag in ("--json", "--markdown"):
            r = bench(str(model), *BENCH_QUICK, flag, str(node), "--force")
            _usage_error(r, flag, str(node), "not a regular file")
    assert stat.S_ISCHR(os.stat(dev).st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_an_output_that_names_an_input_is_refused_before_anything_runs(tmp_path):
    """Item 3: --json naming the model or the image being classified, even with --force."""
    model = _plain_onnx(tmp_path / "m.onnx")
    imgs, _ = write_images(tmp_path / "imgs", 1)
    before = {p: p.read_bytes() for p in (model, imgs[0])}
    for out in (model, imgs[0]):
        r = infer(str(model), "--source", str(imgs[0]), "--json", str(out), "--force")
        _usage_error(r, "--json", "input")
        r = infer(str(model), "--source", str(tmp_path / "imgs"), "--csv", str(out), "--force")
        _usage_error(r, "--csv", "input")
    r = bench(str(model), *BENCH_QUICK, "--json", str(model), "--force")
    _usage_error(r, "--json", "input")
    assert {p: p.read_bytes() for p in before} == before


def test_crop_pct_near_zero_is_a_usage_error(tmp_path):
    """Item 4: the resize before the crop is bounded by the pixel limit: exit 2 naming the flag."""
    model = _plain_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "imgs", 1)
    for v in ("0.0001", "1e-9"):
        r = infer(str(model), "--source", str(tmp_path / "imgs"), "--crop-pct", v)
        _usage_error(r, "--crop-pct")
    r = _api("try:\n    Classifier(sys.argv[1], crop_pct=1e-9)\nexcept CnnEdgeError as e:\n"
             "    print(type(e).__name__, '|', e)\n", str(model))
    assert r.rc == 0 and r.out.startswith("UsageError | ") and "crop_pct" in r.out, r


def test_a_huge_batch_is_a_usage_error_naming_batch(tmp_path):
    """Item 5: bounded by memory, exit 2 naming --batch."""
    model = _plain_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "imgs", 1)
    for v in ("10000000000", "99999999999999999999"):
        _usage_error(infer(str(model), "--source", str(tmp_path / "imgs"), "--batch", v), "--batch")
        _usage_error(bench(str(model), "--backends", "ort-cpu", "--batch", v, "--iters", "2", "--warmup", "1",
                           "--repeats", "1"), "--batch")


@pytest.mark.parametrize("outputs", [((5, 2),), ((10,), (10,))])
def test_outputs_that_are_not_a_classifiers_are_refused(tmp_path, outputs):
    """Item 6: an [N,5,2] output, and a model of two outputs: refused naming the file."""
    model = _plain_onnx(tmp_path / "m.onnx", outputs=outputs)
    write_images(tmp_path / "imgs", 1)
    line = _usage_error(infer(str(model), "--source", str(tmp_path / "imgs")), "m.onnx", rc=1)
    assert "output" in line, line


def test_squeezable_outputs_run(tmp_path):
    """Item 10: an [N,10,1,1] output is a classifier's."""
    from cnnedge.runtime import Classifier

    with Classifier(_plain_onnx(tmp_path / "m.onnx", outputs=((10, 1, 1),))) as clf:
        assert clf.card.num_classes == 10 and 0 <= clf.predict(np.zeros((8, 8, 3), np.uint8)).index < 10


def test_normalised_range_beyond_float32_is_a_usage_error(tmp_path):
    """Item 7: --scale 1e39, --std 1e-300, --scale 1e300: exit 2 naming the flag, in the API too."""
    from cnnedge.errors import UsageError
    from cnnedge.runtime.describe import check_description

    model = _plain_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "imgs", 1)
    for flag, v in (("--scale", "1e39"), ("--scale", "1e300"), ("--std", "1e-300"), ("--mean", "1e39")):
        _usage_error(infer(str(model), "--source", str(tmp_path / "imgs"), flag, v), flag, "float32")
    with pytest.raises(UsageError, match="^scale: .*float32"):
        check_description({"scale": 1e39})
    with pytest.raises(UsageError, match="^std: .*float32"):
        check_description({"std": 1e-300, "scale": 1.0})
    assert check_description({"scale": 1 / 255, "std": (0.229, 0.224, 0.225)})["std"] == (0.229, 0.224, 0.225)


def test_a_nan_score_never_reaches_a_sink_as_a_prediction(tmp_path):
    """Item 7: a row of NaN scores is a failed row that says so, in --json and in the summary."""
    model = _plain_onnx(tmp_path / "nan.onnx", nan=True)
    write_images(tmp_path / "imgs", 2)
    out = tmp_path / "out.jsonl"
    r = infer(str(model), "--source", str(tmp_path / "imgs"), "--json", str(out))
    assert_quick_and_small(r)
    assert r.rc == 1 and "0 done; 2 failed" in r.err and "nan" not in r.out.lower(), r
    rows = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    partial = tmp_path / "out.partial.jsonl"
    rows = rows or [json.loads(x) for x in partial.read_text().splitlines()]
    assert len(rows) == 2 and all("non-finite" in x["error"] and "score" not in x for x in rows), rows


def _writing(target: Path) -> Callable[[], bool]:
    """True once the run's staged output for ``target`` (``.<name>.run-*``, see staging.StagedFile) holds
    results: from then on an interrupted run has a partial file to keep (nothing written: nothing kept)."""
    def writing() -> bool:
        try:
            return any(f.stat().st_size > 0 for f in target.parent.glob(f".{target.name}.run-*"))
        except FileNotFoundError:  # the staged file went between the listing and the stat
            return False
    return writing


def _long_list(tmp_path: Path) -> Path:
    good, _ = write_images(tmp_path / "imgs", 1)
    lst = tmp_path / "long.txt"
    lst.write_text(f"{good[0]}\n" * 200_000)
    return lst


@pytest.mark.parametrize("sig,repeat,code", [(signal.SIGTERM, 1, 143), (signal.SIGHUP, 1, 129),
                                             (signal.SIGTERM, 2, 143), (signal.SIGINT, 2, 130)])
def test_sigterm_stops_like_ctrl_c(tmp_path, sig, repeat, code):
    """Item 8: summary printed, the old output untouched, the partial kept beside it, exit 143. Issue 33: SIGHUP
    (a closed terminal or ssh session) does the same with 129, and a second signal 1 ms after the first (two
    Ctrl-C, or the two SIGTERMs of `timeout` and some supervisors) only hurries the same clean stop."""
    model = _plain_onnx(tmp_path / "m.onnx")
    lst = _long_list(tmp_path)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    r = _run_default_signals(_cli("infer"), str(model), "--assume-preprocessing", "--source", str(lst), "--json",
                             str(out), "--force",
                             "--quiet", "--batch", "4", sig=sig, when=_writing(out), repeat=repeat)
    assert r.rc == code and r.seconds < 5 and "Traceback" not in r.err, r
    assert "interrupted" in r.err and "done" in r.err, r
    assert out.read_text() == "old\n"
    partial = tmp_path / "out.partial.jsonl"
    assert partial.exists() and json.loads(partial.read_text().splitlines()[0])["path"], r


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_run_stops_when_the_embedding_program_asks(tmp_path):
    """Item 8: run(stop=event) ends a run from another thread like Ctrl-C does."""
    from cnnedge.runtime import Classifier, run as run_all
    from cnnedge.runtime.sinks import JsonlSink

    model = _plain_onnx(tmp_path / "m.onnx")
    lst = _long_list(tmp_path)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    with Classifier(model) as clf:
        summary = run_all(str(lst), clf, [JsonlSink(tmp_path / "o.jsonl")], batch=4, stop=stop)
    assert summary.interrupted and summary.exit_code == 130 and time.monotonic() - t0 < 20
    assert summary.stats.done > 0 and summary.partial == [tmp_path / "o.partial.jsonl"]


def test_a_users_partial_file_is_never_overwritten(tmp_path):
    """Item 9: out.partial.jsonl is the user's; the interrupted run's partial goes to a free name."""
    model = _plain_onnx(tmp_path / "m.onnx")
    lst = _long_list(tmp_path)
    mine = tmp_path / "out.partial.jsonl"
    mine.write_text("mine\n")
    r = _run_default_signals(_cli("infer"), str(model), "--assume-preprocessing", "--source", str(lst), "--json",
                             str(tmp_path / "out.jsonl"), "--quiet", "--batch", "4", sig=signal.SIGINT,
                             when=_writing(tmp_path / "out.jsonl"))
    assert r.rc == 130 and r.seconds < 40, r  # seconds: inf if the run never wrote a result, or ended unsignalled
    assert mine.read_text() == "mine\n"
    kept = [p for p in tmp_path.glob("out.partial*.jsonl") if p != mine]
    assert len(kept) == 1 and kept[0].name in r.err, r


@pytest.mark.parametrize("case", ["dynamic_channels", "one_class", "argmax", "huge_fixed"])
def test_model_messages_name_the_file_and_what_is_wrong(tmp_path, case):
    """Item 10: misleading messages about the model, each one line naming the file."""
    write_images(tmp_path / "imgs", 1)
    extra: tuple[str, ...] = ()
    if case == "dynamic_channels":
        model = _plain_onnx(tmp_path / "m.onnx", hw=(None, None), channels=None)
        extra, words, rc = ("--input-size", "16x16"), ("channels",), 1
    elif case == "one_class":
        model, words, rc = _plain_onnx(tmp_path / "m.onnx", outputs=((1,),)), ("1 class",), 1
    elif case == "argmax":
        model, words, rc = _plain_onnx(tmp_path / "m.onnx", argmax=True), ("int64",), 1
    else:
        model, words, rc = _plain_onnx(tmp_path / "m.onnx", hw=(100_000, 8)), ("100000",), 1
    r = infer(str(model), "--source", str(tmp_path / "imgs"), *extra)
    line = _usage_error(r, "m.onnx", *words, rc=rc)
    assert "nothing says the image size" not in line and "classes must name" not in line, line


def test_a_batch_too_large_for_memory_is_not_called_a_hostile_model(tmp_path):
    """Item 10: ORT cannot allocate a batch of 400 here (the address-space cap); batch 1 runs, so the line
    says to lower --batch. The model spreads each image over a 3x4,000,000 float32 Expand (48 MB)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(_plain_onnx(tmp_path / "big.onnx")))
    g = m.graph
    g.initializer.extend([numpy_helper.from_array(np.array([1, 1, 4_000_000], np.int64), "bshape"),
                          numpy_helper.from_array(np.array([2], np.int64), "ax")])
    g.node.extend([helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]),
                   helper.make_node("Expand", ["m3", "bshape"], ["wide"]),
                   helper.make_node("ReduceMax", ["wide"], ["wmax"], axes=[2], keepdims=0),
                   helper.make_node("ReduceMax", ["wmax"], ["s"], axes=[1], keepdims=1),
                   helper.make_node("Add", [g.output[0].name, "s"], ["y_big"])])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("y_big", TensorProto.FLOAT, ["N", 10]))
    onnx.save(m, str(tmp_path / "big.onnx"))
    r = bench(str(tmp_path / "big.onnx"), "--backends", "ort-cpu", "--batch", "400", "--iters", "2", "--warmup",
              "1", "--repeats", "1")
    line = _usage_error(r, "big.onnx", "--batch", rc=1)
    assert "hostile model, not one to run" not in line, line


def test_argparse_errors_are_short(tmp_path):
    """Item 10: a bad flag is a usage line, the error and a pointer to --help: not 17 lines."""
    for tool in ("infer", "bench", "export"):
        r = run(_cli(tool), "m.onnx", "--no-such-flag")
        assert r.rc == 2 and len(r.err.strip().splitlines()) <= 3 and "--help" in r.err, r


@pytest.mark.parametrize("image", ["none", "five_channels", "four_d", "one_d"])
def test_predict_refuses_odd_arrays_with_its_own_exception(tmp_path, image):
    """Item 10: UsageError for arrays that are not images, never cv2.error or TypeError."""
    from cnnedge.errors import UsageError
    from cnnedge.runtime import Classifier

    arr = {"none": None, "five_channels": np.zeros((8, 8, 5), np.uint8), "four_d": np.zeros((1, 8, 8, 3), np.uint8),
           "one_d": np.zeros(10, np.uint8)}[image]
    with Classifier(_plain_onnx(tmp_path / "m.onnx"), crop_pct=0.5) as clf, pytest.raises(UsageError) as e:
        clf.predict(arr)
    assert "empty" not in str(e.value) or image != "one_d", e.value
