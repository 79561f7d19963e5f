"""The training loop end to end: the digits accuracy target, the run folder, interruption keeping
the best checkpoint, --resume, and training on folders (with a corrupt file) and CSV files."""
from __future__ import annotations

import importlib.util
import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from cnnedge.artifact.card import ModelCard, sha256_file
from cnnedge.cli._run import run_cli
from cnnedge.cli.train import main
from cnnedge.keras_io import load_keras_model
from cnnedge.datasets import split_images
from cnnedge.trainer.loop import ARTIFACTS, TrainConfig, resume, train
from cnnedge.trainer.tfdata import Augment

pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out):
        code = run_cli("cnn-train", main, argv, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("digits") / "run"
    code, stdout, stderr = _cli(["--preset", "digits-cnn", "--data", "digits", "--out", str(out), "--quiet"])
    assert code == 0, stderr
    return out, stdout


@pytest.mark.slow
def test_digits_cnn_reaches_97_percent_and_writes_the_run_folder(digits_run: tuple[Path, str]) -> None:
    out, stdout = digits_run
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"digits-cnn test accuracy: {metrics['test_accuracy']:.4f} on {metrics['test_images']} images")
    assert metrics["test_accuracy"] >= 0.97
    assert metrics["test_images"] == 269 and len(metrics["per_class"]) == 10
    assert all(0.0 <= v["precision"] <= 1.0 and 0.0 <= v["recall"] <= 1.0 for v in metrics["per_class"].values())
    for name in ARTIFACTS:
        assert (out / name).is_file(), name
    import cv2

    for png in ("loss.png", "accuracy.png", "confusion.png"):
        assert cv2.imread(str(out / png)) is not None
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("cnn-train: digits-cnn: test accuracy") and str(out) in last
    card = ModelCard.load(out / "card.json")
    assert card.classes == tuple(str(i) for i in range(10))
    assert (card.input.height, card.input.width, card.input.channels) == (32, 32, 3)
    assert (card.input.dtype, card.input.layout, card.input.color) == ("float32", "NHWC", "RGB")
    assert card.preprocess.in_graph and card.preprocess.scale == pytest.approx(1 / 255)
    assert card.output == "probabilities" and card.provenance.dataset_spec["source"] == "digits"
    assert card.provenance.source_sha256 == sha256_file(out / "model.keras")
    header = (out / "history.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,loss,accuracy,val_loss,val_accuracy")


@pytest.mark.slow
def test_recorded_split_and_runtime_preprocessing_reproduce_the_test_accuracy(digits_run: tuple[Path, str]) -> None:
    from cnnedge.imaging.prepare import preprocess_batch

    out, _ = digits_run
    card = ModelCard.load(out / "card.json")
    model = load_keras_model(out / "model.keras")
    images, labels, classes = split_images(card.provenance.dataset_spec, "test")
    probs = model.predict(preprocess_batch(images, card.input, card.preprocess), verbose=0)
    acc = float((probs.argmax(axis=1) == labels).mean())
    assert acc == pytest.approx(json.loads((out / "metrics.json").read_text())["test_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_existing_run_is_not_overwritten_and_demo_reuses_it(digits_run: tuple[Path, str]) -> None:
    from cnnedge import demo

    out, _ = digits_run
    before = {n: (out / n).stat().st_mtime_ns for n in ARTIFACTS}
    code, _, err = _cli(["--preset", "digits-cnn", "--out", str(out), "--epochs", "1"])
    assert code == 2 and "--force" in err and err.count("\n") == 1 and "Traceback" not in err
    assert before == {n: (out / n).stat().st_mtime_ns for n in ARTIFACTS}
    buf, err = io.StringIO(), io.StringIO()
    with redirect_stdout(buf), redirect_stderr(err):
        assert demo.main([str(out)]) == 0
    said = buf.getvalue() + err.getvalue()
    assert "reusing the completed run" in said and "=== [1/3]" in said and "=== [3/3]" in said
    assert before == {n: (out / n).stat().st_mtime_ns for n in ARTIFACTS}
    # the demo goes on: export checked against Keras, then the INT8 model classifies the test folder
    report = json.loads((out / "export_report.json").read_text())
    onnx_rows = {Path(a["path"]).name: a for a in report["artifacts"] if a["path"].endswith(".onnx")}
    assert set(onnx_rows) == {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.trt.onnx"}
    assert all(a["passed"] for a in onnx_rows.values())
    assert len(list((out / "images").rglob("*.png"))) == 269
    acc = float(re.search(r"eval: 269 images, accuracy ([0-9.]+)", said).group(1))
    assert acc >= 0.97


def _interrupt_after(epochs: int, exc: type[BaseException] = KeyboardInterrupt):
    """A Keras callback that raises ``exc`` at the end of epoch ``epochs`` (Keras imported here, not at collection)."""
    import keras

    class InterruptAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch + 1 >= epochs:
                raise exc("stopped by the test")

    return InterruptAfter()


@pytest.mark.slow
def test_interrupt_keeps_the_best_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(preset="digits-cnn", data="digits", out=str(out), epochs=4, img_size=(16, 16), patience=0,
                      verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_interrupt_after(2)], log=lambda s: None)
    assert not (out / "metrics.json").exists()
    history = (out / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + 2 epochs
    card = ModelCard.load(out / "card.json")
    assert card.provenance.source_sha256 == sha256_file(out / "model.keras")
    rows = [dict(zip(history[0].split(","), map(float, line.split(",")))) for line in history[1:]]
    best = min(r["val_loss"] for r in rows)
    model = load_keras_model(out / "model.keras")
    images, labels, _ = split_images(card.provenance.dataset_spec, "val")
    from cnnedge.imaging.prepare import preprocess_batch

    probs = model.predict(preprocess_batch(images, card.input, card.preprocess), verbose=0)
    loss = float(np.mean(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0))))
    assert loss == pytest.approx(best, rel=1e-3, abs=1e-4)  # the saved model is the best epoch's

    # a crash also keeps what was saved; then --resume finishes the run
    result = resume(out, epochs=4, log=lambda s: None, verbose=0)
    assert result.epochs_run == 4 and (out / "metrics.json").is_file()
    assert len((out / "history.csv").read_text().strip().splitlines()) == 5
    assert 0.0 <= result.test_accuracy <= 1.0


@pytest.mark.slow
def test_crash_mid_run_keeps_a_valid_card(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(preset="mnist-dense", data="digits", out=str(out), epochs=3, img_size=(8, 8), verbose=0)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(cfg, callbacks=[_interrupt_after(1, RuntimeError)], log=lambda s: None)
    assert ModelCard.load(out / "card.json").name == "mnist-dense"
    load_keras_model(out / "model.keras")


def _folder(root: Path) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for ci, c in enumerate(("circle", "square")):
        (root / c).mkdir(parents=True)
        for i in range(24):
            img = np.zeros((40, 48, 3), np.uint8)
            cx, cy = rng.integers(14, 34), rng.integers(14, 26)
            colour = tuple(int(v) for v in rng.integers(120, 255, 3))
            if c == "circle":
                cv2.circle(img, (int(cx), int(cy)), 10, colour, -1)
            else:
                cv2.rectangle(img, (int(cx) - 9, int(cy) - 9), (int(cx) + 9, int(cy) + 9), colour, -1)
            assert cv2.imwrite(str(root / c / f"{i:02d}.jpg"), img)
    (root / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in-memory", "streamed"])
def test_folder_training_with_augmentation_reports_the_corrupt_file(tmp_path: Path, mode: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if mode == "streamed":  # too large to hold: decoded from the files every epoch
        monkeypatch.setenv("CNNEDGE_MAX_TRAIN_BYTES", "1")
    data = _folder(tmp_path / "shapes")
    out = tmp_path / "run"
    code, stdout, err = _cli(["--preset", "mnist-cnn", "--data", str(data), "--out", str(out), "--img-size", "24",
                              "--epochs", "3", "--val-split", "0.25", "--flip", "--rotation", "10", "--zoom", "0.1",
                              "--shift", "0.1", "--shear", "0.1", "--quiet"])
    assert code == 0, err
    assert "skipped 1 unreadable image" in stdout and "broken.jpg" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_images"] == 1 and metrics["skipped"][0]["path"].endswith("broken.jpg")
    assert metrics["test_images"] == 11 and metrics["test_split"] == "val"  # 12 minus the broken file
    assert ("streamed" in stdout) == (mode == "streamed")
    card = ModelCard.load(out / "card.json")
    assert card.classes == ("circle", "square") and (card.input.height, card.input.width) == (24, 24)
    model = load_keras_model(out / "model.keras")
    assert not any(type(layer).__name__.startswith("Random") for layer in model.layers)  # no augmentation inside


@pytest.mark.slow
def test_csv_training_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["label," + ",".join(f"pixel{i}" for i in range(64))]
    for i in range(60):
        img = np.zeros((8, 8), np.uint8)
        if i % 2:
            img[:, 2:6] = 200  # vertical bar
        else:
            img[2:6, :] = 200  # horizontal bar
        img = np.clip(img.astype(int) + rng.integers(0, 40, (8, 8)), 0, 255)
        lines.append(f"{i % 2}," + ",".join(map(str, img.reshape(-1))))
    (tmp_path / "bars.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    code, stdout, err = _cli(["--preset", "mnist-dense", "--data", str(tmp_path / "bars.csv"), "--out", str(out),
                              "--epochs", "8", "--channels", "1", "--quiet"])
    assert code == 0, err
    card = ModelCard.load(out / "card.json")
    assert (card.input.height, card.input.width, card.input.channels, card.input.color) == (8, 8, 1, "GRAY")
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] >= 0.9


def test_augment_values_are_checked() -> None:
    from cnnedge.errors import UsageError

    with pytest.raises(UsageError, match="--zoom"):
        Augment(zoom=1.5)
    with pytest.raises(UsageError, match="--rotation"):
        Augment(rotation=-3)


def test_augmentation_changes_training_batches_only() -> None:
    from cnnedge.trainer.tfdata import make_dataset

    img = np.zeros((4, 16, 16, 3), np.uint8)
    img[:, :, :5] = 255  # a bright left edge: a flip or rotation moves it
    y = np.arange(4) % 2
    plain = next(iter(make_dataset(img, y, 4)))[0].numpy()
    np.testing.assert_array_equal(plain, img.astype(np.float32))
    aug = Augment(flip=True, rotation=30, zoom=0.2, shift=0.2, shear=0.2)
    seen = [next(iter(make_dataset(img, y, 4, shuffle=True, seed=s, augment=aug)))[0].numpy() for s in range(3)]
    assert all(x.shape == img.shape and x.min() >= 0 and x.max() <= 255 for x in seen)
    assert any(not np.allclose(x, img) for x in seen)


def _interrupt_first_batch():
    """A Keras callback: Ctrl-C during the first epoch, before any checkpoint."""
    import keras

    class InterruptFirstBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            raise KeyboardInterrupt

    return InterruptFirstBatch()


# a run's train_config.json (what makes a folder a run); its other files need not be real here
RUN_CONFIG = {"preset": "mnist-dense", "epochs": 1, "batch_size": 32, "channels": 3, "seed": 0, "patience": 5,
              "learning_rate": 0.001, "img_size": [8, 8], "weights": None, "augment": {}, "mixed_precision": False,
              "data": "digits", "dataset_spec": {"source": "digits", "size": [8, 8], "seed": 0}}


def _old_run(run: Path) -> dict[str, bytes]:
    """A finished run with its export outputs, and files that are not cnn-train's or cnn-export's."""
    run.mkdir(parents=True)
    files = {name: f"old {name}".encode() for name in ARTIFACTS}
    files["train_config.json"] = json.dumps(RUN_CONFIG).encode()
    files.update({n: f"old {n}".encode() for n in (
        "model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.engine", "model.int8.engine",
        "model.int8.engine.json", "export_report.json", "model.int8.calib-0123abcd.json")})
    for name, body in files.items():
        (run / name).write_bytes(body)
    (run / "images" / "3").mkdir(parents=True)
    (run / "images" / "3" / "a.png").write_bytes(b"not ours")
    (run / "notes.txt").write_bytes(b"not ours either")
    return files


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_force_replaces_the_old_run_only_once_the_new_one_has_a_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _old_run(run)
    before = _snapshot(run)
    # data that cannot train: refused before anything in the run folder is touched
    for c in ("a", "b"):
        (tmp_path / "bad" / c).mkdir(parents=True)
        (tmp_path / "bad" / c / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n corrupt")
    code, _, err = _cli(["--preset", "mnist-dense", "--data", str(tmp_path / "bad"), "--out", str(run), "--force",
                         "--epochs", "1", "--quiet"])
    assert code == 2 and "no readable training images" in err, err
    assert _snapshot(run) == before
    # interrupted before the first checkpoint: the old run comes back as it was
    said: list[str] = []
    cfg = TrainConfig(preset="mnist-dense", data="digits", out=str(run), epochs=1, img_size=(8, 8), force=True,
                      verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_interrupt_first_batch()], log=said.append)
    assert _snapshot(run) == before and not (run / ".cnn-train-new").exists()
    assert "still holds the previous run, unchanged" in said[-1] and "--resume" not in said[-1], said[-1]
    # a run that reaches its checkpoint replaces the old run and its stale exports; other files stay
    code, stdout, err = _cli(["--preset", "mnist-dense", "--data", "digits", "--img-size", "8", "--out", str(run),
                              "--force", "--epochs", "1", "--quiet"])
    assert code == 0, err
    assert f"{run} now holds the new run" in stdout, stdout
    after = _snapshot(run)
    assert after["images/3/a.png"] == b"not ours" and after["notes.txt"] == b"not ours either"
    assert set(after) == set(ARTIFACTS) | {"images/3/a.png", "notes.txt"}, sorted(after)
    assert all(after[n] != before[n] for n in ARTIFACTS)
    load_keras_model(run / "model.keras")


@pytest.mark.slow
def test_ctrl_c_before_the_first_epoch_leaves_no_run_to_refuse(tmp_path: Path) -> None:
    run = tmp_path / "run"
    said: list[str] = []
    cfg = TrainConfig(preset="mnist-dense", data="digits", out=str(run), epochs=1, img_size=(8, 8), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_interrupt_first_batch()], log=said.append)
    assert "start again with the same command" in said[-1] and "--resume" not in said[-1], said[-1]
    assert not (run / "model.keras").exists()
    # a run without a checkpoint (e.g. one killed before its first epoch) has nothing to protect
    (run / "train_config.json").write_text(json.dumps({**RUN_CONFIG, "preset": "digits-cnn"}))
    (run / "history.csv").write_text("epoch,loss\n")
    code, _, err = _cli(["--preset", "mnist-dense", "--data", "digits", "--img-size", "8", "--out", str(run),
                         "--epochs", "1", "--quiet"])
    assert code == 0, err
    assert json.loads((run / "train_config.json").read_text())["preset"] == "mnist-dense"


@pytest.mark.slow
def test_the_final_summary_counts_and_names_the_skipped_images(tmp_path: Path) -> None:
    data = _folder(tmp_path / "shapes")
    for i in range(6):
        (data / "square" / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n corrupt")
    out = tmp_path / "run"
    code, stdout, err = _cli(["--preset", "mnist-dense", "--data", str(data), "--out", str(out), "--img-size", "8",
                              "--epochs", "1", "--quiet"])
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert lines[-1].startswith("cnn-train: mnist-dense: test accuracy") and str(out) in lines[-1]
    assert "7 unreadable images skipped" in lines[-1], lines[-1]
    names = lines[-2]
    assert "skipped 7 unreadable image" in names and "and 2 more" in names, names
    assert names.count(str(data)) == 5, names  # the first five by name, then a count


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_keras_cannot_load_and_continues_once_a_bad_history_is_moved_away(
        tmp_path: Path) -> None:
    import shutil
    import zipfile

    run = tmp_path / "run"
    code, _, err = _cli(["--preset", "mnist-dense", "--data", "digits", "--img-size", "8", "--out", str(run),
                         "--epochs", "1", "--quiet"])
    assert code == 0, err
    # a zip Keras cannot load (the weights are gone): refused in one line, nothing written, no advice to resume
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    with zipfile.ZipFile(run / "model.keras") as zin, zipfile.ZipFile(broken / "model.keras", "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith((".h5", ".npz")):
                zout.writestr(info, zin.read(info))
    before = {p.name: p.read_bytes() for p in broken.iterdir()}
    code, out, err = _cli(["--resume", str(broken), "--epochs", "2", "--quiet"])
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{broken / 'model.keras'}: the run's checkpoint cannot be loaded" in err, err
    assert "--resume" not in out and "stopped by" not in out, out
    assert {p.name: p.read_bytes() for p in broken.iterdir()} == before
    # a garbage history: refused; moved away as the error says, the run continues from its checkpoint
    (run / "history.csv").write_text("epoch,loss\nx,y\n")
    code, _, err = _cli(["--resume", str(run), "--epochs", "2", "--quiet"])
    assert code == 2 and "move history.csv away to continue from the checkpoint" in err, err
    (run / "history.csv").rename(tmp_path / "history.bad.csv")
    code, _, err = _cli(["--resume", str(run), "--epochs", "2", "--quiet"])
    assert code == 0, err
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3  # the header and epochs 1, 2
