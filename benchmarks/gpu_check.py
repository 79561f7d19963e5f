"""GPU acceptance: every GPU promise of cnnedge measured in one run, each against its target.

    python3 benchmarks/gpu_check.py .gpu/check --ort /tmp/ortsite --json $OUT/gpu_check.json

FOLDER is what benchmarks/gpu_prepare.sh builds on a machine without a GPU (models, photos, the GPU-decode
libraries); ``--ort`` an unpacked onnxruntime-gpu for a machine that has no package registry (see
benchmarks/README.md, "GPU acceptance"). Each step records its figures or its error and the run goes on; the
JSON is rewritten after every step, and a table of the figures against their targets is printed last. Without
a GPU (or without ONNX Runtime's CUDA provider) the CPU steps run on ort-cpu and the GPU steps are listed as
skipped with the reason; the exit code is 0 either way (2 for a usage mistake).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
ENV_MARK = "CNNEDGE_GPU_CHECK_ENV"
EXTRAS = ("onnxruntime", "cuda.bindings", "nvidia.nvimgcodec", "cvcuda", "tensorrt", "tensorrt_rtx", "torch",
          "tensorflow")
PREDICT_OVERHEAD_US = 25.0
H2D_MS = 2.0
FOLDER_IMG_S, FOLDER_VS_BOUND = 2000.0, 1.0
GPU_DECODE_IMG_S, GPU_DECODE_AGREEMENT = 5000.0, 0.995
SKIPPED, OK, ERROR = "skipped", "ok", "error"


# ---------------------------------------------------------------------------------------------- the run
class Check:
    """The results so far, written to ``json_path`` after every step."""

    def __init__(self, folder: Path, json_path: Path | None, images: int, quick: bool) -> None:
        self.folder, self.json_path, self.images, self.quick = folder, json_path, images, quick
        self.results: dict[str, dict] = {}
        self.gpu_reason: str | None = "the environment step did not finish"
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
        self.photos: list[Path] = []
        self.cpu_rows: dict[str, int] = {}  # path -> top-1 of the CPU decoder's run, for --decode gpu to match

    @property
    def gpu(self) -> bool:
        return self.gpu_reason is None

    @property
    def backend(self) -> str:
        return "ort-cuda" if self.gpu else "ort-cpu"

    def model(self, name: str, file: str) -> Path:
        """``models/<name>/<file>``; the digits exports stand in when the folder has no 224x224 model."""
        big = self.folder / "models" / "big"
        return (big if name == "big" and big.is_dir() else self.folder / "models" / "digits") / file

    def step(self, name: str, fn: Callable[["Check"], dict], needs_gpu: bool = False) -> None:
        t0 = time.perf_counter()
        if needs_gpu and not self.gpu:
            rec = {"status": SKIPPED, "why": self.gpu_reason}
        else:
            try:
                rec = {"status": OK, **fn(self)}
            except Exception as exc:  # a step's failure is a finding: record it and go on
                rec = {"status": ERROR, "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                       "traceback": traceback.format_exc()[-2000:]}
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        self.results[name] = rec
        print(f"[{name}] {rec['status']} in {rec['seconds']} s: {rec.get('summary') or rec.get('why') or rec.get('error')}",
              flush=True)
        self.save()

    def save(self) -> None:
        if self.json_path is None:
            return
        part = self.json_path.with_name(self.json_path.name + ".partial")
        part.write_text(json.dumps(self.results, indent=1, default=str))
        part.replace(self.json_path)


def target(name: str, value: float | None, want: str, ok: bool | None) -> dict:
    """One figure against its target: verdict pass/fail, or n/a where the target does not apply here."""
    return {"name": name, "value": value, "target": want,
            "verdict": "n/a" if ok is None else ("pass" if ok else "fail")}


def cli(tool: str, args: list[str], timeout: float = 300) -> dict:
    """A cnnedge CLI in a fresh process, as a user runs it (the project on PYTHONPATH, no install needed)."""
    code = f"import sys; from cnnedge.cli.{tool} import console; sys.argv[0] = 'cnn-{tool}'; console()"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    return {"rc": p.returncode, "s": round(time.perf_counter() - t0, 1), "stdout": p.stdout[-3000:],
            "stderr": p.stderr[-3000:]}


def python(code: str, *args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


# ---------------------------------------------------------------------------------------------- the steps
def environment(c: Check) -> dict:
    """The GPU, its driver, onnxruntime and its providers, and which of the optional packages import."""
    import onnxruntime as ort

    from cnnedge.host import gpus

    probe = python("import importlib, json\nout = {}\nfor m in %r:\n    try:\n        mod = importlib.import_module(m)\n"
                   "        out[m] = str(getattr(mod, '__version__', 'imported'))\n    except Exception as exc:\n"
                   "        out[m] = 'no: ' + (str(exc).splitlines() or [type(exc).__name__])[0][:160]\n"
                   "print(json.dumps(out))" % (EXTRAS,))
    extras = json.loads(probe.stdout) if probe.returncode == 0 else {"error": probe.stderr[-500:]}
    providers = ort.get_available_providers()
    found = gpus()
    if not found:
        c.gpu_reason = "no NVIDIA GPU here (nvidia-smi finds none)"
    elif "CUDAExecutionProvider" not in providers:
        c.gpu_reason = f"onnxruntime {ort.__version__} here has no CUDA provider ({', '.join(providers)})"
    else:
        c.gpu_reason = None
    head = f"{found[0]['name']}, driver {found[0]['driver']}" if found else "no GPU"
    return {"summary": f"{head}; onnxruntime {ort.__version__} ({', '.join(providers)}); {os.cpu_count()} cores",
            "gpus": found, "onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__, "providers": providers,
            "cores": os.cpu_count(), "python": sys.version.split()[0], "imports": extras,
            "gpu_steps": "run" if c.gpu else f"skipped: {c.gpu_reason}"}


def auto_backend(c: Check) -> dict:
    """What ``auto`` opens for each model in a fresh process, and every other line that process printed (stdout,
    where cnn-infer writes its results, and stderr)."""
    files = [c.model("digits", "model.onnx"), c.model("digits", "model.int8.onnx"), c.model("big", "model.fp16.onnx")]
    code = ("import json, sys, numpy as np\nfrom cnnedge import Classifier\nout = {}\nfor p in sys.argv[1:]:\n"
            "    with Classifier(p) as clf:\n        clf.predict(np.zeros((64, 64, 3), np.uint8))\n"
            "        out[p] = [clf.backend_name, clf.backend.path]\nprint(json.dumps(out))")
    p = python(code, *map(str, files), timeout=300)
    if p.returncode:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    printed = [line for line in p.stdout.splitlines() if line.strip()]  # the JSON comes last
    picked = {Path(k).parent.name + "/" + Path(k).name: [v[0], Path(v[1]).name]
              for k, v in json.loads(printed[-1]).items()}
    noise = printed[:-1] + [line for line in p.stderr.splitlines() if line.strip()]
    ort_trt = python("from cnnedge.runtime.backends import load_backend\n"
                     f"b = load_backend({str(files[0])!r}, 'ort-trt'); print('opened', b.name)")
    said = (ort_trt.stdout + ort_trt.stderr).strip().splitlines()
    want = "ort-cuda" if c.gpu else "ort-cpu"
    return {"summary": "; ".join(f"{k}: {v[0]} ({v[1]})" for k, v in picked.items()) + f"; {len(noise)} lines printed",
            "picked": picked, "printed": noise[:20], "ort_trt": said[-1] if said else "",
            "targets": [target("lines printed when auto opens and runs a model", len(noise), "0", not noise),
                        target(f"auto picks {want}", None, want, all(v[0] == want for v in picked.values()))]}


def parity(c: Check) -> dict:
    """ort-cuda against ort-cpu on the same file and images, through the Classifier: top-1 agreement (judged by
    the export gate's exact test) and the largest output difference."""
    import numpy as np

    from cnnedge import Classifier
    from cnnedge.export.gate import agreement_decision
    from cnnedge.export.parity import Thresholds

    digits = sorted(p for p in (c.folder / "models/digits/images").rglob("*") if p.is_file())
    out, targets = {}, []
    for name, file, precision in (("digits", "model.onnx", "fp32"), ("digits", "model.fp16.onnx", "fp16"),
                                  ("digits", "model.int8.trt.onnx", "int8"), ("big", "model.onnx", "fp32"),
                                  ("big", "model.fp16.onnx", "fp16"), ("big", "model.int8.trt.onnx", "int8")):
        path = c.model(name, file)
        if not path.exists():
            continue
        images = digits if name == "digits" else c.photos
        with Classifier(path, backend="ort-cpu") as a, Classifier(path, backend="ort-cuda") as b:
            ya, yb = [], []
            for i in range(0, len(images), 256):
                x = np.stack([a.prepare(a.load_image(p)) for p in images[i:i + 256]])
                ya.append(a.infer(x).astype(np.float64))
                yb.append(b.infer(x).astype(np.float64))
            ya, yb = np.concatenate(ya), np.concatenate(yb)
        k, n = int((ya.argmax(1) == yb.argmax(1)).sum()), len(images)
        want = Thresholds().agreement(precision)  # the export gate's
        d = agreement_decision(k, n, want)
        key = f"{name}/{file}"
        out[key] = {"n": n, "agree": k, "lower_bound": round(d.lower, 4), "verdict": d.verdict,
                    "max_abs_diff": float(np.abs(ya - yb).max())}
        targets.append(target(f"top-1 ort-cuda vs ort-cpu, {key} ({k}/{n})", round(k / n, 4),
                              f">= {want:g}", None if d.verdict == "undecided" else d.verdict == "pass"))
    return {"summary": "; ".join(f"{k}: {v['agree']}/{v['n']}, max diff {v['max_abs_diff']:.1e}" for k, v in out.items()),
            "models": out, "targets": targets}


def predict_overhead(c: Check) -> dict:
    """``Classifier.predict`` on one frame against a bare ``session.run`` of the tensor it feeds, on the very same
    session: runtime_bench.py's measurement (the minimum over interleaved rounds), on this check's backend."""
    import numpy as np

    from runtime_bench import overhead

    rounds, calls = (3, 20) if c.quick else (20, 100)
    out = {}
    for name, file in (("digits", "model.onnx"), ("big", "model.fp16.onnx")):
        path = c.model(name, file)
        side = json.loads((path.parent / "card.json").read_text())["input"]
        frame = np.random.default_rng(0).integers(0, 256, (side["height"], side["width"], 3), dtype=np.uint8)
        got = overhead(path, frame, rounds, calls, backend=c.backend)
        out[f"{name}/{file}"] = {"bare_run_us": round(got["session.run"], 1),
                                 "predict_us": round(got["Classifier.predict (top-5)"], 1),
                                 "overhead_us": round(got["predict_top5_overhead_us"], 1),
                                 "wrapper_alone_us": round(got["wrapper alone: Classifier.predict (top-5)"], 1)}
    worst = max(v["overhead_us"] for v in out.values())
    return {"summary": f"{c.backend}: " + "; ".join(f"{k} +{v['overhead_us']} us" for k, v in out.items()),
            "backend": c.backend, "models": out,
            "targets": [target(f"predict over bare session.run on {c.backend}, us", worst,
                               f"<= {PREDICT_OVERHEAD_US:g}", worst <= PREDICT_OVERHEAD_US if c.gpu else None)]}


def h2d(c: Check) -> dict:
    """The upload of a batch of 256 from the backend's pinned ``input_buffer`` (and, for contrast, from a plain
    array), as ``timed_infer`` splits it."""
    import numpy as np

    from cnnedge.runtime.backends import load_backend

    n = 10 if c.quick else 30
    with load_backend(c.model("big", "model.fp16.onnx"), "ort-cuda") as be:
        buf = be.input_buffer(256)
        buf[...] = np.random.default_rng(0).integers(0, 256, buf.shape).astype(buf.dtype)
        plain = np.array(buf, copy=True)
        times = {}
        for label, arr in (("input_buffer", buf), ("plain_array", plain)):
            runs = [be.timed_infer(arr)[1] for _ in range(n + 3)][3:]
            times[label] = {"h2d_ms": round(statistics.median(t.h2d_ns for t in runs) / 1e6, 3),
                            "compute_ms": round(statistics.median(t.compute_ns for t in runs) / 1e6, 3),
                            "d2h_ms": round(statistics.median(t.d2h_ns for t in runs) / 1e6, 3)}
    ms = times["input_buffer"]["h2d_ms"]
    what = f"{tuple(buf.shape)} {buf.dtype}, {buf.nbytes / 1e6:.1f} MB"
    return {"summary": f"{what}: {ms} ms from input_buffer, {times['plain_array']['h2d_ms']} ms from a plain array "
                       f"({buf.nbytes / ms / 1e6:.1f} GB/s)", "batch": what, "times": times,
            "targets": [target("H2D of 256x224x224x3 uint8 from input_buffer, ms", ms, f"<= {H2D_MS:g}",
                               ms <= H2D_MS if buf.dtype == np.uint8 and buf.shape[1:] == (224, 224, 3) else None)]}


def threads(c: Check) -> dict:
    """Four threads calling ``predict`` on one Classifier get the answers one thread gets."""
    import cv2

    from cnnedge import Classifier

    frames = [cv2.imread(str(p)) for p in c.photos[:96]]
    with Classifier(c.model("big", "model.fp16.onnx"), backend=c.backend) as clf:
        ref = [clf.predict(f).index for f in frames]
        got: list[int | None] = [None] * len(frames)

        def work(k: int) -> None:
            for j in range(k, len(frames), 4):
                got[j] = clf.predict(frames[j]).index
        pool = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    same = sum(a == b for a, b in zip(ref, got))
    return {"summary": f"{same}/{len(frames)} same on {c.backend}", "backend": c.backend,
            "targets": [target("4 threads vs 1, same top-1", same, f"{len(frames)}", same == len(frames))]}


def bench(c: Check) -> dict:
    """``cnn-bench`` on the 224x224 model at batch 64 and 256 (copies timed apart), and on a GPU without copies."""
    files = [str(p) for p in (c.model("big", "model.onnx"), c.model("big", "model.fp16.onnx")) if p.exists()]
    duration = "0.2" if c.quick else "1.0"
    out: dict[str, Any] = {}
    runs = [("copy", files, [])] + ([("no_copy", files[1:], ["--no-copy"])] if c.gpu else [])
    for label, models, extra in runs:
        js = c.work / f"bench_{label}.json"
        r = cli("bench", [*models, "--backends", c.backend, "--batch", "64,256", "--duration", duration,
                          "--repeats", "2", "--json", str(js), "-q", *extra])
        if r["rc"] != 0 or not js.exists():
            raise RuntimeError(f"cnn-bench exit {r['rc']}: {r['stderr'].strip()[-400:]}")
        out[label] = [{"artifact": row["artifact"], "batch": row["batch"], "p50_ms": row["latency_ms"]["p50"],
                       "images_s": round(row["throughput"]), "stages_ms": row.get("stages_ms")}
                      for row in json.loads(js.read_text())["rows"]]
    best = max(out["copy"], key=lambda r: r["images_s"])
    return {"summary": f"{c.backend}: " + "; ".join(f"{r['artifact']} b{r['batch']} {r['images_s']:,}/s"
                                                      for r in out["copy"]), "backend": c.backend, "rows": out,
            "best": best}


def make_photos(c: Check) -> None:
    """``--images`` distinct JPEGs, runtime_bench.py's random 640x480 views (scale, crop, flip) of the folder's
    photos: agreement counted over 2,000 different images says more than 2,000 copies of 28."""
    import cv2
    import numpy as np

    from runtime_bench import crop

    src = [cv2.imread(str(p)) for p in sorted((c.folder / "photos").rglob("*.jpg"))]
    if not src:
        raise SystemExit(f"gpu_check: {c.folder}/photos has no JPEG files; run benchmarks/gpu_prepare.sh")
    d = c.work / "photos"
    d.mkdir()

    def one(i: int) -> Path:
        rng = np.random.default_rng(i)
        path = d / f"{i:05d}.jpg"
        cv2.imwrite(str(path), crop(src[i % len(src)], rng), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
        return path
    with ThreadPoolExecutor(os.cpu_count()) as ex:
        c.photos = list(ex.map(one, range(c.images)))


def decode_bound(c: Check, model: Path) -> dict:
    """cnn-infer's own decoder alone (read, decode, resize; cnn-bench --end-to-end's bound) over every photo on one
    thread per core, at full size and as cnn-infer decodes by default (JPEGs reduced 1/2..1/8 where the model
    is smaller)."""
    from cnnedge import Classifier
    from cnnedge.bench.e2e import bound

    files = [str(p) for p in c.photos]
    out = {}
    for label, reduce in (("full", False), ("reduced", True)):
        with Classifier(model, backend="ort-cpu", reduce_decode=reduce) as clf:
            out[label] = round(bound(clf, files, os.cpu_count() or 1)[0])
    return out


def infer_run(c: Check, model: Path, tag: str, extra: list[str]) -> dict:
    """``cnn-infer`` over the photos: its own images/s, its rows (path -> class index), what it said first."""
    rows_path = c.work / f"infer_{tag}.jsonl"
    r = cli("infer", [str(model), "--source", str(c.work / "photos"), "--backend", c.backend, "--batch", "64",
                      "--json", str(rows_path), "--force", "--no-progress", "-q", *extra])
    said = [line for line in r["stderr"].splitlines() if line.strip()]
    m = re.search(r"([\d,.]+) images/s", r["stderr"])
    rows = {}
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            row = json.loads(line)
            rows[row["path"]] = row.get("index")
    return {"rc": r["rc"], "images_s": float(m.group(1).replace(",", "")) if m else None, "rows": len(rows),
            "said": said[:2] + said[-2:] if len(said) > 4 else said, "wall_s": r["s"], "_rows": rows}


def folder(c: Check) -> dict:
    """Default ``cnn-infer`` on the photos against the OpenCV decode bound measured now, and with ``--decode cpu``."""
    model = c.model("big", "model.fp16.onnx")
    bound = decode_bound(c, model)
    runs = {"default": infer_run(c, model, "default", [])}
    if c.gpu:
        runs["decode_cpu"] = infer_run(c, model, "cpu", ["--decode", "cpu"])
    c.cpu_rows = runs.get("decode_cpu", runs["default"]).pop("_rows")
    runs["default"].pop("_rows", None)
    got = runs["default"]["images_s"] or 0.0
    ratio = round(got / bound["full"], 2)
    return {"summary": f"{len(c.photos)} photos, {model.parent.name}/{model.name} on {c.backend}: default "
                       f"{got:,.0f}/s = {ratio}x the {os.cpu_count()}-thread decode bound ({bound['full']:,}/s)",
            "model": str(model.relative_to(c.folder)), "bound_img_s": bound, "runs": runs,
            "targets": [target("default cnn-infer, images/s", got, f">= {FOLDER_IMG_S:,.0f}",
                               got >= FOLDER_IMG_S if c.gpu else None),
                        target("default cnn-infer / decode bound", ratio, f">= {FOLDER_VS_BOUND:g}",
                               ratio >= FOLDER_VS_BOUND if c.gpu else None)]}


def decode_gpu(c: Check) -> dict:
    """``--decode gpu`` on the same photos: its speed, and its top-1 against the CPU decoder's on every photo."""
    from cnnedge.export.gate import agreement_decision

    model = c.model("big", "model.fp16.onnx")
    run = infer_run(c, model, "gpu", ["--decode", "gpu"])
    rows = run.pop("_rows")
    cpu = c.cpu_rows
    common = [p for p in rows if p in cpu]
    k = sum(rows[p] == cpu[p] for p in common)
    d = agreement_decision(k, len(common), GPU_DECODE_AGREEMENT)
    got = run["images_s"] or 0.0
    return {"summary": f"{got:,.0f}/s; top-1 as the CPU decoder on {k}/{len(common)} photos ({d.verdict})",
            "run": run, "agree": k, "n": len(common), "lower_bound": round(d.lower, 4),
            "targets": [target("--decode gpu, images/s", got, f">= {GPU_DECODE_IMG_S:,.0f}", got >= GPU_DECODE_IMG_S),
                        target(f"--decode gpu top-1 as --decode cpu ({k}/{len(common)})",
                               round(k / len(common), 4) if common else None, f">= {GPU_DECODE_AGREEMENT}",
                               None if d.verdict == "undecided" else d.verdict == "pass")]}


def tensorrt(c: Check) -> dict:
    """Full TensorRT where it imports: an FP16 engine of the 224x224 model built here, run by the ``trt`` backend
    against ort-cpu. Elsewhere, why not, and what ``ort-trt`` says."""
    import importlib.util

    from cnnedge.runtime.backends import load_backend

    try:
        with load_backend(c.model("digits", "model.onnx"), "ort-trt") as be:
            ort_trt = f"opened on {be.name}"
    except Exception as exc:
        ort_trt = f"{type(exc).__name__}: {exc}"
    if importlib.util.find_spec("tensorrt") is None:
        return {"status": SKIPPED, "why": "full TensorRT (`tensorrt`) does not import here", "ort_trt": ort_trt}
    import numpy as np

    from cnnedge import Classifier
    from cnnedge.artifact.card import ModelCard
    from cnnedge.export.engine import Profile, build, toolkit
    from cnnedge.host import gpu_sm

    src = c.model("big", "model.fp16.onnx")
    plan = c.work / "model.fp16.engine"
    t0 = time.perf_counter()
    build(src, plan, ModelCard.load(src.parent / "card.json"), toolkit(), (gpu_sm(),), Profile(1, 64, 256),
          4096, None)
    built_s = round(time.perf_counter() - t0, 1)
    with Classifier(plan, backend="trt") as a, Classifier(src, backend="ort-cpu") as b:
        x = np.stack([b.prepare(b.load_image(p)) for p in c.photos[:256]])
        k = int((a.infer(x).argmax(1) == b.infer(x).argmax(1)).sum())
    r = cli("bench", [str(plan), "--backends", "trt", "--batch", "64,256", "--duration", "1.0", "-q"])
    return {"summary": f"engine built in {built_s} s; top-1 as ort-cpu {k}/{len(x)}", "ort_trt": ort_trt,
            "bench": r["stdout"][-1500:]}


def preload(c: Check) -> dict:
    """The CUDA provider starting with no LD_LIBRARY_PATH, as after ``pip install cnnedge[gpu]``:
    ``onnxruntime.preload_dlls()`` must find CUDA and cuDNN on its own."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    p = python("import numpy as np\nfrom cnnedge.runtime.backends import load_backend\n"
               f"b = load_backend({str(c.model('digits', 'model.onnx'))!r}, 'ort-cuda')\n"
               "b.infer(np.zeros((1,) + tuple(b.input_spec.shape[1:]), b.input_spec.dtype)); print('ran on', b.name)",
               env=env)
    said = (p.stdout + p.stderr).strip().splitlines()
    return {"summary": said[-1] if said else f"exit {p.returncode}", "rc": p.returncode, "said": said[-6:],
            "targets": [target("ort-cuda runs without LD_LIBRARY_PATH", None, "runs", p.returncode == 0)]}


STEPS: list[tuple[str, Callable[[Check], dict], bool]] = [
    ("auto_backend", auto_backend, False), ("parity", parity, True), ("predict_overhead", predict_overhead, False),
    ("h2d", h2d, True), ("threads", threads, False), ("bench", bench, False), ("folder", folder, False),
    ("decode_gpu", decode_gpu, True), ("tensorrt", tensorrt, True), ("preload", preload, True)]


# ---------------------------------------------------------------------------------------------- setup, table
def runtime_env(ort_site: Path | None, decode_site: Path | None) -> dict[str, str]:
    """PYTHONPATH with onnxruntime-gpu, the decode libraries and the project (in that order), and LD_LIBRARY_PATH
    with every ``nvidia/*/lib`` folder of this Python and of those sites, as ../shared/gpu/run.sh sets them."""
    env = dict(os.environ)
    paths = [str(p) for p in (ort_site, decode_site) if p is not None] + [str(ROOT)]
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    libs = [str(d) for base in paths + sys.path if base and Path(base).is_dir()
            for d in sorted(Path(base).glob("nvidia/*/lib")) if d.is_dir()]
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(libs + [env.get("LD_LIBRARY_PATH", "")])).strip(os.pathsep)
    env[ENV_MARK] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def unpack_decode(folder: Path, into: Path) -> Path | None:
    """The folder's decode libraries unpacked into ``into`` once (a stamp holds the archive's size and time)."""
    archive = folder / "decode" / "site.tar.xz"
    if not archive.exists():
        return None
    stamp = into / ".unpacked"
    key = f"{archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if not (stamp.exists() and stamp.read_text() == key):
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
        stamp.write_text(key)
    return into


def table(results: dict[str, dict]) -> str:
    lines = [f"{'step':<17} {'status':<8} {'figure':>12}  {'target':<10} {'verdict':<8} what"]
    for name, rec in results.items():
        lines.append(f"{name:<17} {rec['status']:<8} {'':>12}  {'':<10} {'':<8} "
                     f"{(rec.get('summary') or rec.get('why') or rec.get('error') or '')[:150]}")
        for t in rec.get("targets", []):
            v = t["value"]
            shown = "" if v is None else f"{v:,.4g}" if isinstance(v, float) else f"{v:,}"
            lines.append(f"{'':<17} {'':<8} {shown:>12}  {t['target']:<10} {t['verdict']:<8} {t['name']}")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0],
                                 epilog="example: python3 benchmarks/gpu_check.py .gpu/check --ort /tmp/ortsite "
                                        "--json $OUT/gpu_check.json")
    ap.add_argument("folder", type=Path, metavar="FOLDER", help="what benchmarks/gpu_prepare.sh built (default layout .gpu/check)")
    ap.add_argument("--ort", type=Path, metavar="DIR", help="an unpacked onnxruntime-gpu to import first (e.g. /tmp/ortsite)")
    ap.add_argument("--site", type=Path, metavar="DIR", default=Path(tempfile.gettempdir()) / "cnnedge-gpu-site",
                    help="where the folder's decode libraries are unpacked (default /tmp/cnnedge-gpu-site)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write every figure here (refused if it exists, unless --force)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    ap.add_argument("--images", type=int, metavar="N", default=2000, help="photos made for the folder steps (default 2000)")
    ap.add_argument("--quick", action="store_true", help="shorter timings (a smoke run; figures are rougher)")
    args = ap.parse_args(argv)
    if not (args.folder / "models" / "digits" / "model.onnx").exists():
        ap.error(f"{args.folder}: no models/digits/model.onnx; build the folder with bash benchmarks/gpu_prepare.sh")
    if args.ort is not None and not (args.ort / "onnxruntime").is_dir():
        ap.error(f"--ort {args.ort}: no onnxruntime package there; unpack onnxruntime-gpu first (benchmarks/README.md)")
    if args.json is not None and args.json.exists() and not args.force:
        ap.error(f"--json {args.json} exists; give another file or --force")
    if args.images < 8:
        ap.error(f"--images {args.images}: give at least 8")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.environ.get(ENV_MARK) != "1":  # the libraries must be on the paths before Python and CUDA load them
        env = runtime_env(args.ort, unpack_decode(args.folder, args.site))
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:])], env)
    c = Check(args.folder.resolve(), args.json, args.images, args.quick)
    if c.json_path is not None:
        c.json_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        c.step("environment", environment)
        make_photos(c)
        for name, fn, needs_gpu in STEPS:
            c.step(name, fn, needs_gpu)
    finally:
        import shutil

        shutil.rmtree(c.work, ignore_errors=True)
    print("\n" + table(c.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
