"""`python -m cnnedge.demo RUN_DIR` (what `make demo` runs): the whole path on the embedded digits.

The demo is a list of steps, each printed with a header; later steps (export,
inference) are appended to :data:`STEPS` as those tools land. A step that finds
its work already done reuses it instead of failing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .cli._run import run_cli
from .errors import CnnEdgeError

DEMO_PRESET = "digits-cnn"
DEMO_EPOCHS = 20
MIN_ACCURACY = 0.97
# 629 of the 1,797 digits held out: enough for the export gate to show FP16's 99.5% agreement (598 needed when
# every image agrees) and INT8's 1-point drop (299 needed with no image lost), so every verdict is decided
DEMO_TEST_SPLIT = 0.35


def step_train(run_dir: Path) -> None:
    """Train digits-cnn on the embedded scikit-learn digits."""
    import json

    from .trainer.loop import METRICS_FILE, TrainConfig, is_complete, train

    if is_complete(run_dir):
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        print(f"reusing the completed run in {run_dir}: test accuracy {metrics['test_accuracy']:.2%} "
              f"(delete the folder to train again)")
        acc = float(metrics["test_accuracy"])
    else:
        # an interrupted demo run is replaced (its files are the demo's own)
        result = train(TrainConfig(preset=DEMO_PRESET, data="digits", out=str(run_dir), epochs=DEMO_EPOCHS,
                                   test_split=DEMO_TEST_SPLIT, force=run_dir.exists(), verbose=2))
        print(f"cnn-train: {result.summary()}")
        acc = result.test_accuracy
    if acc < MIN_ACCURACY:
        raise CnnEdgeError(f"demo: test accuracy {acc:.2%} is below the expected {MIN_ACCURACY:.0%} "
                           f"(delete {run_dir} to train again)")


DEMO_GPU = "sm89"  # TensorRT-RTX builds for a named GPU even on a machine without one


def step_export(run_dir: Path) -> None:
    """Export FP32, FP16 and INT8 ONNX (and TensorRT engines where a builder is installed),
    each checked against Keras on the digits test split."""
    from .export import export
    from .host import has_tensorrt

    from .artifact.card import sha256_file
    from .errors import CardError
    from .export import read_card

    model = run_dir / "model.keras"
    done = run_dir / "model.int8.onnx"
    if (run_dir / "export_report.json").is_file() and done.is_file():
        try:
            current = read_card(done).provenance.source_sha256 == sha256_file(model)
        except CardError:
            current = False
        if current:
            print(f"reusing the export in {run_dir}: it was made from this model.keras")
            return
        print(f"the ONNX files in {run_dir} were exported from another model.keras: exporting again")
    has_trt = has_tensorrt()
    if not has_trt:
        print("no TensorRT builder installed: exporting ONNX only (pip install 'cnnedge[trt-rtx]' for engines)")
    report = export(model, fp16=True, int8=True, engine=has_trt, gpu=DEMO_GPU if has_trt else None, force=True)
    print(report.table())


def step_infer(run_dir: Path) -> None:
    """Classify a folder of real digit images (the held-out test split, written as PNGs
    in one folder per class) with the INT8 model, as a user would with cnn-infer."""
    from .cli.infer import main as infer_main
    from .imaging.opencv import opencv
    from .keras_io import load_card_for
    from .datasets import split_images

    cv2 = opencv()
    card = load_card_for(run_dir / "model.keras")
    images, labels, classes = split_images(card.provenance.dataset_spec, "test")
    folder = run_dir / "images"
    for i, (img, label) in enumerate(zip(images, labels)):
        path = folder / classes[int(label)] / f"{i:04d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img)
    argv = [str(run_dir / "model.int8.onnx"), "--source", str(folder), "--eval", "--quiet"]
    print("cnn-infer " + " ".join(argv))
    code = infer_main(argv)
    if code:
        raise CnnEdgeError(f"demo: cnn-infer exited with {code}")


STEPS: list[tuple[str, Callable[[Path], None]]] = [
    ("train digits-cnn on the embedded digits (cnn-train)", step_train),
    ("export FP32/FP16/INT8 ONNX and TensorRT engines, checked against Keras (cnn-export)", step_export),
    ("classify a folder of test images with the INT8 model (cnn-infer)", step_infer),
]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv or [])
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m cnnedge.demo [RUN_DIR]   (default runs/demo)")
        return 2
    run_dir = Path(args[0] if args else "runs/demo")
    t_all = time.perf_counter()
    for i, (title, fn) in enumerate(STEPS, 1):
        print(f"\n=== [{i}/{len(STEPS)}] {title} ===", flush=True)
        t0 = time.perf_counter()
        fn(run_dir)
        print(f"--- done in {time.perf_counter() - t0:.1f}s", flush=True)
    print(f"\ndemo finished in {time.perf_counter() - t_all:.1f}s; results in {run_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("cnnedge.demo", main))
