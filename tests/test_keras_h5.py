"""Legacy HDF5 Keras files. A Keras 2 file (tf.keras of TensorFlow <= 2.15, tf_keras) is told for what it is, in
one line with a way to convert it that works, read from its root attributes before Keras is imported (Keras 3
failed on one after 10 s and 825 MB with a message cut off mid-config); a wrong file is a usage mistake (exit 2)
for cnn-export and cnn-infer alike; a Keras 3 ``.h5`` still loads.

The Keras 2 files are real: written by tf_keras 2.21.0 (Keras 2 for this TensorFlow) run from its pinned,
sha256-checked PyPI wheel (tests/model_wheels.py, downloaded by `make test`) in a child process; it is never
installed (it requires the `tensorflow` distribution, where the venv has tensorflow-cpu). Without the wheel
these tests skip and say why.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import model_wheels as MW

TF_KERAS = "tf-keras==2.21.0"
SIDE = 16

_WRITE = """
import sys
import tf_keras as k
model = k.Sequential([k.layers.Input((16, 16, 1)),
                      k.layers.Conv2D(4, 3, activation="relu", kernel_initializer=k.initializers.VarianceScaling(2.0)),
                      k.layers.BatchNormalization(), k.layers.Flatten(), k.layers.Dense(10, activation="softmax")])
model.save(sys.argv[1])
model.save_weights(sys.argv[2])
print(k.__version__)
"""


def _env(site: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


@pytest.fixture(scope="module")
def keras2(tmp_path_factory) -> dict[str, Path]:
    """A whole Keras 2 model and a weights-only file, as tf_keras 2.21.0 saves them."""
    wheel = MW.wheel(TF_KERAS)
    if wheel is None:
        pytest.skip(f"{MW.WHEELS[TF_KERAS][0]} is not in tests/.wheels with its pinned sha256 (run `make test`, or "
                    "`python tests/model_wheels.py`, where PyPI is reachable)")
    root = tmp_path_factory.mktemp("keras2")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root / "site")
    model, weights = root / "digits.h5", root / "weights_only.h5"  # (a .weights.h5 name is Keras 3 format)
    done = subprocess.run([sys.executable, "-c", _WRITE, str(model), str(weights)], capture_output=True, text=True,
                          env=_env(root / "site"), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("2.21.0")
    return {"model": model, "weights": weights, "site": root / "site", "root": root}


def _cli(tool: str, argv: list[str], cwd: Path) -> tuple[int, str, bool]:
    """``tool`` run in a child process: exit code, stderr, and whether TensorFlow was imported."""
    code = (f"import sys\nfrom cnnedge.cli._run import run_cli\nfrom cnnedge.cli.{tool} import main\n"
            f"code = run_cli('cnn-{tool}', main, sys.argv[1:])\n"
            "print('tensorflow' in sys.modules)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=cwd, env=_env(),
                          timeout=600)
    return done.returncode, done.stderr, done.stdout.strip().splitlines()[-1] == "True"


def _one_line(err: str, tool: str) -> str:
    """The one error line that ends the run (progress lines may come before it), with no traceback."""
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith(f"cnn-{tool}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


@pytest.mark.slow  # tf_keras writes the files (TensorFlow), then three child processes
def test_keras2_h5_is_refused_in_one_line_before_keras_loads(keras2, tmp_path):
    """With or without --trust, cnn-export and cnn-infer: exit 2, the file named, 'Keras 2', how to convert it;
    TensorFlow is never imported, and nothing is written."""
    h5 = keras2["model"]
    before = sorted(p.name for p in h5.parent.iterdir())
    for tool, argv in (("export", [str(h5), "--out", str(tmp_path / "out")]),
                       ("export", [str(h5), "--trust", "--labels", str(h5), "--out", str(tmp_path / "out")]),
                       ("infer", [str(h5), "--trust", "--source", str(h5)])):
        code, err, tf_loaded = _cli(tool, argv, tmp_path)
        line = _one_line(err, tool)
        assert code == 2, line
        assert str(h5) in line and "Keras 2 HDF5 file (keras_version 2.21.0)" in line, line
        assert "tf_keras" in line and "tf2onnx.convert" in line and "cnn-export" in line, line
        assert not tf_loaded, f"cnn-{tool} imported TensorFlow to refuse a Keras 2 file"
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in h5.parent.iterdir()) == before


@pytest.mark.slow  # tf_keras, tf2onnx and an export: about half a minute
def test_the_way_to_convert_a_keras2_file_that_the_error_gives_works(keras2, tmp_path):
    """The two commands of the message, run as they are (tf_keras from the wheel), give an ONNX file that
    cnn-export exports."""
    code, err, _ = _cli("export", [str(keras2["model"])], tmp_path)
    line = _one_line(err, "export")
    load = re.search(r"python (-c '[^']+')", line)
    convert = re.search(r"python (-m tf2onnx\.convert [^,]+),", line)
    assert load and convert, line
    for argv in ([sys.executable, *shlex.split(load.group(1))], [sys.executable, *shlex.split(convert.group(1))]):
        done = subprocess.run(argv, capture_output=True, text=True, env=_env(keras2["site"]), timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    onnx_file = keras2["model"].with_suffix(".onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(i) for i in range(10)) + "\n")
    code, err, _ = _cli("export", [str(onnx_file), "--labels", str(labels), "--scale", "1/255", "--mean", "0",
                                   "--std", "1", "--verify", "digits", "--verify-size", "40", "--out",
                                   str(tmp_path / "out"), "-q"], tmp_path)
    assert code == 0, err
    assert (tmp_path / "out" / "model.onnx").is_file()


@pytest.mark.slow  # the keras2 fixture runs tf_keras
def test_weights_only_h5_is_refused_naming_what_it_holds(keras2):
    from cnnedge.errors import UnsupportedModelFile
    from cnnedge.keras_io import check_model_file

    with pytest.raises(UnsupportedModelFile, match="holds weights only") as info:
        check_model_file(keras2["weights"], trust=True)
    assert str(keras2["weights"]) in str(info.value) and "model.save" in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.slow  # Keras
def test_keras3_h5_still_loads(tmp_path):
    """Keras 3's own legacy .h5 (keras_version 3.x) passes the check and loads, with --trust, as before."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from cnnedge.keras_io import load_keras_model

    model = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "k3.h5")
    loaded = load_keras_model(tmp_path / "k3.h5", trust=True)
    x = np.random.default_rng(0).random((2, SIDE, SIDE, 1), np.float32)
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_wrong_file_type_is_a_usage_mistake_for_both_tools(tmp_path):
    """One list of accepted suffixes (cnnedge.artifact.kinds) in both tools' errors and help; exit 2."""
    from cnnedge.artifact.kinds import EXPORT_SOURCES, describe_suffixes
    from cnnedge.cli.export import build_parser as export_parser
    from cnnedge.cli.infer import build_parser as infer_parser

    wrong = tmp_path / "model.pt"
    wrong.write_bytes(b"torch")
    for tool, kinds in (("export", EXPORT_SOURCES), ("infer", None)):
        argv = [str(wrong)] + (["--source", str(wrong)] if tool == "infer" else [])
        code, err, _ = _cli(tool, argv, tmp_path)
        line = _one_line(err, tool)
        assert code == 2 and str(wrong) in line, line
        listed = describe_suffixes(kinds) if kinds else describe_suffixes()
        assert listed in line and ".h5" in line, line
    assert describe_suffixes() in " ".join(infer_parser().format_help().split())
    assert describe_suffixes(EXPORT_SOURCES) in " ".join(export_parser().format_help().split())
