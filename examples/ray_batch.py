"""Offline batch inference over a large image set with Ray Data: one Classifier per actor, JSONL out.

Shows: scaling cnnedge past one process. ``ray.data`` holds the image paths;
``map_batches`` runs :class:`ClassifyBatch`, a callable class, on a pool of
actors: Ray constructs it once per actor, so the model is loaded once per
actor (not once per batch) and each actor decodes and classifies many batches.
Each output row carries the actor's ``worker`` id and ``model_loads`` (how many
times that actor has loaded the model: always 1). Unreadable files become rows
with an ``error``. Results stream back to the driver into one JSON-lines file
(``--format parquet``: Ray's tasks write a folder of Parquet files instead).

Run (local Ray with 4 CPUs; give --address auto to join a running cluster):
    python examples/ray_batch.py runs/demo/model.onnx photos/ --out preds.jsonl --actors 2 --num-cpus 4
Needs: pip install 'cnnedge[ray,cpu]' on every node (ray[data]), and the model
file at the same path on every node (a shared file system or object store).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np

from cnnedge.artifact.kinds import BACKEND_CHOICES
from cnnedge.cli import run_cli
from cnnedge.errors import UsageError


class ClassifyBatch:
    """Ray Data callable class: built once per actor (loads the model), called once per batch."""

    loads = 0  # per process: an actor is one process

    def __init__(self, model: str, backend: str = "auto", batch_size: int | None = None) -> None:
        from cnnedge.runtime import Classifier

        threads = 1 if model.endswith(".onnx") else None  # ONNX Runtime or OpenVINO: one thread per actor, one CPU
        # auto on a CPU times ONNX Runtime against OpenVINO at the batch each call brings (once per model and machine)
        self.clf = Classifier(model, backend, threads=threads, batch=batch_size)
        type(self).loads += 1
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cnnedge.imaging.errors import ImageError

        paths = [str(p) for p in batch["path"]]
        images, errors = [], []
        for p in paths:
            try:
                images.append(self.clf.load_image(p))
                errors.append("")
            except ImageError as exc:
                images.append(None)
                errors.append(exc.reason)
        good = [im for im in images if im is not None]
        preds = iter(self.clf.predict_batch(good) if good else [])
        labels, scores, indices = [], [], []
        for im in images:
            p = next(preds) if im is not None else None
            labels.append(p.label if p else "")
            scores.append(p.score if p else float("nan"))
            indices.append(p.index if p else -1)
        n = len(paths)
        return {"path": np.array(paths, dtype=object), "label": np.array(labels, dtype=object),
                "score": np.array(scores, np.float64), "index": np.array(indices, np.int64),
                "error": np.array(errors, dtype=object), "worker": np.array([self.worker] * n, dtype=object),
                "model_loads": np.full(n, type(self).loads, np.int64)}


def image_paths(folder: Path) -> list[str]:
    from cnnedge.runtime.sources import folder_files

    return [str(p) for p in folder_files(folder)[0]]


def run(model: str, folder: Path, out: Path, *, actors: int = 2, batch_size: int = 64, fmt: str = "jsonl",
        backend: str = "auto", cpus_per_actor: float = 1.0) -> int:
    """Classify every image under ``folder`` on ``actors`` Ray actors; returns the number of rows written."""
    import math

    import ray

    paths = image_paths(folder)
    if not paths:
        raise UsageError(f"{folder}: no image files")
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=math.ceil(len(paths) / batch_size))
    ds = ds.map_batches(ClassifyBatch, fn_constructor_args=(str(Path(model).resolve()), backend, batch_size),
                        batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor)
    if fmt == "parquet":
        ds.write_parquet(str(out))  # a folder of Parquet files, written by Ray's tasks
        return len(paths)
    from cnnedge.staging import staged_path

    n = 0
    with staged_path(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:  # one JSONL file, streamed to the driver
        for row in ds.iter_rows():
            rec = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            if rec["error"]:
                rec.update(label=None, score=None, index=None)
            else:
                del rec["error"]
            fh.write(json.dumps(rec) + "\n")
            n += 1
    return n


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ray_batch.py", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a .onnx or .engine model with its card (e.g. runs/demo/model.onnx)")
    p.add_argument("folder", help="a folder of images, searched recursively (e.g. photos/)")
    p.add_argument("--out", required=True,
                   help="the JSONL file (e.g. preds.jsonl), or with --format parquet a new folder (e.g. preds/)")
    p.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl", help="output format (default jsonl)")
    p.add_argument("--actors", type=int, default=2, help="Classifier actors (default 2)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs Ray reserves per actor (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="images per map_batches call (default 64)")
    p.add_argument("--address", help="a Ray cluster to join (e.g. auto); default: start a local Ray")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="which backend runs the model (default auto)")
    p.add_argument("--force", action="store_true", help="overwrite an existing JSONL file")
    args = p.parse_args(argv)
    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    if not Path(args.model).is_file():
        raise UsageError(f"{args.model}: no such file")
    if args.actors < 1 or args.batch_size < 1 or args.cpus_per_actor <= 0:
        raise UsageError("--actors, --batch-size and --cpus-per-actor must be positive")
    if args.format == "parquet" and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty folder (Ray would add files beside the old ones)")
    if args.format == "jsonl" and out.exists() and not args.force:
        raise UsageError(f"--out {out}: exists; pass --force to overwrite it")

    import ray

    ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus,
             include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        n = run(args.model, folder, out, actors=args.actors, batch_size=args.batch_size, fmt=args.format,
                backend=args.backend, cpus_per_actor=args.cpus_per_actor)
    finally:
        ray.shutdown()
    print(f"{n} images classified on {args.actors} actors -> {out} ({args.format})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(run_cli("ray_batch.py", main))
