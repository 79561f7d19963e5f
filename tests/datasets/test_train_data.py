"""Data sources: the embedded digits, class folders (with a corrupt file), CSV, keras.datasets,
and the split_images contract the exporter relies on."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnedge.errors import DataError, UsageError
from cnnedge.datasets import SPLITS, load_split, make_spec, read_idx, split_images, stratified_indices

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def _folder(root: Path, classes=("b_cat", "a_dog"), per_class=10, corrupt=True, size=(20, 30)) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = np.full(size + (3,), 40 + 150 * ci, np.uint8)
            img[: i + 1] = rng.integers(0, 255, (i + 1, size[1], 3), dtype=np.uint8)
            assert cv2.imwrite(str(root / c / f"{i:03d}.png"), img)
    if corrupt:
        (root / classes[0] / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png IEND")
        (root / classes[0] / "readme.txt").write_text("not an image")
    return root


def test_digits_split_is_stratified_deterministic_and_bgr_uint8() -> None:
    spec = make_spec("digits", seed=3)
    assert spec == {"source": "digits", "size": [32, 32], "seed": 3, "val_split": 0.15, "test_split": 0.15}
    sizes = {}
    for split in SPLITS:
        images, labels, classes = split_images(spec, split)
        assert classes == [str(i) for i in range(10)]
        assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in images)
        assert np.array_equal(images[0][:, :, 0], images[0][:, :, 2])  # gray scans as BGR
        assert set(np.bincount(labels, minlength=10)) != {0}
        sizes[split] = len(images)
    assert sum(sizes.values()) == 1797
    assert 260 <= sizes["test"] <= 280 and 260 <= sizes["val"] <= 280
    again, labels2, _ = split_images(spec, "test", limit=20)
    first, labels1, _ = split_images(spec, "test")
    assert np.array_equal(labels2, labels1[:20])
    assert all(np.array_equal(a, b) for a, b in zip(again, first[:20]))
    assert len(set(labels2.tolist())) >= 5  # a limit still mixes classes
    other = split_images(make_spec("digits", seed=4), "test")[1]
    assert not np.array_equal(other, labels1)


@pytest.mark.slow
def test_split_images_does_not_import_tensorflow() -> None:
    code = ("import sys; from cnnedge.datasets import make_spec, split_images; "
            "im, y, c = split_images(make_spec('digits'), 'val', limit=4); "
            "assert len(im) == 4; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('tensorflow', 'keras')))[:3]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-1000:]


def test_stratified_indices_partition_every_class() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 3, 7])
    idx = stratified_indices(labels, 0.2, 0.1, seed=0)
    allidx = np.concatenate([idx[k] for k in SPLITS])
    assert sorted(allidx.tolist()) == list(range(len(labels)))
    for c in range(4):
        assert (labels[idx["train"]] == c).any() and (labels[idx["val"]] == c).any()
    assert (labels[idx["val"]] == 1).sum() == 4


def test_folder_source_sorted_classes_and_corrupt_file_skipped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "pets")
    spec = make_spec(str(root), seed=1)
    assert spec["source"] == "folder" and spec["path"] == str(root.resolve())
    assert spec["classes"] == ["a_dog", "b_cat"]  # sorted, not os.listdir order
    train = load_split(spec, "train")
    val = load_split(spec, "val")
    assert len(train) + len(val) == 20  # the .txt is ignored; the broken png skipped
    skipped = train.skipped + val.skipped
    assert [Path(p).name for p, _ in skipped] == ["zz_broken.png"]
    assert "truncated" in skipped[0][1] or "not a readable image" in skipped[0][1]
    assert all(im.shape == (20, 30, 3) and im.dtype == np.uint8 for im in train.images)  # original size, BGR
    assert len(val) == 4 and sorted(val.labels.tolist()) == [0, 0, 1, 1]
    test_images, test_labels, _ = split_images(spec, "test")  # no test set: measured on validation
    assert np.array_equal(test_labels, val.labels)
    spec2 = make_spec(str(root), seed=1, val_split=0.2, test_split=0.2)
    sizes = [len(load_split(spec2, s)) for s in SPLITS]
    assert sizes[1] == 4 and sizes[2] == 4 and sum(sizes) == 20


def test_folder_with_train_val_test_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _folder(root / "train", corrupt=False)
    _folder(root / "val", per_class=3, corrupt=False)
    _folder(root / "test", per_class=2, corrupt=False)
    spec = make_spec(str(root))
    assert spec["subdirs"] and spec["has_val_dir"] and spec["has_test_dir"]
    assert [len(load_split(spec, s)) for s in SPLITS] == [20, 6, 4]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        make_spec(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="did you mean 'mnist'"):
        make_spec("minst")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        make_spec(str(tmp_path / "empty"))
    _folder(tmp_path / "one", classes=("only",), corrupt=False)
    with pytest.raises(DataError, match="only one class"):
        make_spec(str(tmp_path / "one"))
    (tmp_path / "two" / "a").mkdir(parents=True)
    (tmp_path / "two" / "b").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        make_spec(str(tmp_path / "two"))
    with pytest.raises(UsageError, match="--val-split"):
        make_spec("digits", val_split=1.5)
    with pytest.raises(UsageError, match="too little to train"):
        make_spec("digits", val_split=0.5, test_split=0.45)
    with pytest.raises(UsageError, match="own test set"):
        make_spec("mnist", test_split=0.1)
    with pytest.raises(DataError, match="unknown source"):
        split_images({"source": "nope"}, "train")
    with pytest.raises(UsageError, match="split must be one of"):
        split_images(make_spec("digits"), "training")


def _csv(path: Path, n=40, side=6, header=True) -> Path:
    rng = np.random.default_rng(0)
    lines = ["label," + ",".join(f"pixel{i + 1}" for i in range(side * side))] if header else []
    for i in range(n):
        lines.append(f"{i % 4}," + ",".join(str(v) for v in rng.integers(0, 256, side * side)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_source_infers_the_image_shape(tmp_path: Path) -> None:
    p = _csv(tmp_path / "fashion.csv")
    spec = make_spec(str(p), seed=2)
    assert spec["source"] == "csv" and spec["shape"] == [6, 6, 1] and spec["classes"] == ["0", "1", "2", "3"]
    train, val = load_split(spec, "train"), load_split(spec, "val")
    assert len(train) + len(val) == 40 and len(val) == 8
    assert train.images[0].shape == (6, 6, 3) and train.images[0].dtype == np.uint8
    rows = [line.split(",") for line in p.read_text().splitlines()[1:]]
    pixel_rows = {tuple(int(v) for v in r[1:]) for r in rows}
    assert tuple(train.images[0][:, :, 0].reshape(-1).tolist()) in pixel_rows
    spec_wide = make_spec(str(p), csv_shape=(4, 9))
    assert spec_wide["shape"] == [4, 9, 1]


def test_csv_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("label,a,b,c,d,e\n0,1,2,3,4,5\n1,1,2,3,4,5\n")
    with pytest.raises(DataError, match="do not form a square"):
        make_spec(str(bad))
    p = _csv(tmp_path / "ok.csv")
    with pytest.raises(DataError, match="do not form a 5x5"):
        make_spec(str(p), csv_shape=(5, 5))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("0,1,2,3,4\n1,1,2,3\n")
    with pytest.raises(DataError, match="line 2 has 4 columns"):
        make_spec(str(ragged))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty CSV"):
        make_spec(str(tmp_path / "empty.csv"))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="must be a .csv"):
        make_spec(str(tmp_path / "x.json"))


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(), reason=f"no real MNIST in {MNIST_DIR}")
def test_keras_mnist_source_reads_the_keras_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a Keras cache made of real MNIST digits, placed by hand as the offline error tells users to
    x = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    y = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    (tmp_path / "datasets").mkdir()
    np.savez(tmp_path / "datasets" / "mnist.npz", x_train=x[:600], y_train=y[:600], x_test=x[600:700],
             y_test=y[600:700])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = make_spec("mnist", seed=0)
    assert spec == {"source": "mnist", "seed": 0, "val_split": 0.1}
    tr, va, te = (split_images(spec, s) for s in SPLITS)
    assert len(tr[0]) + len(va[0]) == 600 and 55 <= len(va[0]) <= 65 and len(te[0]) == 100
    assert te[0][0].shape == (28, 28, 3)
    assert sorted(te[1].tolist()) == sorted(y[600:700].tolist())


@pytest.mark.slow
def test_keras_dataset_offline_error_says_where_keras_caches(tmp_path: Path) -> None:
    code = ("from cnnedge.datasets import make_spec, split_images\n"
            "from cnnedge.errors import DataError\n"
            "try:\n    split_images(make_spec('fashion_mnist'), 'train')\n"
            "except DataError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "kh"), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    if "ERR" not in out.stdout:
        pytest.skip("the network is reachable here; the offline error cannot be shown")
    line = [s for s in out.stdout.splitlines() if s.startswith("ERR")][0]
    assert "cannot load fashion_mnist" in line and str(tmp_path / "kh" / "datasets") in line
    assert "fashion-mnist/" in line


def _split_errors(path: Path) -> list[str]:
    """The DataError of each split of the CSV at ``path`` that fails to load (each row is in one split)."""
    spec = make_spec(str(path), val_split=0.2, test_split=0.2)
    errors = []
    for split in SPLITS:
        try:
            load_split(spec, split)
        except DataError as exc:
            errors.append(str(exc))
    return errors


def test_csv_value_errors_name_the_line_in_the_file(tmp_path: Path) -> None:
    lines = ["label," + ",".join(f"p{i}" for i in range(4))]
    lines += [f"{i % 2},1,2,3,4" for i in range(20)]
    bad, big = list(lines), list(lines)
    bad[12] = "0,1,x,3,4"  # line 13 of the file (the header is line 1)
    big[7] = "1,1,2,300,4"  # line 8
    for name, rows, needle in (("bad", bad, "line 13, column 3 (p1): pixel value 'x' is not a number from 0 to 255"),
                               ("big", big, "line 8, column 4 (p2): pixel value '300' is not a number from 0 to 255")):
        p = tmp_path / f"{name}.csv"
        p.write_text("\n".join(rows) + "\n")
        errors = _split_errors(p)
        assert len(errors) == 1 and needle in errors[0], errors


def _labelled_csv(path: Path, labels: list[str], header: bool = True) -> Path:
    """Four 2x2 gray pixels a row, one row per label."""
    rows = (["label,p0,p1,p2,p3"] if header else []) + [f"{lab},{i % 256},7,8,9" for i, lab in enumerate(labels)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_labels_are_class_indices_or_names_and_a_bad_one_is_named_by_line_and_column(tmp_path: Path) -> None:
    good = [str(i % 3) for i in range(30)]
    cases = {  # row 9 is line 11 of the file (the header is line 1)
        "negative": ("-1", "line 11, column 1 (label): label '-1' is negative"),
        "float": ("1.5", "line 11, column 1 (label): label '1.5' is not a whole number"),
        "nan": ("nan", "line 11, column 1 (label): label 'nan' is not a whole number"),
        "beyond a gap": ("255", "line 11, column 1 (label): label 255 is out of range: the other labels are class "
                                "indices 0..2 and no row is labelled 3..254"),
        "a name among numbers": ("cat", "line 11, column 1 (label): label 'cat' is a name while most labels are "
                                        "class indices"),
        "empty": ("", "line 11, column 1 (label): the label is empty"),
    }
    for name, (label, needle) in cases.items():
        labels = list(good)
        labels[9] = label
        path = _labelled_csv(tmp_path / f"{name.replace(' ', '_')}.csv", labels)
        with pytest.raises(DataError) as info:
            make_spec(str(path))
        assert str(info.value).startswith(f"{path}: {needle}"), (name, str(info.value))
        assert "\n" not in str(info.value)
    # a number among names, without a header: column 1 has no name
    names = ["cat", "dog"] * 10
    names[4] = "3"
    path = _labelled_csv(tmp_path / "names.csv", names, header=False)
    with pytest.raises(DataError, match=r"names.csv: line 5, column 1: label '3' is a number while most labels are "
                                        "class names"):
        make_spec(str(path))
    # what is accepted: whole numbers written as floats, indices from 1, names
    for labels, classes in (([f"{i % 3}.0" for i in range(30)], ["0", "1", "2"]),
                            ([str(1 + i % 3) for i in range(30)], ["1", "2", "3"]),
                            ([("cat", "dog")[i % 2] for i in range(30)], ["cat", "dog"])):
        spec = make_spec(str(_labelled_csv(tmp_path / "ok.csv", labels)))
        assert spec["classes"] == classes
        assert sum(len(load_split(spec, s)) for s in ("train", "val")) == 30


def test_csv_pixels_that_are_not_numbers_from_0_to_255_are_named_by_line_and_column(tmp_path: Path) -> None:
    for value, col in (("nan", 2), ("inf", 3), ("-inf", 5), ("", 4), ("-1", 2)):
        rows = ["label,p0,p1,p2,p3"] + [f"{i % 2},1,2,3,4" for i in range(20)]
        pixels = ["1", "2", "3", "4"]
        pixels[col - 2] = value
        rows[6] = "1," + ",".join(pixels)  # line 7
        path = tmp_path / "px.csv"
        path.write_text("\n".join(rows) + "\n")
        errors = _split_errors(path)
        want = f"{path}: line 7, column {col} (p{col - 2}): pixel value {value!r} is not a number from 0 to 255"
        assert len(errors) == 1 and errors[0].startswith(want), (value, errors)


def test_seed_bounds_and_csv_shape_only_for_a_csv(tmp_path: Path) -> None:
    for seed in (-1, 2**32, 2**64, True, 1.5):
        with pytest.raises(UsageError, match="seed must be a whole number from 0 to 4294967295"):
            make_spec("digits", seed=seed)
    assert make_spec("digits", seed=2**32 - 1)["seed"] == 2**32 - 1
    root = _folder(tmp_path / "pets", corrupt=False)
    for data in ("digits", "mnist", str(root)):
        with pytest.raises(UsageError, match="csv_shape applies to a .csv data, not to"):
            make_spec(data, csv_shape=(4, 4))
    p = _csv(tmp_path / "ok.csv")
    with pytest.raises(DataError, match="do not form a 18446744073709551616x1x1 image"):
        make_spec(str(p), csv_shape=(2**64, 1))
