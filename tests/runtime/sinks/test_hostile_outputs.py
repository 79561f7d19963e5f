"""cnn-infer's and cnn-bench's outputs and flags, and the Python API, under careless and hostile input (issue 33):
``-`` for stdout, a reader that goes away, file names that would forge lines, two outputs on one file, numbers
beyond what the machine can do, list and truth files that are not text, and predict_batch given what is not a
batch. Each case is refused in one line (exit 2, a cnnedge exception in Python) or ends quietly."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnedge.cli import run_cli
from cnnedge.cli.infer import main
from cnnedge.errors import CnnEdgeError, UsageError

from test_hostile_reads import assert_quick_and_small, error_lines, infer, run  # noqa: E402
from test_runtime_models import models, write_images  # noqa: E402

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[3]
INFER = "import sys; from cnnedge.cli.infer import console; sys.argv[0] = 'cnn-infer'; console()"
BENCH = "import sys; from cnnedge.cli.bench import console; sys.argv[0] = 'cnn-bench'; console()"
BENCH_QUICK = ("--backends", "ort-cpu", "--batch", "1", "--iters", "3", "--warmup", "1", "--repeats", "1")


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_cli("cnn-infer", lambda a: main(a, out, err), list(argv), stderr=err)
    return code, out.getvalue(), err.getvalue()


def bench_cli(*argv: str) -> tuple[int, str, str]:
    from cnnedge.cli.bench import main as bench_main

    out, err = io.StringIO(), io.StringIO()
    code = run_cli("cnn-bench", lambda a: bench_main(a, out, err), list(argv), stderr=err)
    return code, out.getvalue(), err.getvalue()


def one_error(err: str, *words: str) -> str:
    lines = [ln for ln in err.splitlines() if ": error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    write_images(d, 6)
    return d


def one_image_list(folder: Path, n: int) -> Path:
    """A list file in ``folder`` naming one small image ``n`` times."""
    good, _ = write_images(folder, 1)
    lst = folder / "list.txt"
    lst.write_text(f"{good[0]}\n" * n)
    return lst


@pytest.fixture(scope="module")
def long_list(tmp_path_factory) -> Path:
    """Minutes of work, so the run is going when its reader leaves."""
    return one_image_list(tmp_path_factory.mktemp("long"), 20_000)


# --- `-` is stdout ------------------------------------------------------------------------------------------

def test_json_dash_writes_the_rows_to_stdout_and_no_file(photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(str(models()["onnx"]), "--source", str(photos), "--json", "-")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]  # stdout is JSON Lines only, no result lines
    assert len(rows) == 6 and all("label" in r for r in rows)
    assert list(tmp_path.iterdir()) == []  # no file named '-', no '-.partial'


def test_csv_dash_writes_the_rows_to_stdout_and_eval_goes_to_stderr(photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(str(models()["onnx"]), "--source", str(photos), "--csv", "-", "--eval")
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == 6 and all(r["path"] and r["label"] for r in table)
    assert "eval: 6 images, accuracy" in err
    assert list(tmp_path.iterdir()) == []


def test_json_and_csv_both_to_stdout_are_refused(photos):
    code, out, err = cli(str(models()["onnx"]), "--source", str(photos), "--json", "-", "--csv", "-")
    assert code == 2 and out == ""
    one_error(err, "--json - and --csv -", "stdout")


@pytest.mark.parametrize("extra", [(), ("--json", "-"), ("--csv", "-")], ids=["lines", "json", "csv"])
def test_a_reader_that_goes_away_ends_the_run_quietly(long_list, tmp_path, extra):
    """`cnn-infer ... | head -1`: the reader takes one line and closes the pipe; the run ends at its next batch
    with exit status 141 (a shell's for SIGPIPE), its summary, and no traceback or 'Broken pipe' noise."""
    models()
    p = subprocess.Popen([sys.executable, "-c", INFER, str(models()["onnx"]), "--source", str(long_list), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path),
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert p.stdout.readline()  # the first line: the run is under way
        p.stdout.close()
        err = p.stderr.read().decode()
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 141, err
    assert "output closed by its reader" in err and "Traceback" not in err, err
    assert "Broken pipe" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_cnn_bench_with_its_reader_gone_ends_quietly(tmp_path):
    """The table goes to a pipe already closed: 141, nothing else said (no 'Exception ignored' at exit)."""
    p = subprocess.Popen([sys.executable, "-c", BENCH, str(models()["onnx"]), *BENCH_QUICK, "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err == "", err


# --- names that would forge lines -----------------------------------------------------------------------

def test_a_newline_in_a_file_name_cannot_forge_a_result_line(photos, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    src = next(photos.rglob("*.png"))
    (d / "a.png\nforged.png\t9\t1.0000\t0.1 ms.png").write_bytes(src.read_bytes())
    jl = tmp_path / "out.jsonl"
    code, out, err = cli(str(models()["onnx"]), "--source", str(d), "--json", str(jl))
    assert code == 0, err
    assert len(out.splitlines()) == 1, out  # one image, one line
    assert "a.png\\nforged.png\\t9\\t1.0000\\t0.1 ms.png\t" in out
    assert json.loads(jl.read_text())["path"].endswith("a.png\nforged.png\t9\t1.0000\t0.1 ms.png")


# --- two outputs on one file ----------------------------------------------------------------------------

@pytest.mark.parametrize("first,second", [("--json", "--csv"), ("--json", "--save-video"), ("--csv", "--json")])
def test_two_outputs_naming_one_file_are_refused(photos, tmp_path, first, second):
    target = tmp_path / "same.avi"
    target.write_text("the user's file\n")
    other = target
    if first == "--csv":  # the same file under another name: a link to it
        other = tmp_path / "link.avi"
        other.symlink_to(target)
    code, out, err = cli(str(models()["onnx"]), "--source", str(photos), first, str(target), second, str(other),
                         "--force")
    assert code == 2 and out == "", err
    one_error(err, second, "the same file as", first)
    assert target.read_text() == "the user's file\n"
    assert "on ort-cpu" not in err  # refused at start: no model loaded


@pytest.mark.parametrize("how", ["linked folder", "hard link"])
def test_two_outputs_reaching_one_file_by_other_roads_are_refused(photos, tmp_path, how):
    """A new name reached through a link to its folder, and an old file's hard link: the same file all the same."""
    d = tmp_path / "d"
    d.mkdir()
    (tmp_path / "link").symlink_to(d)
    if how == "hard link":
        (d / "old.csv").write_text("the user's file\n")
        os.link(d / "old.csv", d / "other.csv")
        first, second = d / "old.csv", d / "other.csv"
    else:
        first, second = d / "new.csv", tmp_path / "link" / "new.csv"
    code, out, err = cli(str(models()["onnx"]), "--source", str(photos), "--json", str(first), "--csv", str(second),
                         "--force")
    assert code == 2 and out == "", err
    one_error(err, "--csv", "the same file as --json")
    assert sorted(os.listdir(d)) == (["old.csv", "other.csv"] if how == "hard link" else [])


def test_cnn_bench_json_and_markdown_naming_one_file_are_refused(tmp_path):
    target = tmp_path / "bench.txt"
    code, out, err = bench_cli(str(models()["onnx"]), *BENCH_QUICK, "--json", str(target), "--markdown", str(target))
    assert code == 2 and out == "" and not target.exists(), err
    one_error(err, "--markdown", "the same file as --json")
    assert "on ort-cpu" not in err  # nothing measured


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_cnn_bench_dash_writes_to_stdout_and_the_table_to_stderr(tmp_path, monkeypatch, flag):
    """cnn-bench --json - (or --markdown -) as cnn-infer's --json -: the report on stdout, nothing else there, the
    table on stderr, and no file named '-'."""
    monkeypatch.chdir(tmp_path)
    code, out, err = bench_cli(str(models()["onnx"]), *BENCH_QUICK, flag, "-")
    assert code == 0, err
    if flag == "--json":
        assert [r["batch"] for r in json.loads(out)["rows"]] == [1]
    else:
        assert out.startswith("| fastest | artifact |") and "ort-cpu" in out
    assert "* fastest at batch 1 (p50)" in err and "* fastest" not in out  # the table went to stderr
    assert list(tmp_path.iterdir()) == []
    code, out, err = bench_cli(str(models()["onnx"]), *BENCH_QUICK, "--json", "-", "--markdown", "-")
    assert code == 2 and out == ""
    one_error(err, "--json - and --markdown -", "stdout")


def _ignore_sigint() -> None:
    """As a shell without job control starts `cnn-bench ... &`: SIGINT ignored (SIGTERM at its default)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _default_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,start", [(signal.SIGINT, 130, _default_stop_signals),
                                            (signal.SIGINT, 130, _ignore_sigint),
                                            (signal.SIGTERM, 143, _default_stop_signals)],
                         ids=["sigint", "sigint-inherited-ignored", "sigterm"])
def test_a_signal_stops_cnn_bench_mid_measurement_with_what_was_measured(tmp_path, sig, code, start):
    """cnn-bench ran on after Ctrl-C (started in the background of a script, it had SIGINT ignored) until it was
    killed. The signal is sent while the second model is measured (once cnn-bench says it started on it): the
    run ends within seconds with 128 + the signal, the first model's row on stdout, and no result file (it would
    look complete)."""
    import threading
    import time

    from test_hostile_reads import _classifier_onnx

    first = _classifier_onnx(tmp_path / "first.onnx")
    second = _classifier_onnx(tmp_path / "second.onnx")
    report = tmp_path / "bench.json"
    p = subprocess.Popen([sys.executable, "-c", BENCH, str(first), str(second), "--backends", "ort-cpu", "--batch",
                          "1", "--duration", "8", "--repeats", "1", "--warmup", "1", "--json", str(report)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=start,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    err_lines: list[str] = []
    sent: list[float] = []

    def watch() -> None:
        for line in p.stderr:
            err_lines.append(line)
            if "second.onnx on ort-cpu" in line and not sent:
                time.sleep(1.0)  # into the timing loop; any moment of the measurement must stop the same way
                sent.append(time.monotonic())
                p.send_signal(sig)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(p.stdout.read()), daemon=True)
    reader.start()
    try:
        rc = p.wait(timeout=240)  # a run that hangs fails here instead of holding the suite
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    t.join(10)
    reader.join(10)
    out = "".join(chunks)
    err = "".join(err_lines)
    assert sent and rc == code and time.monotonic() - sent[0] < 5, (rc, err)
    assert "first.onnx" in out and "second.onnx" not in out and "Traceback" not in err, (out, err)
    assert err.splitlines()[-1] == "cnn-bench: interrupted; 1 row measured (above); no --json/--markdown/--plot " \
                                   "file written", err
    assert not report.exists() and sorted(os.listdir(tmp_path)) == ["first.onnx", "second.onnx"]


# --- every number has a bound -----------------------------------------------------------------------------

def _numeric_flags(parser) -> list:
    return [a for a in parser.flags if a.type is not None and a.option_strings]


@pytest.mark.parametrize("tool", ["infer", "bench"])
def test_every_numeric_flag_names_its_bound_in_help(tool):
    from cnnedge.cli._args import bound
    from cnnedge.cli.bench import build_parser as bench_parser
    from cnnedge.cli.infer import build_parser as infer_parser

    parser = infer_parser() if tool == "infer" else bench_parser()
    flags = _numeric_flags(parser)
    assert len(flags) >= (14 if tool == "infer" else 9)
    for a in flags:
        assert bound(a.type) in a.help, (a.option_strings, a.help)
    threads = next(a for a in flags if "--threads" in a.option_strings)
    assert f"1..{4 * os.cpu_count()} (4 per core, {os.cpu_count()} cores here)" in threads.help


CORES = os.cpu_count() or 1
BEYOND = [
    ("infer", "--threads", "20000", f"1..{4 * CORES}"),
    ("infer", "--workers", "10000", f"1..{4 * CORES}"),
    ("infer", "--threads", str(4 * CORES + 1), f"1..{4 * CORES}"),
    ("infer", "--fps", "nan", "0.01..600"),
    ("infer", "--fps", "0", "0.01..600"),
    ("infer", "--fps", "-5", "0.01..600"),
    ("infer", "--fps", "inf", "0.01..600"),
    ("infer", "--camera", "-1", "0..255"),
    ("infer", "--camera", "1099511627776", "0..255"),
    ("infer", "--csi", "-1", "0..255"),
    ("infer", "--duration", "-5", "> 0 and < 1e+09"),
    ("infer", "--duration", "nan", "> 0 and < 1e+09"),
    ("infer", "--give-up-after", "inf", "> 0 and < 1e+09"),
    ("infer", "--load-timeout-s", "inf", "> 0 and < 1e+09"),
    ("infer", "--open-timeout-ms", "99999999999", "1..86400000"),
    ("infer", "--read-timeout-ms", "0", "1..86400000"),
    ("infer", "--max-wait-ms", "1e300", ">= 0 and < 1e+12"),
    ("infer", "--topk", "0", ">= 1"),
    ("bench", "--threads", "100000", f"1..{4 * CORES}"),
    ("bench", "--workers", "10000", f"1..{4 * CORES}"),
    ("bench", "--seed", "-1", "0..4294967295"),
    ("bench", "--seed", str(2**32), "0..4294967295"),
    ("bench", "--duration", "inf", "> 0 and < 1e+09"),
    ("bench", "--warmup", "-1", ">= 0"),
]


@pytest.mark.parametrize("tool,flag,value,said", BEYOND, ids=[f"{t}{f}={v}" for t, f, v, _ in BEYOND])
def test_a_number_beyond_its_bound_is_refused_naming_the_bound(tool, flag, value, said, capsys):
    """Refused by the parser, before a model is looked at (the model named here does not exist)."""
    from cnnedge.cli.bench import main as bench_main

    args = ["model.onnx", "--source", "photos/"] if tool == "infer" else ["model.onnx"]
    with pytest.raises(SystemExit) as exit_:
        (main if tool == "infer" else bench_main)([*args, flag, value])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == "", err
    one_error(err, f"argument {flag}: expected", said, value)


def test_the_library_refuses_the_same_numbers(photos, tmp_path):
    """Classifier(threads=), stream(workers=, duration=), VideoSink(fps=), BenchConfig: a UsageError naming
    the argument and the bound, not 20,000 threads, a hang or a traceback. In a child under a memory limit, so
    a broken guard fails there (thread stacks exhaust its address space) instead of loading the machine."""
    code = ("import math, sys\nfrom cnnedge.errors import UsageError\nfrom cnnedge.bench import BenchConfig\n"
            "from cnnedge.runtime import Classifier\nfrom cnnedge.runtime.sinks import VideoSink\n"
            "model, photos, out = sys.argv[1:]\n"
            "def says(f):\n"
            "    try:\n        f()\n        print('ACCEPTED')\n"
            "    except UsageError as e:\n        print(e)\n"
            "says(lambda: Classifier(model, 'ort-cpu', threads=20_000))\n"
            "clf = Classifier(model, 'ort-cpu', threads=1)\n"
            "says(lambda: clf.stream(photos, workers=10_000))\n"
            "says(lambda: clf.stream(photos, duration=-5))\n"
            "for fps in (math.nan, 0, -5, math.inf):\n"
            "    says(lambda: VideoSink(out, fps=fps))\n"
            "for kw in ({'threads': 100_000}, {'workers': 10_000}, {'seed': -1}):\n"
            "    says(lambda: BenchConfig([model], **kw).check())\n")
    r = run(code, str(models()["onnx"]), str(photos), str(tmp_path / "out.avi"))
    assert_quick_and_small(r)
    most = f"1..{4 * CORES} (4 per core, {CORES} cores here)"
    assert r.rc == 0 and r.out.splitlines() == [
        f"threads must be a whole number in {most}, got 20000",
        f"workers must be a whole number in {most}, got 10000",
        "duration must be a number of seconds > 0 and < 1e+09, got -5",
        *(f"fps must be a frame rate from 0.01 to 600, got {v}" for v in ("nan", "0", "-5", "inf")),
        f"--threads must be a whole number in {most}, got 100000",
        f"--workers must be a whole number in {most}, got 10000",
        "--seed must be a whole number in 0..4294967295, got -1"], r
    assert list(tmp_path.iterdir()) == []


def test_a_negative_camera_index_is_refused_not_a_crash():
    """OpenCV crashed (SIGSEGV) on camera -1: the source table refuses it first; in a child, so a crash cannot
    take the tests with it."""
    code = ("from cnnedge.runtime.sources import open_source, SourceError\n"
            "for index in (-1, 2**40):\n"
            "    try:\n        open_source(index)\n        print('OPENED', index)\n"
            "    except SourceError as e:\n        print(e)\n")
    r = run(code)
    assert r.rc == 0, r
    assert r.out.splitlines() == ["camera -1: not a camera index; they are 0..255",
                                  f"camera {2**40}: not a camera index; they are 0..255"], r


# --- list and truth files -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "zero", "binary", "nul"])
def test_labels_csv_that_is_not_a_text_file_is_one_line(photos, tmp_path, kind):
    """--labels-csv on a FIFO hung, /dev/zero ran out of memory, a binary file and a NUL byte were tracebacks:
    each is one line naming the flag and the file (and the line, where there is one), exit 2, in a child
    under a timeout and a memory limit."""
    truth = tmp_path / "truth.csv"
    if kind == "fifo":
        os.mkfifo(truth)
    elif kind == "zero":
        truth.symlink_to("/dev/zero")
    elif kind == "binary":
        truth.write_bytes(b"path,label\n" + bytes(range(128, 256)) + b"\n")
    else:
        truth.write_bytes(b"path,label\n0/img0000.png,0\n0/a\x00b.png,0\n")
    want = {"fifo": "not a regular file (a FIFO)", "zero": "a link to a character device, /dev/zero",
            "binary": "line 2: not UTF-8 text", "nul": "line 3: a NUL byte"}[kind]
    r = infer(str(models()["onnx"]), "--source", str(photos), "--eval", "--labels-csv", str(truth))
    assert_quick_and_small(r)
    lines = error_lines(r)
    assert r.rc == 2 and len(lines) == 1 and f"--labels-csv {truth}" in lines[0] and want in lines[0], r


@pytest.mark.parametrize("flag", ["--source", "--labels"])
def test_a_nul_byte_in_a_list_file_line_is_one_line_naming_file_and_line(photos, tmp_path, flag):
    lst = tmp_path / "list.txt"
    if flag == "--source":
        first = next(photos.rglob("*.png"))
        lst.write_bytes(f"{first}\n".encode() + b"bad\x00name.png\n")
        argv = ["--source", str(lst)]
    else:
        lst.write_bytes(b"0\n1\n2\x003\n" + b"".join(b"%d\n" % i for i in range(4, 10)))
        argv = ["--source", str(photos), "--labels", str(lst)]
    code, out, err = cli(str(models()["onnx"]), *argv)
    assert code == 2 and out == "", err
    one_error(err, str(lst), f"line {2 if flag == '--source' else 3}", "NUL byte")


# --- predict_batch ----------------------------------------------------------------------------------------

def _not_a_batch(png: Path) -> dict:
    img = np.zeros((32, 32, 3), np.uint8)
    data = png.read_bytes()
    return {"None": (None, "got None"),
            "png bytes": (data, "got bytes; for the bytes of an image file (PNG, JPEG) use decode(data) first"),
            "one path": (str(png), "got str; for one file use predict(path) or predict_batch([path])"),
            "one image": (img, "got an array of shape 32x32x3; for one image use predict(image)"),
            "nested list": ([img.tolist()], "image 0: expected an image array (HxWx3 BGR uint8) or a path, got "
                                            "list; for pixels in nested lists use np.asarray(pixels, np.uint8)"),
            "list of bytes": ([data], "image 0: expected an image array (HxWx3 BGR uint8) or a path, got bytes"),
            "None in a list": ([img, None], "image 1: expected an image array (HxWx3 BGR uint8) or a path, got "
                                            "NoneType")}


@pytest.mark.parametrize("case", ["None", "png bytes", "one path", "one image", "nested list", "list of bytes",
                                  "None in a list"])
def test_predict_batch_refuses_what_is_not_a_batch_of_images(photos, case):
    png = next(photos.rglob("*.png"))
    value, message = _not_a_batch(png)[case]
    from cnnedge.runtime import Classifier

    with Classifier(models()["onnx"], "ort-cpu", threads=1) as clf:
        with pytest.raises(CnnEdgeError) as caught:
            clf.predict_batch(value)
        assert isinstance(caught.value, UsageError) and message in str(caught.value), caught.value
        assert len(clf.predict_batch([png, np.zeros((32, 32, 3), np.uint8)])) == 2  # a real batch still runs
