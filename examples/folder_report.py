"""Classify a folder: a CSV with one row per image and a contact sheet of the least confident images.

Shows: ``Classifier.stream`` over a folder (decoding in a thread pool, batched
inference; unreadable files become rows with an ``error`` instead of ending the
run), and a review aid: a PNG grid of the N images the model was least sure of
(lowest top-1 score), each captioned with its label and score, and, when the
image sits in a folder named after a class, a red caption where the label differs.

Run:
    python examples/folder_report.py runs/demo/model.onnx photos/ --out report/ --worst 16
Writes report/predictions.csv (path, label, score, second, second_score, truth, error) and
report/least_confident.png.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from cnnedge.staging import write_bytes, write_text
from cnnedge.artifact.kinds import BACKEND_CHOICES
from cnnedge.cli import run_cli
from cnnedge.errors import UsageError
from cnnedge.runtime import Classifier
from cnnedge.imaging.errors import ImageError

FIELDS = ["path", "label", "score", "second", "second_score", "truth", "error"]
TILE = 160


def classify_folder(clf: Classifier, folder: Path, batch: int = 32) -> list[dict[str, str]]:
    """One row per image file under ``folder`` (sorted), failures included."""
    rows = []
    classes = set(clf.card.classes)
    for r in clf.stream(str(folder), batch=batch, topk=2):
        truth = Path(r.path).parent.name if r.path else ""
        row = {"path": r.path or "", "truth": truth if truth in classes else "", "error": r.error or "",
               "label": "", "score": "", "second": "", "second_score": ""}
        if r.ok:
            p = r.prediction
            row.update(label=p.label, score=f"{p.score:.6f}")
            if len(p.topk) > 1:
                row.update(second=p.topk[1][0], second_score=f"{p.topk[1][1]:.6f}")
        rows.append(row)
    return rows


def contact_sheet(clf: Classifier, rows: list[dict[str, str]], n: int, columns: int = 4) -> np.ndarray:
    """A grid of the ``n`` least confident images, each captioned ``label score``."""
    worst = sorted((r for r in rows if not r["error"]), key=lambda r: float(r["score"]))[:n]
    if not worst:
        raise UsageError("no image could be classified: nothing to put on the contact sheet")
    cols = min(columns, len(worst))
    sheet = np.full((math.ceil(len(worst) / cols) * (TILE + 24), cols * TILE, 3), 255, np.uint8)
    for i, r in enumerate(worst):
        try:
            img = clf.load_image(r["path"])
        except ImageError:
            continue
        h, w = img.shape[:2]
        s = TILE / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_NEAREST)
        y, x = divmod(i, cols)
        y0, x0 = y * (TILE + 24), x * TILE
        sheet[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
        wrong = r["truth"] and r["truth"] != r["label"]
        caption = f"{r['label']} {float(r['score']):.2f}" + (f" (is {r['truth']})" if wrong else "")
        cv2.putText(sheet, caption, (x0 + 4, y0 + TILE + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 220) if wrong else (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="folder_report.py", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a .onnx, .engine or .keras model with its card (e.g. runs/demo/model.onnx)")
    p.add_argument("folder", help="a folder of images, searched recursively (e.g. photos/)")
    p.add_argument("--out", default="report", help="output folder (default report/)")
    p.add_argument("--worst", type=int, default=16, help="images on the contact sheet (default 16)")
    p.add_argument("--batch", type=int, default=32, help="images per inference call (default 32)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="which backend runs the model (default auto)")
    args = p.parse_args(argv)
    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    if args.worst < 1:
        raise UsageError(f"--worst must be at least 1, got {args.worst}")
    with Classifier(args.model, args.backend) as clf:
        rows = classify_folder(clf, folder, args.batch)
        if not rows:
            raise UsageError(f"{folder}: no image files")
        buf = io.StringIO()
        w = csv.DictWriter(buf, FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text(out / "predictions.csv", buf.getvalue())  # atomic: never half a file
        ok, png = cv2.imencode(".png", contact_sheet(clf, rows, args.worst))
        write_bytes(out / "least_confident.png", png.tobytes())
    failed = sum(1 for r in rows if r["error"])
    print(f"{len(rows)} images ({failed} unreadable) -> {out / 'predictions.csv'}; "
          f"the {min(args.worst, len(rows) - failed)} least confident -> {out / 'least_confident.png'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(run_cli("folder_report.py", main))
