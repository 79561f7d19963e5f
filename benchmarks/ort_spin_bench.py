"""ONNX Runtime's thread spinning, on and off, side by side in one process (issue 31).

    .venv/bin/python benchmarks/ort_spin_bench.py [--rounds 7] [--out benchmarks/out]

ONNX Runtime's intra-op threads spin-wait between parallel sections by default. On a machine with few cores
the spinning threads compete with the caller and cnn-infer's decode workers. For each model (the trainer's
imagenette-cnn and MobileNetV2 at 224x224, untrained: speed does not depend on the weights), each thread
count (1, 2) and batch (1, 32), the two settings are timed interleaved, round after round, and the ratio
off/on of the median time per batch is reported (below 1: turning spinning off is faster). cnnedge's
choice (:func:`cnnedge.runtime.backends.ort.spinning`) is printed beside each row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def build(name: str, folder: Path) -> Path:
    """model.onnx of an untrained network, through cnnedge's own Keras -> ONNX path (card embedded)."""
    import keras

    from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess
    from cnnedge.export.keras2onnx import keras_to_onnx
    from cnnedge.export.onnx_io import save

    if name == "mobilenetv2":
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=10)
    else:
        from cnnedge.trainer.presets import create_model

        model = create_model(name, (224, 224, 3), 10, weights=None)
    card = ModelCard(name=name, classes=[str(i) for i in range(10)], input=InputSpec(224, 224, 3, "NHWC", "uint8"),
                     preprocess=Preprocess(in_graph=True))
    path = folder / f"{name}.onnx"
    save(keras_to_onnx(model, card, "uint8", 17), path)
    return path


def session(path: Path, threads: int, spin: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def timed(sess, x: np.ndarray, calls: int) -> float:
    name = sess.get_inputs()[0].name
    t = time.perf_counter()
    for _ in range(calls):
        sess.run(None, {name: x})
    return (time.perf_counter() - t) / calls


def parse_args(doc: str) -> argparse.Namespace:
    """``--rounds``, ``--models``, ``--out``: the flags of the ONNX Runtime settings benchmarks."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per configuration")
    ap.add_argument("--models", default="imagenette-cnn,mobilenetv2", help="comma-separated trainer presets")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="folder for the JSON")
    return ap.parse_args()


def medians(args: argparse.Namespace, make: Callable[[Path, int], dict], shuffle: bool = False) -> Iterator[tuple]:
    """For every model of ``--models``, 1 and 2 threads, batch 1 and 32: ``(model, threads, batch, medians)``, the
    median time per batch of each session ``make(path, threads)`` returns, timed round after round (in a shuffled
    order with ``shuffle``)."""
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = build(name, Path(tmp))
            for threads in (1, 2):
                for batch in (1, 32):
                    x = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
                    sessions = make(path, threads)
                    calls = 20 if batch == 1 else 2
                    times: dict[Any, list[float]] = {k: [] for k in sessions}
                    for s in sessions.values():
                        timed(s, x, 2)
                    keys = list(sessions)
                    for _ in range(args.rounds):
                        for i in (rng.permutation(len(keys)) if shuffle else range(len(keys))):
                            times[keys[i]].append(timed(sessions[keys[i]], x, calls))
                    yield name, threads, batch, {k: statistics.median(t) for k, t in times.items()}


def save(args: argparse.Namespace, name: str, rows: list[dict]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=2))


def main() -> None:
    args = parse_args(__doc__)
    from cnnedge.runtime.backends.ort import spinning

    rows = []
    for name, threads, batch, med in medians(args, lambda p, n: {s: session(p, n, s) for s in (True, False)}, True):
        on, off = med[True], med[False]
        row = {"model": name, "threads": threads, "batch": batch, "on_ms": on * 1e3, "off_ms": off * 1e3,
               "off_over_on": off / on, "cnnedge_spins": spinning(threads)}
        rows.append(row)
        print(f"{name:15s} threads {threads} batch {batch:2d}: spinning on {on * 1e3:8.2f} ms, off "
              f"{off * 1e3:8.2f} ms, off/on {off / on:.2f}; cnnedge spins: {row['cnnedge_spins']}", flush=True)
    save(args, "ort_spin_bench.json", rows)


if __name__ == "__main__":
    main()
