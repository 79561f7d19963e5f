"""``auto`` picks the CPU engine of an ONNX file by measurement (issue 31): the real ONNX Runtime against the real
OpenVINO, on small classifiers built with onnx.helper. No timing is asserted: which engine wins depends on the
machine; what is asserted is that one of the two measured engines runs, that it says why, and when it measures.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is not installed: pip install 'cnnedge[openvino]'")
pytest.importorskip("onnxruntime")
from test_hostile_reads import _classifier_onnx  # noqa: E402
from test_openvino_backend import _det_model  # noqa: E402

from cnnedge.runtime.backends import load_backend  # noqa: E402
from cnnedge.runtime.backends.engine_cache import FILE_NAME, EngineCacheWarning  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
ENGINES = ("ort-cpu", "openvino")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """Measuring on (conftest turns it off for every other test), with a cache of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CNNEDGE_CACHE_DIR", str(folder))
    monkeypatch.setenv("CNNEDGE_AUTO_MEASURE", "1")
    return folder / FILE_NAME


@pytest.fixture
def model(tmp_path) -> Path:
    (tmp_path / "m").mkdir()
    return _classifier_onnx(tmp_path / "m" / "model.onnx")


def entries(cache: Path) -> dict:
    return json.loads(cache.read_text())["entries"]


def test_auto_measures_both_engines_keeps_the_faster_and_says_why(model, cache):
    x = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    with load_backend(model, "ort-cpu", threads=1) as ref:
        want = ref.infer(x)
    with load_backend(model, batch=4, threads=1) as be:
        assert be.name in ENGINES and be.choice.engine == be.name
        assert be.choice.source == "measured now" and be.choice.batch == 4 and be.choice.threads == 1
        said = str(be.choice)
        assert said.startswith(be.name + " (") and "at batch 4, 1 thread" in said and said.endswith("measured now)")
        assert be.settings["auto"] == said and be.settings["threads"] == 1
        np.testing.assert_allclose(be.infer(x), want, rtol=1e-4, atol=1e-5)
    (entry,) = entries(cache).values()
    assert entry["engine"] == be.name and entry["batch"] == 4


def test_a_second_open_reads_the_cache_and_measures_nothing(model, cache):
    with load_backend(model, batch=4, threads=1) as first:
        picked = first.name
    stamp = cache.stat().st_mtime_ns
    with load_backend(model, batch=4, threads=1) as be:
        assert be.name == picked and be.choice.source.startswith("cached ")
        assert "cached 20" in be.settings["auto"] and "at batch 4" in be.settings["auto"]
    assert cache.stat().st_mtime_ns == stamp  # nothing measured, nothing written


def test_another_model_file_or_batch_or_thread_count_measures_again(model, cache, tmp_path):
    with load_backend(model, batch=4, threads=1):
        pass
    (tmp_path / "other").mkdir()
    other = _classifier_onnx(tmp_path / "other" / "model.onnx", card_hw=6)  # another graph: another sha256
    for path, opts in ((other, {"batch": 4, "threads": 1}), (model, {"batch": 2, "threads": 1}),
                       (model, {"batch": 4, "threads": 2})):
        with load_backend(path, **opts) as be:
            assert be.choice.source == "measured now", (path, opts)
    assert len(entries(cache)) == 4
    _classifier_onnx(model, card_hw=5)  # the same name, new contents: measured again
    with load_backend(model, batch=4, threads=1) as be:
        assert be.choice.source == "measured now"


def test_a_corrupt_or_unwritable_cache_warns_and_still_runs(model, cache, tmp_path, monkeypatch):
    cache.parent.mkdir(parents=True)
    cache.write_text('{"version": 1, "entries": [')
    with pytest.warns(EngineCacheWarning, match=r"engine-choice.json: the engine-choice cache is corrupt"):
        with load_backend(model, batch=1, threads=1) as be:
            assert be.name in ENGINES and be.choice.source == "measured now"
    assert len(entries(cache)) == 1  # written anew
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNNEDGE_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(EngineCacheWarning, match="cannot write the engine-choice cache"):
        with load_backend(model, batch=1, threads=1) as be:
            assert be.name in ENGINES and be.choice.source == "measured now"


def test_a_named_backend_or_measuring_off_bypasses_measuring(model, cache, monkeypatch):
    for name in ENGINES:
        with load_backend(model, name, batch=4, threads=1) as be:
            assert be.name == name and be.choice is None and "auto" not in be.settings
    monkeypatch.setenv("CNNEDGE_AUTO_MEASURE", "0")
    with load_backend(model, batch=4, threads=1) as be:
        assert be.name == "ort-cpu" and be.choice is None
    assert not cache.exists()


def test_a_model_openvino_cannot_compile_goes_to_onnx_runtime_with_the_reason(tmp_path, cache):
    model = _det_model(tmp_path / "det.onnx")
    with load_backend(model, batch=2, threads=1) as be:
        assert be.name == "ort-cpu" and be.choice.ratio is None
        assert "openvino cannot open it" in str(be.choice) and "OpenVINO cannot compile" in str(be.choice)
        assert be.infer(np.eye(4, dtype=np.float32)[None].repeat(2, 0)).shape == (2,)
    with load_backend(model, batch=2, threads=1) as be:
        assert be.name == "ort-cpu" and be.choice.source.startswith("cached")


def test_a_fixed_batch_model_is_timed_at_its_own_batch(tmp_path, cache):
    model = _classifier_onnx(tmp_path / "fixed.onnx", batch=2)
    with load_backend(model, batch=32, threads=1) as be:
        assert be.choice.batch == 2 and "at batch 2," in str(be.choice)


def test_the_classifier_passes_its_batch(model, cache):
    from cnnedge.runtime import Classifier

    with Classifier(model, batch=3, threads=1, warmup=False) as clf:
        assert clf.backend.choice.batch == 3 and clf.backend_name == clf.backend.choice.engine


def _images(folder: Path, n: int = 3) -> Path:
    import cv2

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return folder


def _infer(*argv: str) -> subprocess.CompletedProcess:
    code = "import sys\nfrom cnnedge.cli.infer import console\nsys.argv[0] = 'cnn-infer'\nconsole()\n"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))


def test_cnn_infer_prints_the_choice_at_the_batch_it_runs(model, cache, tmp_path):
    photos = _images(tmp_path / "photos")
    r = _infer(str(model), "--source", str(photos), "--threads", "1", "--json", str(tmp_path / "a.jsonl"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    start = next(ln for ln in r.stderr.splitlines() if " classes, " in ln)
    assert "auto: " in start and "at batch 32, 1 thread" in start and "measured now" in start, start
    engine = entries(cache)[next(iter(entries(cache)))]["engine"]
    assert f"on {engine}" in start
    r = _infer(str(model), "--source", str(photos), "--threads", "1", "--batch", "2", "--backend", "ort-cpu",
               "--json", str(tmp_path / "b.jsonl"))
    assert r.returncode == 0 and "auto: " not in r.stderr, r.stderr
    r = _infer(str(model), "--source", str(photos), "--threads", "1", "--json", str(tmp_path / "c.jsonl"))
    assert r.returncode == 0 and "; cached 20" in r.stderr, r.stderr


def test_cnn_bench_names_autos_cached_pick_in_its_engine_lines(model, cache, tmp_path):
    with load_backend(model, batch=4, threads=1) as be:
        picked = str(be.choice)
    code = "import sys\nfrom cnnedge.cli.bench import console\nsys.argv[0] = 'cnn-bench'\nconsole()\n"
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-c", code, str(model), "--backend", "ort-cpu,openvino", "--batch", "1,4",
                        "--iters", "3", "--warmup", "1", "--repeats", "1", "--threads", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    engines = json.loads(out.read_text())["engines"]
    (entry,) = entries(cache).values()
    assert engines["model.onnx on auto at batch 4"]["auto"] == picked.replace("measured now", f"cached {entry['date']}")
    assert "model.onnx on auto at batch 1" not in engines  # auto never ran at batch 1: nothing to say
    assert f"engine: model.onnx on auto at batch 4, auto: {picked.split(' (')[0]} (" in r.stdout + r.stderr


@pytest.mark.slow
def test_a_file_the_gate_did_not_run_on_openvino_stays_on_onnx_runtime_and_a_verified_one_is_measured(
        small_cnn, small_cnn_export, cache, tmp_path):
    """The export report beside a file says which CPU engines its gate ran it on: auto never moves a file to an
    engine its gate did not check."""
    from cnnedge.export import export

    out = tmp_path / "ort-only"
    report = export(small_cnn, out, parity_engines="ort-cpu")
    assert "openvino" in report.parity_engines["not_verified"]
    with load_backend(out / "model.onnx", batch=4, threads=1) as be:
        assert be.name == "ort-cpu" and be.choice.source == "from the export report"
        assert "the export's gate did not run this file on it" in be.settings["auto"]
    assert not cache.exists()  # nothing measured
    verified = small_cnn_export.report.parity_engines
    assert "openvino" in verified["verified"], verified
    with load_backend(small_cnn_export.out / "model.onnx", batch=4, threads=1) as be:
        assert be.choice.source == "measured now" and be.name in ENGINES
