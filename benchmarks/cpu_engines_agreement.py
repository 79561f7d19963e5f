"""OpenVINO against ONNX Runtime on the files cnn-export writes, and INT8 against FP32 on each engine (issue 31).

    nice .venv/bin/python benchmarks/cpu_engines_agreement.py [--out benchmarks/out/cpu_engines] [--models ...]

Three trained models, each exported with ``--fp16 --int8`` (the export's own gate runs on every installed CPU
engine; its table is printed), then every file run on the held-out images by both engines through the runtime's
public API (``Classifier(path, backend="ort-cpu" | "openvino", threads=1)``, the card's preprocessing):

- ``demo``: digits-cnn trained as ``make demo`` does (:func:`cnnedge.demo.step_train`: 20 epochs, 629 of the
  1,797 digits held out), verified on those 629 digits.
- ``imagenette-cnn``: the trainer's preset at 96x96 (its own size, 224, costs 5.4x the compute to train on two
  shared cores), trained from scratch for a few epochs on random crops of ten scikit-image pictures (one class per
  picture: photographs and textures, so that crops of brick, grass and gravel are confusable).
- ``mobilenetv2``: Keras' MobileNetV2 (alpha 0.5, 96x96, depthwise convolutions, batch norm, ReLU6) trained from
  scratch on the same crops (no ImageNet weights can be downloaded here).
- ``mobilenetv2-digits`` (only when named in ``--models``): the same MobileNetV2 trained on scikit-learn's digits
  enlarged to 96x96 (1,200 to train and calibrate, 597 held out): a more accurate, more confident MobileNetV2.

Both photo models get their batch-norm statistics recomputed on the training images after training
(:func:`settle_batch_norm`): without it their outputs barely vary (MobileNetV2 gave one class for every image).

The photo models are verified on 60 held-out crops per class (600 images). Printed per model: top-1 agreement of
OpenVINO with ONNX Runtime on each file, and of INT8 with FP32 on each engine, each with its count and the
one-sided 95% Clopper-Pearson lower bound (:mod:`cnnedge.export.gate`), and the largest output difference
between the engines. Writes cpu_engines_agreement.json in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import cv2  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

PICTURES = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
            "stereo_motorcycle", "brick", "grass", "gravel")
SIZE = 96
TRAIN_PER_CLASS, VERIFY_PER_CLASS = 80, 60
ENGINES = ("ort-cpu", "openvino")
FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def pictures() -> dict[str, np.ndarray]:
    """The scikit-image pictures as BGR uint8 (grey textures as three equal channels)."""
    import skimage.data as d

    out = {}
    for name in PICTURES:
        im = getattr(d, name)()
        im = im[0] if isinstance(im, tuple) else im
        im = np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im[:, :, :3]
        out[name] = cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2BGR)
    return out


def crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square view of 15-40% of the picture's short side, flipped half the time, brightness and
    contrast jittered, with sensor noise: a task the models learn to 80-100%, not a trivial one."""
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.15, 0.4))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    out = cv2.resize(img[y:y + side, x:x + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    out = out * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30) + rng.normal(0, 6, out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def write_folder(pics: dict[str, np.ndarray], folder: Path, per_class: int, seed: int) -> tuple[list, np.ndarray]:
    """``per_class`` crops of each picture as PNGs in class folders; returns them (BGR) and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k, name in enumerate(sorted(pics)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = crop(pics[name], rng)
            cv2.imwrite(str(folder / name / f"{i:04d}.png"), im)
            images.append(im)
            labels.append(k)
    return images, np.array(labels)


def digits_folders(root: Path) -> tuple[tuple[list, np.ndarray], tuple[list, np.ndarray]]:
    """scikit-learn's 1,797 digits, 8x8 grey, enlarged to SIZE x SIZE BGR (bilinear), as class folders: 1,200 in
    train/ (training and calibration), the other 597 in verify/. The training images and the verification ones."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = [cv2.cvtColor(cv2.resize((im * 255 / 16).astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR),
                           cv2.COLOR_GRAY2BGR) for im in d.images]
    order = np.random.default_rng(0).permutation(len(images))
    parts = []
    for name, idx in (("train", order[:1200]), ("verify", order[1200:])):
        for i in idx:
            path = root / name / str(d.target[i]) / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), images[i])
        parts.append(([images[i] for i in idx], d.target[idx]))
    return parts[0], parts[1]


def mobilenetv2(x, num_classes: int):
    import keras

    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.5, include_top=False, weights=None)
    y = keras.layers.GlobalAveragePooling2D()(base(x))
    return keras.layers.Dense(num_classes, activation="softmax")(y)


def batch_norms(layer) -> list:
    import keras

    found = [b for sub in getattr(layer, "layers", []) for b in batch_norms(sub)]
    return found + ([layer] if isinstance(layer, keras.layers.BatchNormalization) else [])


def settle_batch_norm(model, x: np.ndarray, batch: int = 32) -> None:
    """Set every batch norm's moving mean and variance to the average over the training images of the batch
    statistics the trained weights give ("precise BN"). Trained from scratch for a few hundred steps, the
    moving averages lag the weights: measured, MobileNetV2 then gave one class for every image (10% on held-out
    crops, 65.5% after this) and imagenette-cnn 33% (88.5% after)."""
    norms = batch_norms(model)
    order = np.random.default_rng(0).permutation(len(x))
    for i, start in enumerate(range(0, len(x), batch)):
        for bn in norms:
            bn.momentum = i / (i + 1)  # a running mean over the batches seen
        model(x[order[start:start + batch]], training=True)
    for bn in norms:
        bn.momentum = 0.99


def train_photos(name: str, root: Path, train: tuple[list, np.ndarray], classes: list[str], epochs: int) -> Path:
    """``name`` (``imagenette-cnn`` or ``mobilenetv2``) trained on the crops (RGB, raw pixels: the scaling is in
    the graph, as the card says), saved as model.keras with its card."""
    import keras

    from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess
    from cnnedge.trainer.presets import create_model

    run = root / name / "run"
    if (run / "model.keras").is_file():
        return run / "model.keras"
    keras.utils.set_random_seed(0)
    if name == "mobilenetv2":
        inp = keras.Input((SIZE, SIZE, 3))
        model = keras.Model(inp, mobilenetv2(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp), len(classes)))
        pre = Preprocess(scale=1 / 127.5, mean=(1.0,), std=(1.0,), name="tf")
    else:
        model = create_model(name, (SIZE, SIZE, 3), len(classes))
        pre = Preprocess()
    x = np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in train[0]]).astype(np.float32)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    hist = model.fit(x, train[1], epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    settle_batch_norm(model, x)
    print(f"{name}: trained {epochs} epochs in {time.perf_counter() - t0:.0f} s, train accuracy "
          f"{hist.history['accuracy'][-1]:.2%}", flush=True)
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    ModelCard(name=name, classes=tuple(classes), input=InputSpec(SIZE, SIZE, 3, "NHWC", "float32", "RGB"),
              preprocess=pre).save(run / "card.json")
    return run / "model.keras"


def outputs(path: Path, engine: str, images: list) -> np.ndarray:
    """What the runtime computes for decoded images with ``engine``, 64 at a time."""
    from cnnedge.runtime import Classifier

    with Classifier(path, backend=engine, threads=1) as clf:
        return np.concatenate([clf.infer_pixels(np.stack([clf.prepare(im) for im in images[i:i + 64]]))
                               for i in range(0, len(images), 64)])


def rate(a: np.ndarray, b: np.ndarray) -> dict:
    from cnnedge.export.gate import clopper_pearson

    k, n = int(np.sum(a.argmax(1) == b.argmax(1))), len(a)
    return {"agree": k, "n": n, "rate": k / n, "lower95": clopper_pearson(k, n)[0]}


def measure(out: Path, images: list, labels: np.ndarray | None) -> dict:
    got = {(p, e): outputs(out / f, e, images) for p, f in FILES.items() for e in ENGINES}
    res: dict = {"images": len(images), "classes_predicted": int(len(set(got["fp32", "ort-cpu"].argmax(1))))}
    if labels is not None:
        res["accuracy"] = {f"{p} {e}": float(np.mean(o.argmax(1) == labels)) for (p, e), o in got.items()}
    res["openvino_vs_ort"] = {p: {**rate(got[p, "openvino"], got[p, "ort-cpu"]),
                                  "max_abs_diff": float(np.max(np.abs(got[p, "openvino"] - got[p, "ort-cpu"])))}
                              for p in FILES}
    res["int8_vs_fp32"] = {e: rate(got["int8", e], got["fp32", e]) for e in ENGINES}
    return res


def export_all(model: Path, out: Path, **kw) -> None:
    from cnnedge.export import export

    if not (out / "model.int8.onnx").is_file():
        report = export(model, out, fp16=True, int8=True, force=True, check=False, **kw)
        print(report.table(), flush=True)  # one row per file per engine, then the engines verified
        print(", ".join(f"{s['step']} {s['seconds']:.2f} s" for s in report.steps if "openvino" in s["step"]))


def pct(r: dict) -> str:
    return f"{r['rate']:.2%} ({r['agree']}/{r['n']}; >= {r['lower95']:.2%})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/cpu_engines", help="work folder, e.g. --out /tmp/engines")
    ap.add_argument("--models", default="demo,imagenette-cnn,mobilenetv2", help="which, e.g. --models demo")
    ap.add_argument("--epochs", type=int, default=12, help="training epochs of the photo models, e.g. 8")
    ap.add_argument("--digits-epochs", type=int, default=15, help="training epochs of mobilenetv2-digits")
    args = ap.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    wanted = args.models.split(",")
    if "demo" in wanted:
        from cnnedge.datasets import split_images
        from cnnedge.demo import step_train
        from cnnedge.keras_io import load_card_for

        run = root / "demo"
        step_train(run)
        export_all(run / "model.keras", run / "export")
        images, labels, _ = split_images(load_card_for(run / "model.keras").provenance.dataset_spec, "test")
        results["demo"] = measure(run / "export", list(images), labels)
    if "mobilenetv2-digits" in wanted:
        train, verify = digits_folders(root / "digits")
        model = train_photos("mobilenetv2", root / "digits", train, [str(i) for i in range(10)], args.digits_epochs)
        export_all(model, root / "digits" / "export", verify=str(root / "digits" / "verify"),
                   calib=str(root / "digits" / "train"))
        results["mobilenetv2-digits"] = measure(root / "digits" / "export", verify[0], verify[1])
    photo_models = [m for m in wanted if m not in ("demo", "mobilenetv2-digits")]
    if photo_models:
        pics = pictures()
        classes = sorted(pics)
        train = write_folder(pics, root / "photos" / "train", TRAIN_PER_CLASS, seed=1)
        verify = write_folder(pics, root / "photos" / "verify", VERIFY_PER_CLASS, seed=2)
        for name in photo_models:
            model = train_photos(name, root, train, classes, args.epochs)
            export_all(model, root / name / "export", verify=str(root / "photos" / "verify"),
                       calib=str(root / "photos" / "train"))
            results[name] = measure(root / name / "export", verify[0], verify[1])
    (root / "cpu_engines_agreement.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| model | images | OV vs ORT fp32 | OV vs ORT fp16 | OV vs ORT int8 | INT8 vs FP32 on ORT | "
          "INT8 vs FP32 on OV | max abs diff OV-ORT fp32 / fp16 |")
    print("|---|---:|---|---|---|---|---|---|")
    for name, r in results.items():
        ov, q = r["openvino_vs_ort"], r["int8_vs_fp32"]
        print(f"| {name} | {r['images']} | {pct(ov['fp32'])} | {pct(ov['fp16'])} | {pct(ov['int8'])} | "
              f"{pct(q['ort-cpu'])} | {pct(q['openvino'])} | {ov['fp32']['max_abs_diff']:.1e} / "
              f"{ov['fp16']['max_abs_diff']:.1e} |")
    for name, r in results.items():
        print(f"{name}: classes predicted {r['classes_predicted']}; accuracy "
              + ", ".join(f"{k} {v:.2%}" for k, v in r.get("accuracy", {}).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
