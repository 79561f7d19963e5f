"""What a run leaves behind besides the model: history.csv, plots, metrics.json."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..staging import staged_path, write_text
from ..errors import UsageError, arg_name, first_line

HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


def write_history(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    keys = list(HISTORY_KEYS) + sorted({k for r in rows for k in r} - set(HISTORY_KEYS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in keys})
    write_text(path, buf.getvalue())


MAX_HISTORY_BYTES = 64 << 20  # 100,000 epochs of a few metrics are a few MB


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows :func:`write_history` wrote (none when there is no file): epochs 1, 2, 3 ... and numbers;
    anything else is a UsageError naming the line, the column and what to do."""
    p = Path(path)
    if not p.is_file():
        return []

    def bad(what: str) -> UsageError:
        return UsageError(f"{p}: {what}; not a cnn-train history: move {p.name} away to continue from the "
                          f"checkpoint with the epochs counted from 0, or start a new run with {arg_name('force')}")

    if p.stat().st_size > MAX_HISTORY_BYTES:
        raise bad(f"{p.stat().st_size} bytes is over the {MAX_HISTORY_BYTES}-byte limit")
    rows: list[dict[str, Any]] = []
    try:
        with open(p, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or reader.fieldnames[0] != "epoch":
                raise bad(f"line 1: the header must start with 'epoch', found {(reader.fieldnames or [''])[0]!r}")
            for r in reader:
                rows.append(_history_row(r, len(rows) + 1, lambda what: bad(f"line {reader.line_num}: {what}")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise bad(f"not a text CSV file ({first_line(exc)})") from None
    return rows


def _history_row(r: dict[Any, Any], epoch: int, bad: Callable[[str], UsageError]) -> dict[str, Any]:
    if None in r:
        raise bad(f"{len(r[None])} more value(s) than the header names")
    row: dict[str, Any] = {}
    for k, v in r.items():
        if v in ("", None):
            continue
        try:
            row[k] = int(v) if k == "epoch" else float(v)
        except ValueError:
            raise bad(f"column {k!r} holds {v[:40]!r}, not a{' whole' if k == 'epoch' else ''} number") from None
    if row.get("epoch") != epoch:
        raise bad(f"column 'epoch' holds {r['epoch']!r}, expected {epoch} (the epochs count 1, 2, 3 ...)")
    return row


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def metrics_from(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """``test_accuracy`` (a fraction), per-class precision/recall/support, the confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    actual = cm.sum(axis=1).astype(float)
    per_class = {}
    for i, name in enumerate(classes):
        per_class[name] = {
            "precision": float(tp[i] / predicted[i]) if predicted[i] else 0.0,
            "recall": float(tp[i] / actual[i]) if actual[i] else 0.0,
            "support": int(actual[i]),
        }
    n = int(len(y_true))
    return {
        "test_accuracy": float(tp.sum() / n) if n else 0.0,
        "test_images": n,
        "test_correct": int(tp.sum()),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _plt() -> Any:
    from .._lazy import require

    mpl = require("matplotlib", "training plots")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with staged_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def plot_history(rows: Sequence[dict[str, Any]], run_dir: str | os.PathLike, title: str = "") -> None:
    """loss.png and accuracy.png: train vs validation per epoch, like the tutorials' plots."""
    if not rows:
        return
    plt = _plt()
    epochs = [r["epoch"] for r in rows]
    for key, fname, label in (("loss", "loss.png", "loss"), ("accuracy", "accuracy.png", "accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4))
        try:
            ax.plot(epochs, [r.get(key, np.nan) for r in rows], "o-", label=f"train {label}")
            ax.plot(epochs, [r.get(f"val_{key}", np.nan) for r in rows], "o-", label=f"validation {label}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(f"{title} {label}".strip())
            ax.grid(alpha=0.3)
            ax.legend()
            _save(fig, Path(run_dir) / fname)
        finally:
            plt.close(fig)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
    plt = _plt()
    n = len(classes)
    size = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        ax.imshow(cm, cmap="Blues")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title or "confusion matrix (test set)")
        if n <= 40:
            ax.set_xticks(range(n), labels=list(classes), rotation=90 if n > 10 else 0)
            ax.set_yticks(range(n), labels=list(classes))
        if n <= 20:
            top = cm.max() if cm.size else 0
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if top and cm[i, j] > top / 2 else "black")
        _save(fig, Path(path))
    finally:
        plt.close(fig)
