"""Quiet tools: on a normal run, cnn-train, cnn-export and cnn-bench print none of TensorFlow's C++ start-up
lines and no Keras input-structure warning. Each CLI runs in a subprocess; a control shows that the same
subprocess set-up does see those lines when TensorFlow and Keras are used plainly."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOISE = ("oneDNN custom operations are on", "absl::InitializeLog", "doesn't match the expected structure",
         "cpu_feature_guard")

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(n in line for n in NOISE)]


LIST_INPUT_MODEL = """
import sys, numpy as np
import keras
i = keras.Input((8, 8, 3), name="pixels")
x = keras.layers.Rescaling(1 / 255)(i)
o = keras.layers.Dense(10, activation="softmax", name="probabilities")(keras.layers.Flatten()(x))
model = keras.Model([i], o)  # a list of one input, as many models from elsewhere are built
model(np.zeros((1, 8, 8, 3), "float32"))
model.save(sys.argv[1])
"""


def test_cli_runs_print_no_tensorflow_or_keras_noise(tmp_path: Path) -> None:
    # the control: plain TensorFlow and Keras in the same kind of subprocess do print these lines
    other = tmp_path / "other"
    other.mkdir()
    control = _run([sys.executable, "-c", LIST_INPUT_MODEL, str(other / "model.keras")], tmp_path)
    assert control.returncode == 0, control.stderr
    seen = " ".join(_noise(control.stderr))
    assert "oneDNN custom operations are on" in seen and "doesn't match the expected structure" in seen, seen

    run = tmp_path / "run"
    train = _run([sys.executable, "-c", "from cnnedge.cli.train import console; console()", "--preset",
                  "mnist-dense", "--data", "digits", "--img-size", "8", "--epochs", "1", "--out", str(run), "--quiet"],
                 tmp_path)
    assert train.returncode == 0, train.stderr
    assert _noise(train.stderr) == [], train.stderr

    # a model built with a list of inputs, described by the trained run's card: export and bench it
    shutil.copy(run / "card.json", other / "card.json")
    for model in (run / "model.keras", other / "model.keras"):
        export = _run([str(BIN / "cnn-export"), str(model)], tmp_path)
        assert export.returncode == 0, export.stderr
        assert _noise(export.stderr) == [], export.stderr
        assert (model.parent / "model.onnx").is_file()
        bench = _run([str(BIN / "cnn-bench"), str(model), str(model.parent / "model.onnx"), "--backends",
                      "keras,ort-cpu", "--batch", "1", "--iters", "20", "--warmup", "2", "--repeats", "1"], tmp_path)
        assert bench.returncode == 0, bench.stderr
        assert _noise(bench.stderr) == [], bench.stderr
