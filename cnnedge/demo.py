"""`python -m cnnedge.demo RUN_DIR` (what `make demo` runs): the whole path on the embedded digits.

The demo is a list of steps, each printed with a header; later steps (export,
inference) are appended to :data:`STEPS` as those tools land. A step that finds
its work already done reuses it instead of failing.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .cli._run import run_cli
from .errors import CnnEdgeError

DEMO_PRESET = "digits-cnn"
DEMO_EPOCHS = 20
MIN_ACCURACY = 0.97


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
                                   force=run_dir.exists(), verbose=2))
        print(f"cnn-train: {result.summary()}")
        acc = result.test_accuracy
    if acc < MIN_ACCURACY:
        raise CnnEdgeError(f"demo: test accuracy {acc:.2%} is below the expected {MIN_ACCURACY:.0%} "
                           f"(delete {run_dir} to train again)")


STEPS: list[tuple[str, Callable[[Path], None]]] = [
    ("train digits-cnn on the embedded digits (cnn-train)", step_train),
]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv or [])
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m cnnedge.demo [RUN_DIR]   (default runs/demo)")
        return 2
    run_dir = Path(args[0] if args else "runs/demo")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
