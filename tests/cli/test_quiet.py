"""Quiet tools: on a normal run, cnn-train, cnn-export and cnn-bench print none of TensorFlow's C++ start-up
lines and no Keras input-structure warning. Each CLI runs in a subprocess; a control shows that the same
subprocess set-up does see those lines when TensorFlow and Keras are used plainly.

Which C++ lines TensorFlow prints depends on the CPU: the oneDNN notice only where oneDNN is on by default
(AVX512_VNNI, AVX512_BF16 or AMX), the cpu_feature_guard notice only where the CPU has instructions the
binary was not built for (AVX2 FMA, AVX-512 ...), absl's pre-init warning with the first of them. So the
subprocesses here turn oneDNN on (``TF_ENABLE_ONEDNN_OPTS=1``): the notice and absl's warning are then
printed on any x86 CPU, and the tools are tested against lines TensorFlow certainly prints. An AVX2-only
CPU (no AVX-512, oneDNN off) is checked under ``qemu-x86_64 -cpu Haswell`` where qemu is installed."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NOISE = ("oneDNN custom operations are on", "absl::InitializeLog", "doesn't match the expected structure",
         "cpu_feature_guard", "This TensorFlow binary is optimized", "To enable the following instructions")
# any line of C++ logging (absl/glog style: I0000 00:00:1796659516.133948    4463 port.cc:153] ...)
CPP_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.-]+:\d+\]")

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_env(TF_ENABLE_ONEDNN_OPTS="1"),
                          timeout=600)


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(n in line for n in NOISE) or CPP_LOG.match(line)]


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
    for line in ("oneDNN custom operations are on", "absl::InitializeLog", "doesn't match the expected structure"):
        assert line in seen, (line, control.stderr)

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


QEMU_WARNING = re.compile(r"qemu[-\w]*: warning: ")  # "TCG doesn't support requested feature": qemu's, not ours
QUIET_IMPORT = ("import cnnedge.tfquiet as q; q.import_quietly('tensorflow')\n"
                "import tensorflow as tf; tf.constant(1.0) + 1")  # the first op: nothing printed later either


def test_quiet_import_on_an_avx2_only_cpu(tmp_path: Path) -> None:
    """An AVX2-only CPU (Haswell: no AVX-512, so oneDNN is off by default) emulated by qemu-user, in the
    environment a user has: plain TensorFlow prints its cpu_feature_guard notice there (the control), the
    quiet import that the tools use prints nothing at all (qemu's own warnings aside)."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not on PATH (apt-get install qemu-user): the AVX2-only CPU is not checked")

    def emulated(code: str) -> subprocess.CompletedProcess:
        r = subprocess.run([qemu, "-cpu", "Haswell", sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=tmp_path, env=_env(), timeout=600)
        r.stderr = "".join(ln for ln in r.stderr.splitlines(True) if not QEMU_WARNING.match(ln))
        return r

    control = emulated("import tensorflow")
    if control.returncode != 0:
        pytest.skip(f"this qemu-x86_64 cannot run TensorFlow as a Haswell CPU: {control.stderr[-500:]}")
    assert "cpu_feature_guard" in control.stderr and "AVX2 FMA" in control.stderr, control.stderr
    assert "oneDNN custom operations are on" not in control.stderr, control.stderr  # oneDNN off: an AVX2 CPU
    quiet = emulated(QUIET_IMPORT)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
