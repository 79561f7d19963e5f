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


# what cnn-train writes first into every run: how a run folder is recognised
RUN_CONFIG = {"preset": "digits-cnn", "epochs": 2, "batch_size": 32, "channels": 3, "seed": 0, "patience": 5,
              "learning_rate": 0.001, "img_size": None, "weights": None, "augment": {}, "mixed_precision": False,
              "data": "digits", "dataset_spec": {"source": "digits", "size": [8, 8], "seed": 0}}


def test_existing_run_needs_force_and_resume_needs_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps(RUN_CONFIG))
    (run / "model.keras").write_bytes(b"precious")
    _usage_error(["--preset", "digits-cnn", "--out", str(run)], "already holds a run", "--force", "--resume")
    assert (run / "model.keras").read_bytes() == b"precious"
    _usage_error(["--resume", str(tmp_path / "missing")], "no such run folder")
    (run / "train_config.json").unlink()
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


def _old(name: str) -> bytes:
    """The old run's files: its train_config.json is a run's, which makes the folder a run."""
    return json.dumps(RUN_CONFIG).encode() if name == "train_config.json" else f"old {name}".encode()


def _killed_force_run(run: Path, committed: bool) -> None:
    """What a --force run killed at some moment leaves: the old run in place, the new one beside it."""
    run.mkdir()
    for name in ("model.keras", "card.json", "metrics.json", "train_config.json", "model.onnx"):
        (run / name).write_bytes(_old(name))
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
        assert (run / name).read_bytes() == _old(name)


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


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path: Path, force: list[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("metrics.json", "history.csv", "model.engine", "model.onnx", "card.json", "notes.txt"):
        (mine / name).write_text(f"the user's {name}")
    # a train_config.json that is not a cnn-train run's does not make the folder one
    (mine / "train_config.json").write_text(json.dumps({"lr": 0.1, "model": "resnet"}))
    before = _files(mine)
    err = _usage_error(["--preset", "digits-cnn", "--data", "digits", "--out", str(mine), *force],
                       f"--out {mine}: not a cnn-train run", "card.json, history.csv, metrics.json, model.engine and "
                       "3 more", "never writes into such a folder, with or without --force", "choose another --out")
    assert _files(mine) == before and sorted(p.name for p in mine.iterdir()) == sorted(before), err
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".keep").write_text("")
    _usage_error(["--preset", "digits-cnn", "--out", str(hidden), *force], "not a cnn-train run", ".keep")
    assert [p.name for p in hidden.iterdir()] == [".keep"]


def test_which_folders_a_run_may_write_into(tmp_path: Path) -> None:
    from cnnedge.errors import FileExistsRefused
    from cnnedge.trainer.rundir import check_out, is_run

    said: list[str] = []
    check_out(tmp_path / "new", False, said.append)  # a new folder
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", False, said.append)
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps(RUN_CONFIG))
    (run / "notes.txt").write_text("the user's own file in a run")
    assert is_run(run)
    check_out(run, False, said.append)  # a run stopped before its first checkpoint: started over
    (run / "model.keras").write_bytes(b"a checkpoint")
    with pytest.raises(FileExistsRefused, match="already holds a run"):
        check_out(run, False, said.append)
    check_out(run, True, said.append)
    assert not said
    for body in ("{}", "[]", "not json", json.dumps({"preset": "digits-cnn"}), json.dumps(RUN_CONFIG) + " " * 2**20):
        (run / "train_config.json").write_text(body)
        assert not is_run(run), body[:40]
        with pytest.raises(FileExistsRefused, match="not a cnn-train run"):
            check_out(run, True, said.append)
    (run / "train_config.json").unlink()
    (run / "train_config.json").symlink_to("/dev/zero")  # never read
    assert not is_run(run)


def test_out_inside_the_data_folder_is_refused(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    data = tmp_path / "pets"
    for c in ("cat", "dog"):
        (data / c).mkdir(parents=True)
        for i in range(3):
            assert cv2.imwrite(str(data / c / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    (tmp_path / "link").symlink_to(data)
    before = _files(data)
    for out in (data / "run", data / "cat" / "run", data, tmp_path / "link" / "run", Path(str(data) + "/x/../run")):
        _usage_error(["--preset", "digits-cnn", "--data", str(data), "--out", str(out)], f"--out {out}: is ",
                     f"--data folder {data}", "would become a class", f"choose an --out outside {data}")
        assert _files(data) == before and sorted(p.name for p in data.iterdir()) == ["cat", "dog"]
    # the same folder by another name, as --data
    _usage_error(["--preset", "digits-cnn", "--data", str(tmp_path / "link"), "--out", str(data / "run")],
                 "is inside the --data folder")


# every numeric flag: (the bound its --help states, values beyond it)
NUMERIC_FLAGS = {
    "--epochs": ("1 to 100000", ["0", "100001", str(2**64)]),
    "--batch-size": ("1 to 65536", ["0", "65537", str(2**64)]),
    "--img-size": ("4 to 4096", ["3", "4097x32", str(2**64)]),
    "--channels": ("3 colour channels (default) or 1", ["2", "0"]),
    "--val-split": ("0 to below 1", ["1", "-0.1", "nan", "0.95"]),
    "--test-split": ("0 to below 1", ["1", "nan", "inf"]),
    "--csv-shape": ("H and W 1 to 4096, C 1 or 3", ["0x4", "4097x1", "4x4x2", "4x4x3x1"]),
    "--seed": ("0 to 4294967295", ["-1", "4294967296", str(2**64)]),
    "--patience": ("0 (never) to 100000", ["-1", "100001"]),
    "--learning-rate": ("1e-08 to below 10", ["0", "1e-300", "10", "nan", "-0.1"]),
    "--rotation": ("0 to 180", ["-1", "181", "nan"]),
    "--zoom": ("0 to below 1", ["1", "-0.1", "inf"]),
    "--shift": ("0 to below 1", ["1", "nan"]),
    "--shear": ("0 to below 1", ["1.5", "-1"]),
    "--crop-pct": ("F above 0 and at most 1, and input/F at most 64,000,000 pixels", ["0", "1.5", "nan", "0.0001",
                                                                                     "1e-320"]),
    "--pad-value": ("0..255", ["-1", "256", "nan"]),
}


def test_every_numeric_flag_states_its_bound_in_help_and_refuses_a_value_beyond_it(tmp_path: Path) -> None:
    from cnnedge.cli.train import _shape, _size

    actions = {a.option_strings[-1]: a for a in build_parser().flags if a.option_strings}
    numeric = {f for f, a in actions.items() if a.type in (int, float, _size, _shape)} | {"--crop-pct", "--pad-value"}
    assert numeric == set(NUMERIC_FLAGS)  # a new numeric flag needs its bound here and in its --help
    out = tmp_path / "r"
    for flag, (bound, values) in NUMERIC_FLAGS.items():
        assert bound in " ".join(actions[flag].help.split()), (flag, actions[flag].help)
        for value in values:
            err = _usage_error(["--preset", "digits-cnn", "--out", str(out), flag, value], flag)
            assert not out.exists(), (flag, value, err)
    _usage_error(["--preset", "digits-cnn", "--out", str(out), "--crop-pct", "0.0001"],
                 "--crop-pct 0.0001 resizes every image to 320000x320000 before the crop to 32x32",
                 "over the 64,000,000-pixel limit", "at least 0.004")


def test_resume_of_a_damaged_run_is_a_one_line_error_before_the_data_is_read(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps(RUN_CONFIG))
    (run / "model.keras").write_bytes(b"PK\x03\x04 a truncated checkpoint")
    before = _files(run)
    code, out, err = _cli(["--resume", str(run), "--epochs", "3"])
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{run / 'model.keras'}: the run's checkpoint cannot be loaded (not a valid .keras archive" in err, err
    assert "restore it, or start the run again with --force" in err and not out, (err, out)
    for history, needle in ((b"epoch,loss\nx,y\n\x00\x01", "line 2: column 'epoch' holds 'x', not a whole number"),
                            (b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "not a text CSV file"),
                            (b"epoch,loss\n1,0.5\n3,0.4\n", "line 3: column 'epoch' holds '3', expected 2"),
                            (b"epoch,loss\n1,nope\n", "line 2: column 'loss' holds 'nope', not a number"),
                            (b"loss,val_loss\n1,2\n", "line 1: the header must start with 'epoch'")):
        (run / "history.csv").write_bytes(history)
        _usage_error(["--resume", str(run)], f"{run / 'history.csv'}: {needle}", "not a cnn-train history",
                     "move history.csv away to continue from the checkpoint")
        assert _files(run) == {**before, "history.csv": history}


def test_a_csv_with_nan_pixels_or_bad_labels_is_refused_before_training(tmp_path: Path) -> None:
    rows = ["label," + ",".join(f"pixel{i}" for i in range(16))]
    rows += [f"{i % 3}," + ",".join(str((i * 7 + j) % 256) for j in range(16)) for i in range(60)]
    out = tmp_path / "run"
    for name, line, mutate, needle in (
            ("nan", 23, lambda r: r.replace(",", ",nan,", 1).rsplit(",", 1)[0], "column 2 (pixel0): pixel value 'nan'"),
            ("range", 41, lambda r: "7" + r[1:], "column 1 (label): label 7 is out of range"),
            ("float", 12, lambda r: "0.5" + r[1:], "column 1 (label): label '0.5' is not a whole number")):
        lines = list(rows)
        lines[line - 1] = mutate(lines[line - 1])
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join(lines) + "\n")
        _usage_error(["--preset", "mnist-dense", "--data", str(path), "--out", str(out), "--epochs", "1"],
                     f"{path}: line {line}, {needle}")
        assert not out.exists()  # refused before the run folder was made: nothing trained
