"""Peak memory of ``--int8`` calibration against the number of calibration images, one checkout or several.

    .venv/bin/python benchmarks/calib_memory_bench.py [--repo PATH ...] [--sizes 42,336] [--work DIR]

The model is the trainer's ``imagenette-cnn`` preset (1.18M parameters,
224x224 RGB), randomly initialised (memory does not depend on what a network
learned), exported once to FP32 ONNX with its card. The images are 256x256
JPEGs (quality 90), random crops of scikit-image's photographs. Each case is
one fresh Python process running ``cnnedge.export.export(model.onnx, int8=True,
calib=FOLDER, calib_size=N, verify=FOLDER, verify_size=20, check=False)`` into
an empty folder (no calibration cache), with ``PYTHONPATH`` set to the
checkout under test, and reports its peak RSS (``VmHWM`` of
``/proc/self/status``). Starting from the ONNX file keeps TensorFlow out of
the processes, so the peak is the export's own. Prints a Markdown table and,
per checkout, the ratio of the peak with the most images to the peak with
the fewest (target: <= 1.25). Writes calib_memory_bench.json into ``--work``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

SIDE = 256
VERIFY = 20

CHILD = """
import sys, time
from pathlib import Path

repo, model, calib, verify, out, n = sys.argv[1:7]
import cnnedge
assert Path(cnnedge.__file__).resolve().is_relative_to(Path(repo).resolve()), cnnedge.__file__
from cnnedge.export import export

t0 = time.perf_counter()
report = export(model, out, int8=True, calib=calib, calib_size=int(n), verify=verify, verify_size=int(sys.argv[7]),
                check=False)
seconds = time.perf_counter() - t0
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
print("RESULT", int(status["VmHWM"].split()[0]) // 1024, report.calibration["images"], round(seconds, 1))
"""


def photos() -> list:
    from runtime_bench import photos as named

    return list(named().values())


def write_jpegs(folder: Path, n: int, seed: int) -> None:
    """``n`` random SIDE x SIDE views of the photographs (scale 0.5-1.5 of the shorter side, random flip)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    srcs = photos()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = srcs[i % len(srcs)]
        h, w = img.shape[:2]
        s = SIDE / min(h, w) * rng.uniform(1.0, 2.5)
        big = cv2.resize(img, (max(SIDE, int(w * s)), max(SIDE, int(h * s))), interpolation=cv2.INTER_AREA)
        y, x = rng.integers(0, big.shape[0] - SIDE + 1), rng.integers(0, big.shape[1] - SIDE + 1)
        crop = big[y:y + SIDE, x:x + SIDE]
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), crop[:, ::-1] if rng.random() < 0.5 else crop,
                    [cv2.IMWRITE_JPEG_QUALITY, 90])


def build(work: Path) -> Path:
    """imagenette-cnn with random weights and the card the trainer would write, exported to FP32 ONNX."""
    import keras

    from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess
    from cnnedge.export import export
    from cnnedge.trainer.presets import create_model, get_preset

    run = work / "model"
    if (run / "model.onnx").is_file():
        return run / "model.onnx"
    p = get_preset("imagenette-cnn")
    keras.utils.set_random_seed(0)
    model = create_model("imagenette-cnn", (*p.size, 3), 10)
    card = ModelCard(name="imagenette-cnn", classes=tuple(f"c{i}" for i in range(10)),
                     input=InputSpec(p.size[0], p.size[1], 3, "NHWC", "float32", p.color),
                     preprocess=Preprocess(resize="stretch", scale=p.scale, mean=p.mean, std=p.std, in_graph=True,
                                           name=p.preprocess_name))
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    card.save(run / "card.json")
    export(run / "model.keras", run, verify=str(work / "verify"), verify_size=VERIFY, check=False)
    return run / "model.onnx"


def case(repo: Path, model: Path, work: Path, n: int, timeout: float) -> dict:
    out = work / "out" / f"{repo.name}-{n}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    env = {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(repo), str(model), str(work / "calib"),
                           str(work / "verify"), str(out), str(n), str(VERIFY)], capture_output=True, text=True,
                          env=env, cwd=work, timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    if proc.returncode != 0 or line is None:
        return {"repo": str(repo), "n": n, "error": (proc.stderr.strip().splitlines() or ["?"])[-1],
                "seconds": round(time.perf_counter() - t0, 1)}
    _, mb, images, seconds = line.split()
    return {"repo": str(repo), "n": n, "images": int(images), "peak_mb": int(mb), "seconds": float(seconds)}


def revision(repo: Path) -> str:
    r = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "?") + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", action="append", type=Path, help="a checkout to measure (repeatable; default: this one)")
    ap.add_argument("--sizes", default="42,336", help="numbers of calibration images, e.g. 42,336")
    ap.add_argument("--work", type=Path, default=HERE / "benchmarks" / "out" / "calib_memory")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per case")
    args = ap.parse_args(argv)
    repos = [r.resolve() for r in (args.repo or [HERE])]
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "calib").is_dir():
        write_jpegs(work / "calib", max(sizes), seed=1)
        write_jpegs(work / "verify", VERIFY, seed=2)
    model = build(work)
    rows = []
    for repo in repos:
        for n in sizes:
            rows.append({**case(repo, model, work, n, args.timeout), "revision": revision(repo)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    (work / "calib_memory_bench.json").write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=1))
    print("| checkout | images | peak RSS MB | export s |\n|---|---|---|---|")
    for r in rows:
        peak = r.get("peak_mb", f"failed: {r.get('error')}")
        print(f"| {r['revision']} | {r.get('images', r['n'])} | {peak} | {r['seconds']} |")
    for repo in repos:
        peaks = [r["peak_mb"] for r in rows if r["repo"] == str(repo) and "peak_mb" in r]
        if len(peaks) == len(sizes) and len(sizes) > 1:
            print(f"{revision(repo)}: peak with {sizes[-1]} images / with {sizes[0]}: {peaks[-1] / peaks[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
