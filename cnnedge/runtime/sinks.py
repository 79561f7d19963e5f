"""Sinks: where results go. Each is a context manager with one ``write(result)`` method
(``write_batch(results)`` for several at once).

Files are staged (a temporary file in the same folder) and replace the old file
only at ``commit()``, which :func:`cnnedge.runtime.runner.run` calls when the run
completes and the context manager calls when its block ends without an
exception. A sink closed without a commit keeps what it wrote beside the target
as ``<name>.partial.<ext>`` (its ``partial`` attribute): a failed or interrupted
run never costs the previous complete file.

Paths are written as they are: a file name that is not UTF-8 (a 0xFF byte, legal
on Linux) reaches JSON as an escape, CSV as its own bytes, and a terminal as
``\xff``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np

from ..atomic import StagedOutput, atomic_path, refuse_overwrite, refuse_special, remove_stale_staged
from ..errors import UsageError
from ..imaging.files import IMAGE_SUFFIXES
from .results import Result

CSV_COLUMNS = ("source", "path", "frame", "timestamp", "index", "label", "score", "latency_ms", "topk", "error")


class Sink:
    """Where results go. ``needs_images``: the pipeline keeps each original image for it.
    ``stopped``: the sink asks the run to end (a window closed). ``partial``: where a file
    sink closed without a commit kept what it wrote."""

    needs_images = False
    stopped = False
    partial: Path | None = None

    def write(self, result: Result) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def write_batch(self, results: Sequence[Result]) -> None:
        """Several results at once (one inference call's); the default writes them one by one."""
        for r in results:
            self.write(r)

    def commit(self) -> None:
        """The run completed: make what was written final (file sinks replace their target)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.commit()
        self.close()


def display_path(text: str) -> str:
    """A path for a terminal: bytes that are not UTF-8 (kept by ``os.fsdecode`` as surrogates)
    shown as ``\xff`` escapes, so that printing never fails and the name stays recognisable."""
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # not a file-system name at all (a lone surrogate from elsewhere)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def where(r: Result) -> str:
    """A result's file, or ``source#frame`` for a frame of a video, camera or stream."""
    return r.path if r.path is not None else f"{r.source}#{r.frame}"


def failure_line(r: Result) -> str:
    return f"skipped {display_path(where(r))}: {r.error}"


class ErrorSink(Sink):
    """One line on ``err`` per result that failed (a bad file, a bad video frame with its number):
    what cnn-infer --quiet still prints."""

    def __init__(self, err: TextIO) -> None:
        self.err = err

    def write(self, r: Result) -> None:
        if r.error is not None:
            print(failure_line(r), file=self.err)


class LineSink(Sink):
    """One human-readable line per result on stdout; failures on stderr."""

    def __init__(self, out: TextIO, err: TextIO, topk: int = 1) -> None:
        self.out, self.err, self.topk = out, err, topk

    def write(self, r: Result) -> None:
        if r.error is not None:
            print(failure_line(r), file=self.err)
            return
        p = r.prediction
        assert p is not None
        extra = ""
        if self.topk > 1:
            extra = "  [" + ", ".join(f"{lab} {s:.3f}" for lab, s in p.topk[:self.topk]) + "]"
        print(f"{display_path(where(r))}\t{p.label}\t{p.score:.4f}\t{r.latency_ms:.1f} ms{extra}", file=self.out)


class _FileSink(Sink):
    """A text file staged beside ``path``: renamed over it at commit, kept as ``<name>.partial.<ext>``
    when closed without one. Names that are not UTF-8 are written as their own bytes."""

    def __init__(self, path: str | os.PathLike, force: bool = False, newline: str | None = None) -> None:
        refuse_overwrite(path, force, "--force")
        refuse_special(path)
        self.path = Path(path)
        self._staged = StagedOutput(self.path)
        self._fh = open(self._staged.path, "w", encoding="utf-8", errors="surrogateescape", newline=newline)
        self.written = 0

    def write(self, r: Result) -> None:
        self._fh.write(self._format(r))
        self.written += 1

    def write_batch(self, results: Sequence[Result]) -> None:
        self._fh.write("".join(self._format(r) for r in results))
        self.written += len(results)

    def _format(self, r: Result) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def commit(self) -> None:
        if not self._fh.closed:
            self._fh.close()
            self._staged.commit()

    def close(self) -> None:
        """Without a commit: keep what was written as ``<name>.partial.<ext>`` (nothing written: nothing kept)."""
        if not self._fh.closed:
            self._fh.close()
            if self.written:
                self.partial = self._staged.keep_partial()
            else:
                self._staged.discard()


class JsonlSink(_FileSink):
    """``--json out.jsonl``: one object per result (failures carry ``error``)."""

    def _format(self, r: Result) -> str:
        return json.dumps(r.to_dict()) + "\n"


class CsvSink(_FileSink):
    """``--csv out.csv``: the same fields, ``topk`` as ``label:score;label:score``."""

    def __init__(self, path: str | os.PathLike, force: bool = False) -> None:
        super().__init__(path, force, newline="")
        self._row = io.StringIO()
        self._w = csv.DictWriter(self._row, CSV_COLUMNS)
        self._w.writeheader()
        self._fh.write(self._take())

    def _take(self) -> str:
        text = self._row.getvalue()
        self._row.seek(0)
        self._row.truncate()
        return text

    def _format(self, r: Result) -> str:
        d = r.to_dict()
        if "topk" in d:
            d["topk"] = ";".join(f"{lab}:{s}" for lab, s in d["topk"])
        self._w.writerow({k: d.get(k, "") for k in CSV_COLUMNS})
        return self._take()


def annotate(img: np.ndarray, r: Result) -> np.ndarray:
    """A copy of ``img`` (BGR) with the label and score drawn on it."""
    import cv2

    from ..imaging.color import to_color

    out = to_color(img, "BGR").copy()
    p = r.prediction
    text = f"{p.label} {p.score:.2f}" if p is not None else "?"
    h, w = out.shape[:2]
    scale = max(0.35, min(w, h) / 400)
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 0), thick, cv2.LINE_AA)
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "source"


class SaveDirSink(Sink):
    """``--save-dir DIR``: annotated images, ``NNNNNN_<name>.jpg`` in arrival order."""

    needs_images = True

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def write(self, r: Result) -> None:
        import cv2

        if r.error is not None or r.image is None:
            return
        stem = Path(r.path).stem if r.path else f"{_safe(r.source)}_{r.frame:06d}"
        target = self.folder / f"{self.n:06d}_{_safe(stem)}.jpg"
        self.n += 1
        with atomic_path(target) as tmp:
            if not cv2.imwrite(str(tmp), annotate(r.image, r)):
                raise UsageError(f"--save-dir: cannot write {target}")


def video_codec(path: str | os.PathLike) -> str:
    """The FourCC VideoSink writes for a file name: mp4v for MP4/MOV, MJPG otherwise."""
    return "mp4v" if Path(path).suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"


def check_video_format(path: str | os.PathLike, flag: str = "--save-video") -> None:
    """Raise a one-line UsageError when OpenCV cannot write a video with this file's
    extension, found by opening a writer on a scratch file of the same suffix (no frames)."""
    import tempfile

    import cv2

    p = Path(path)
    suffix = p.suffix
    if not suffix:
        raise UsageError(f"{flag} {p}: name the container with an extension (e.g. .mp4 or .avi)")
    if suffix.lower() in IMAGE_SUFFIXES:  # OpenCV would write a numbered image sequence, not a video
        raise UsageError(f"{flag} {p}: {suffix} is an image extension; use .mp4, .avi, .mkv or .mov "
                         "(--save-dir writes annotated images)")
    logging_ = getattr(getattr(cv2, "utils", None), "logging", None)
    level = logging_.getLogLevel() if logging_ is not None else None
    if level is not None:  # the probe's failure is reported below, not as OpenCV's console noise
        logging_.setLogLevel(logging_.LOG_LEVEL_SILENT)
    try:
        with tempfile.TemporaryDirectory(prefix="cnnedge-video-") as d:
            probe = Path(d) / f"probe{suffix}"
            writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*video_codec(p)), 25.0, (64, 48))
            ok = writer.isOpened()
            writer.release()
    except cv2.error:
        ok = False
    finally:
        if level is not None:
            logging_.setLogLevel(level)
    if not ok:
        raise UsageError(f"{flag} {p}: OpenCV cannot write {suffix!r} videos; use .mp4, .avi, .mkv or .mov")


class VideoSink(Sink):
    """``--save-video out.mp4``: annotated frames; every frame resized to the first one's size."""

    needs_images = True

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, force: bool = False) -> None:
        refuse_overwrite(path, force, "--force")
        refuse_special(path)
        self.path, self.fps = Path(path), fps
        check_video_format(self.path)  # before any frame is classified, not at the first one
        remove_stale_staged(self.path)  # a killed run's leftover goes now, even if no frame comes
        self._staged: StagedOutput | None = None
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, r: Result) -> None:
        import cv2

        if r.error is not None or r.image is None:
            return
        img = annotate(r.image, r)
        if self._writer is None:
            self._staged = StagedOutput(self.path)
            self._size = (img.shape[1], img.shape[0])
            codec = video_codec(self.path)
            self._writer = cv2.VideoWriter(str(self._staged.path), cv2.VideoWriter_fourcc(*codec), self.fps,
                                           self._size)
            if not self._writer.isOpened():
                raise UsageError(f"--save-video {self.path}: OpenCV cannot write this format; use .mp4 or .avi")
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size)
        self._writer.write(img)
        self.frames += 1

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._staged is not None:
            self._staged.commit()
            self._staged = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._staged is not None:
            self.partial = self._staged.keep_partial()
            self._staged = None


def has_gui() -> bool:
    import cv2

    m = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    return bool(m and m.group(1).upper() != "NONE")


class ShowSink(Sink):
    """``--show``: a window with the annotated frame (needs OpenCV with GUI support)."""

    needs_images = True

    def __init__(self) -> None:
        if not has_gui():
            raise UsageError("--show needs OpenCV with GUI support, and this one has none (opencv-python-headless); "
                             "install opencv-python instead (not both), or use --save-dir / --save-video")

    def write(self, r: Result) -> None:
        import cv2

        if r.error is not None or r.image is None:
            return
        cv2.imshow("cnn-infer", annotate(r.image, r))
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
            self.stopped = True

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """``path,label`` rows (a header row is allowed); paths relative to the CSV's folder."""
    p = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8"))))
    except OSError as exc:
        raise UsageError(f"--labels-csv {p}: cannot read ({exc.strerror or exc})") from None
    out = {}
    for row in rows:
        if len(row) < 2 or row[0].strip().lower() in ("path", "file", "filename"):
            continue
        q = Path(row[0].strip())
        q = q if q.is_absolute() else p.parent / q
        out[str(q.resolve())] = row[1].strip()
    return out


class EvalSink(Sink):
    """``--eval``: accuracy, per-class recall and a confusion matrix of the deployed artifact.

    The true class is the name of the image's folder (a class-folder layout), or
    comes from ``--labels-csv``. Images whose truth is unknown are counted apart.
    """

    def __init__(self, classes: Sequence[str], labels_csv: str | os.PathLike | None = None) -> None:
        self.classes = list(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.truth = read_labels_csv(labels_csv) if labels_csv else None
        n = len(self.classes)
        self.confusion = np.zeros((n, n), np.int64)
        self.unknown = 0

    def _true(self, r: Result) -> int | None:
        if r.path is None:
            return None
        name = self.truth.get(str(Path(r.path).resolve())) if self.truth is not None else Path(r.path).parent.name
        return self.index.get(name) if name is not None else None

    def write(self, r: Result) -> None:
        if r.error is not None:
            return
        t = self._true(r)
        if t is None:
            self.unknown += 1
            return
        self.confusion[t, r.prediction.index] += 1  # type: ignore[union-attr]

    def report(self) -> dict[str, Any]:
        cm = self.confusion
        total = int(cm.sum())
        rows = cm.sum(axis=1)
        recall = {c: (float(cm[i, i] / rows[i]) if rows[i] else None) for i, c in enumerate(self.classes)}
        return {"images": total, "accuracy": float(np.trace(cm) / total) if total else None,
                "recall": recall, "confusion": cm.tolist(), "classes": self.classes, "unlabelled": self.unknown}

    def format(self) -> str:
        rep = self.report()
        if not rep["images"]:
            return ("eval: no image had a known true class (use a class-folder layout whose folder names are the "
                    "model's classes, or --labels-csv)")
        lines = [f"eval: {rep['images']} images, accuracy {rep['accuracy']:.4f}"
                 + (f" ({rep['unlabelled']} without a known class left out)" if rep["unlabelled"] else "")]
        used = [i for i in range(len(self.classes)) if self.confusion[i].sum() or self.confusion[:, i].sum()]
        width = max(5, *(len(self.classes[i]) for i in used))
        lines.append("per-class recall: " + ", ".join(
            f"{self.classes[i]} {rep['recall'][self.classes[i]]:.3f}" for i in used
            if rep["recall"][self.classes[i]] is not None))
        lines.append("confusion (rows: true, columns: predicted)")
        lines.append(" " * width + " " + " ".join(f"{self.classes[i]:>{width}}" for i in used))
        for i in used:
            lines.append(f"{self.classes[i]:>{width}} " + " ".join(f"{self.confusion[i, j]:>{width}d}" for j in used))
        return "\n".join(lines)


class Progress(Sink):
    """A progress bar on stderr for runs with a known total (redrawn at most 10 times a second)."""

    def __init__(self, total: int, err: TextIO = sys.stderr) -> None:
        self.total, self.err = total, err
        self.n = self.failed = 0
        self._last = 0.0
        self._t0 = time.perf_counter()

    def write(self, r: Result) -> None:
        self.n += 1
        self.failed += r.error is not None
        now = time.perf_counter()
        if now - self._last >= 0.1 or self.n == self.total:
            self._last = now
            frac = self.n / self.total if self.total else 1.0
            bar = "#" * int(frac * 30)
            rate = self.n / max(now - self._t0, 1e-9)
            self.err.write(f"\r[{bar:<30}] {self.n}/{self.total} {rate:.0f} img/s"
                           + (f" {self.failed} failed" if self.failed else ""))
            self.err.flush()

    def close(self) -> None:
        if self.n:
            self.err.write("\n")
            self.err.flush()
