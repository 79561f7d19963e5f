"""Before/after in ONE process: `predict` overhead and cnn-infer folder throughput of two cnnedge trees.

    git archive <old-commit> | tar -x -C /tmp/before
    .venv/bin/python benchmarks/compare_runtime.py /tmp/before [--blocks 400] [--folder-runs 20]

The old tree's package is copied under the name ``cnnedge_before`` (cnnedge imports itself
relatively), so both run side by side in one process on the same model, frame and JPEGs
(runtime_bench.py's cifar10-cnn on skimage photographs), interleaved in short blocks: on a
shared machine only such a comparison says anything. Printed: the minimum and median per call
of ``session.run``, ``predict`` and ``infer`` of each tree, and cnn-infer's images/s (median,
best) and CPU time per image (the least disturbed by other processes). Public API only, so the wrapper alone (runtime_bench.py's ReplayBackend figure) is not
compared: an old tree may have no ReplayBackend.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _runtime_bench():
    spec = importlib.util.spec_from_file_location("runtime_bench", ROOT / "benchmarks" / "runtime_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def overhead(model: Path, frame: np.ndarray, blocks: int) -> dict[tuple[str, str], list[float]]:
    from cnnedge.runtime import Classifier
    from cnnedge_before.runtime import Classifier as Before

    new, old = Classifier(model, threads=1), Before(model, threads=1)
    x = new.prepare(frame)[None]

    def bare(clf):
        s = clf.backend.session
        i, o = s.get_inputs()[0].name, s.get_outputs()[0].name
        return lambda: s.run([o], {i: x})

    calls = {("session.run", "before"): bare(old), ("session.run", "after"): bare(new),
             ("predict top-1", "before"): lambda: old.predict(frame, 1),
             ("predict top-1", "after"): lambda: new.predict(frame, 1),
             ("predict top-5", "before"): lambda: old.predict(frame),
             ("predict top-5", "after"): lambda: new.predict(frame),
             ("infer", "before"): lambda: old.infer(x), ("infer", "after"): lambda: new.infer(x)}
    res: dict[tuple[str, str], list[float]] = {k: [] for k in calls}
    for _ in range(blocks):
        for k, fn in calls.items():
            t = time.perf_counter()
            for _ in range(20):
                fn()
            res[k].append((time.perf_counter() - t) / 20 * 1e6)
    new.close()
    old.close()
    return res


def folder(model: Path, jpegs: Path, runs: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    from cnnedge.cli.infer import main as after
    from cnnedge_before.cli.infer import main as before

    def once(main, reduced: bool) -> tuple[float, float]:
        """(images/s, CPU µs per image of this process: less disturbed by other processes than wall time)."""
        out, err = io.StringIO(), io.StringIO()
        argv = [str(model), "--source", str(jpegs), "--quiet", "--batch", "32", "--no-progress", "--threads", "1"]
        if not reduced:
            argv.append("--no-reduce-decode")
        c0 = time.process_time()
        assert main(argv, out, err) == 0, err.getvalue()
        cpu = (time.process_time() - c0) / n * 1e6
        line = [ln for ln in err.getvalue().splitlines() if "images/s" in ln][-1]
        return float(re.search(r"([\d.]+) images/s", line).group(1)), cpu

    n = sum(1 for _ in jpegs.rglob("*.jpg"))
    res: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(runs):
        order = (("before", before), ("after", after)) if r % 2 == 0 else (("after", after), ("before", before))
        for reduced in (True, False):
            for name, main in order:
                res.setdefault((f"cnn-infer, {'reduced' if reduced else 'full'} decode", name), []).append(
                    once(main, reduced))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="a copy of the old tree (e.g. from git archive), holding cnnedge/")
    ap.add_argument("--blocks", type=int, default=400, help="interleaved blocks per figure (e.g. 400)")
    ap.add_argument("--folder-runs", type=int, default=20, help="alternating cnn-infer runs per tree (e.g. 20)")
    ap.add_argument("--images", type=int, default=400, help="JPEGs in the folder (e.g. 400)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="compare-runtime-"))
    shutil.copytree(Path(args.before) / "cnnedge", work / "pkg" / "cnnedge_before")
    sys.path[:0] = [str(ROOT), str(work / "pkg")]
    rb = _runtime_bench()
    photo = rb.photos()
    _, model = rb.train_and_export(photo, work)
    items = rb.write_jpegs(photo, work / "jpegs", args.images)
    frame = cv2.resize(cv2.imread(str(items[0][0])), (rb.SIZE, rb.SIZE), interpolation=cv2.INTER_AREA)
    res = overhead(model, frame, args.blocks)
    print("| per call, µs | before: min / median | after: min / median | after / before (min) |\n|---|---:|---:|---:|")
    for fig in dict.fromkeys(k[0] for k in res):
        b, a = res[(fig, "before")], res[(fig, "after")]
        print(f"| {fig} | {min(b):.1f} / {statistics.median(b):.1f} | {min(a):.1f} / {statistics.median(a):.1f} "
              f"| {min(a) / min(b):.2f} |")
    thr = folder(model, work / "jpegs", args.folder_runs)
    print(f"\n| {args.images} JPEGs, batch 32 | before: images/s median / best, CPU µs per image (min) | "
          "after: the same | after / before (CPU) |\n|---|---:|---:|---:|")
    for fig in dict.fromkeys(k[0] for k in thr):
        (bi, bc), (ai, ac) = (zip(*thr[(fig, w)]) for w in ("before", "after"))
        print(f"| {fig} | {statistics.median(bi):.0f} / {max(bi):.0f}, {min(bc):.0f} | "
              f"{statistics.median(ai):.0f} / {max(ai):.0f}, {min(ac):.0f} | {min(ac) / min(bc):.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
