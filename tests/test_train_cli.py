"""cnn-train's command line: --list, and one-line errors with exit code 2 for user mistakes."""
from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from cnnedge.cli._run import run_cli
from cnnedge.cli.train import build_parser, main
from cnnedge.trainer.presets import PRESETS


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out):
        code = run_cli("cnn-train", main, argv, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _usage_error(argv: list[str], *needles: str) -> str:
    code, _, err = _cli(argv)
    assert code == 2, err
    assert err.startswith("cnn-train: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_list_names_every_preset() -> None:
    code, out, _ = _cli(["--list"])
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(PRESETS)
    assert {line.split()[0] for line in lines} == set(PRESETS)


def test_every_option_has_help_with_an_example() -> None:
    for action in build_parser()._actions:
        if action.dest in ("help", "list", "quiet", "traceback"):
            continue
        assert action.help and "e.g." in action.help, action.dest


def test_unknown_preset_suggests_the_closest(tmp_path: Path) -> None:
    _usage_error(["--preset", "digit-cnn", "--out", str(tmp_path / "r")], "unknown preset 'digit-cnn'",
                 "did you mean digits-cnn")
    assert not (tmp_path / "r").exists()


def test_missing_and_bad_data(tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    _usage_error(["--preset", "mnist-cnn", "--data", str(tmp_path / "nope"), "--out", out], "no such file or folder")
    _usage_error(["--preset", "mnist-cnn", "--data", "cifar-10", "--out", out], "did you mean 'cifar10'")
    (tmp_path / "empty").mkdir()
    _usage_error(["--preset", "mnist-cnn", "--data", str(tmp_path / "empty"), "--out", out], "empty folder")
    (tmp_path / "one" / "cats").mkdir(parents=True)
    (tmp_path / "one" / "cats" / "a.png").write_bytes(b"x")
    _usage_error(["--preset", "mnist-cnn", "--data", str(tmp_path / "one"), "--out", out], "only one class")
    (tmp_path / "odd.csv").write_text("label,p1,p2,p3\n0,1,2,3\n1,3,2,1\n")
    _usage_error(["--preset", "mnist-cnn", "--data", str(tmp_path / "odd.csv"), "--out", out],
                 "3 pixel columns do not form")
    assert not (tmp_path / "r").exists()


def test_impossible_numbers(tmp_path: Path) -> None:
    base = ["--preset", "digits-cnn", "--out", str(tmp_path / "r")]
    _usage_error(base + ["--img-size", "big"], "--img-size", "expected H or HxW")
    _usage_error(base + ["--img-size", "2x2"], "impossible")
    _usage_error(base + ["--epochs", "0"], "--epochs must be a positive integer")
    _usage_error(base + ["--batch-size", "-4"], "--batch-size must be a positive integer")
    _usage_error(base + ["--val-split", "1.2"], "--val-split must be a fraction")
    _usage_error(base + ["--zoom", "3"], "--zoom")
    _usage_error(base + ["--channels", "2"], "--channels")
    _usage_error(["--out", str(tmp_path / "r")], "--preset is required")
    _usage_error(["--preset", "digits-cnn"], "--out is required")
    _usage_error(["--preset", "digits-cnn", "--out", "x", "--bogus"], "unrecognized arguments: --bogus")


def test_weights_only_for_transfer_presets(tmp_path: Path) -> None:
    _usage_error(["--preset", "mobilenetv2-transfer", "--out", str(tmp_path / "r"), "--weights",
                  str(tmp_path / "w.h5"), "--epochs", "1"], "no such file")


def test_existing_run_needs_force_and_resume_needs_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"precious")
    _usage_error(["--preset", "digits-cnn", "--out", str(run)], "--force", "--resume")
    assert (run / "model.keras").read_bytes() == b"precious"
    _usage_error(["--resume", str(tmp_path / "missing")], "no such run folder")
    _usage_error(["--resume", str(run)], "not a cnn-train run")
    _usage_error(["--resume", str(run), "--preset", "digits-cnn"], "give only --resume")


@pytest.mark.slow
def test_mixed_precision_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present: --mixed-precision is allowed here")
    _usage_error(["--preset", "digits-cnn", "--out", str(tmp_path / "r"), "--mixed-precision"],
                 "--mixed-precision needs a GPU")


def test_resume_with_a_malformed_config_is_a_one_line_error(tmp_path: Path) -> None:
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"a checkpoint")
    good = {"preset": "digits-cnn", "epochs": 2, "batch_size": 32, "channels": 3, "seed": 0, "patience": 5,
            "learning_rate": 0.001, "img_size": None, "weights": None, "augment": {}, "mixed_precision": False,
            "data": "digits", "dataset_spec": {"source": "digits", "size": [8, 8], "seed": 0}}
    cases = [({}, "missing preset"), ([], "expected a JSON object"),
             ({**good, "epochs": "2"}, "epochs must be a positive integer"),
             ({**good, "dataset_spec": {}}, "dataset_spec must be an object with a 'source'"),
             ({**good, "dataset_spec": {"source": "folder"}}, "lacks path, classes"),
             ({**good, "augment": {"zoom": "x"}}, "augment must be"),
             ({**good, "img_size": [8]}, "img_size must be")]
    for config, needle in cases:
        (run / "train_config.json").write_text(json.dumps(config))
        _usage_error(["--resume", str(run)], "train_config.json", "not a valid cnn-train config", needle)


def test_resume_refuses_flags_it_would_ignore(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    for extra, flag in ((["--data", "digits"], "--data"), (["--seed", "0"], "--seed"), (["--force"], "--force"),
                        (["--batch-size", "8"], "--batch-size"), (["--bat", "8"], "--batch-size"),
                        (["--img-size=16"], "--img-size"), (["--flip"], "--flip"), (["--out", run], "--out"),
                        (["--learning-rate", "0.1"], "--learning-rate"), (["--channels", "3"], "--channels")):
        err = _usage_error(["--resume", run, "--epochs", "3", *extra], f"{flag} cannot change them")
        assert "--epochs" in err.split("cannot change")[1]  # the usage names what is allowed
    # --epochs, --patience and --quiet are for the continued run: the run folder is checked next
    _usage_error(["--resume", run, "--epochs", "3", "--patience", "2", "--quiet"], "no such run folder")


def _killed_force_run(run: Path, committed: bool) -> None:
    """What a --force run killed at some moment leaves: the old run in place, the new one beside it."""
    run.mkdir()
    for name in ("model.keras", "card.json", "metrics.json", "train_config.json", "model.onnx"):
        (run / name).write_bytes(f"old {name}".encode())
    new = run / ".cnn-train-new"
    new.mkdir()
    for name in ("model.keras", "card.json", "train_config.json", "history.csv"):
        (new / name).write_bytes(f"new {name}".encode())
    if committed:  # killed during the renames: the marker is written and the model already moved
        (new / "swap.json").write_text(json.dumps({"files": ["model.keras", "card.json", "train_config.json",
                                                             "history.csv"]}))
        os.replace(new / "model.keras", run / "model.keras")


def test_a_force_run_killed_before_its_swap_leaves_the_old_run_and_is_cleared_aloud(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _killed_force_run(run, committed=False)
    code, out, err = _cli(["--preset", "digits-cnn", "--out", str(run)])
    assert code == 2 and "already holds a run" in err and "--force" in err, err
    assert "removed the files of a --force run that was stopped" in out and "holds its previous run" in out, out
    assert not (run / ".cnn-train-new").exists()
    for name in ("model.keras", "card.json", "metrics.json", "train_config.json", "model.onnx"):
        assert (run / name).read_bytes() == f"old {name}".encode()


def test_a_force_run_killed_during_its_swap_is_finished_aloud(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _killed_force_run(run, committed=True)
    code, out, err = _cli(["--resume", str(run)])
    assert code == 2 and "cannot read train_config.json" in err, err  # the new run's (fake) config, moved in
    assert "finished replacing its run with the new one a killed --force run had completed" in out, out
    for name in ("model.keras", "card.json", "train_config.json", "history.csv"):
        assert (run / name).read_bytes() == f"new {name}".encode()
    assert not (run / "metrics.json").exists() and not (run / "model.onnx").exists()
    assert not (run / ".cnn-train-new").exists()
