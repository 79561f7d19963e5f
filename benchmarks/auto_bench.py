"""``auto`` (the CPU engine picked by measurement) against the ONNX Runtime INT8 of issue 31, side by side (issue 31).

    .venv/bin/python benchmarks/auto_bench.py [--out benchmarks/out/auto] [--seconds 1.5] [--rounds 3]

"Today's" ONNX Runtime INT8 is cnnedge's ``ort-cpu`` as it was when the issue was written: intra-op threads
spinning (ONNX Runtime's own default, which cnnedge kept until 6a8af99 turned spinning off unless each thread has
a free core beside it); it is opened through ``load_backend(path, "ort-cpu")`` with
:func:`cnnedge.runtime.backends.ort.spinning` answering True. Beside it, on the same ``model.int8.onnx`` and in
the same process: ``ort-cpu`` as it is now, ``openvino`` named, and ``auto`` opened with ``batch`` and
``threads`` as cnn-infer opens it, measuring afresh into an empty cache (the seconds its open took, measuring
included, are reported). Models: imagenette-cnn and MobileNetV2 (the mobilenetv2-transfer preset, weights=None)
at 224x224 and the tiny digits-cnn at 32x32, random weights (speed does not depend on them), exported with
``cnnedge.export`` as in int8_bench.py (reused when the export is already in ``--out``). Interleaved: each round
times every engine for ``--seconds`` in turn; the median per call over the rounds gives throughput ratios to
today's ORT INT8 (above 1: faster). Writes auto_bench.json in ``--out`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from openvino_bench import exported, save, time_calls  # noqa: E402

MODELS = {"imagenette-cnn": ("imagenette-cnn", 224, {}), "mobilenetv2": ("mobilenetv2-transfer", 224, {"weights": None}),
          "digits-cnn": ("digits-cnn", 32, {})}


def spinning_ort(path: Path, threads: int):
    """ort-cpu with its intra-op threads spinning: cnnedge's ONNX Runtime INT8 before 6a8af99."""
    from cnnedge.runtime.backends import load_backend, ort

    rule = ort.spinning
    ort.spinning = lambda *_a, **_k: True
    try:
        be = load_backend(path, "ort-cpu", threads=threads)
    finally:
        ort.spinning = rule
    assert be.settings["spinning"] is True
    return be


def open_auto(path: Path, batch: int, threads: int, cache: Path):
    """auto as cnn-infer opens it, measuring into an empty cache; (backend, seconds the open took)."""
    from cnnedge.runtime.backends import load_backend

    os.environ["CNNEDGE_CACHE_DIR"] = str(cache)
    os.environ["CNNEDGE_AUTO_MEASURE"] = "1"
    t0 = time.perf_counter()
    be = load_backend(path, "auto", batch=batch, threads=threads)
    return be, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/auto", help="work folder, e.g. --out /tmp/auto")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--seconds", type=float, default=1.5, help="timing per engine, setting and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads, e.g. --threads 2")
    ap.add_argument("--batch", default="32,1", help="batch sizes, e.g. --batch 32,1")
    args = ap.parse_args(argv)
    import numpy as np

    from cnnedge.runtime.backends import load_backend

    rng = np.random.default_rng(0)
    rows = []
    for label in args.models.split(","):
        preset, size, kwargs = MODELS[label]
        model = exported(preset, size, Path(args.out), **kwargs)
        for batch in (int(b) for b in args.batch.split(",")):
            with tempfile.TemporaryDirectory() as cache:
                auto, open_s = open_auto(model, batch, args.threads, Path(cache))
            engines = {"today": spinning_ort(model, args.threads),
                       "ort-cpu": load_backend(model, "ort-cpu", threads=args.threads),
                       "openvino": load_backend(model, "openvino", threads=args.threads), "auto": auto}
            x = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            samples: dict[str, list[float]] = {k: [] for k in engines}
            for _ in range(args.rounds):
                for k, be in engines.items():
                    samples[k] += time_calls(be, x, args.seconds)
            med = {k: float(np.median(v)) for k, v in samples.items()}
            faster = "openvino" if med["openvino"] < med["ort-cpu"] else "ort-cpu"
            rows.append({"model": label, "batch": batch, "threads": args.threads, "auto_picked": auto.name,
                         "auto_reason": str(auto.choice), "auto_open_s": round(open_s, 2),
                         "faster_here": faster, "p50_ms": {k: round(v, 3) for k, v in med.items()},
                         "throughput_vs_today": {k: round(med["today"] / v, 2) for k, v in med.items()}})
            for be in engines.values():
                be.close()
            print(json.dumps(rows[-1]), flush=True)
    save(Path(args.out) / "auto_bench.json", "random weights, model.int8.onnx (cnnedge.export --int8)", args, rows)
    print("| model | batch | auto picked | faster here | ort-cpu now | openvino | auto | auto's open (s) |\n"
          "|---|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        t = r["throughput_vs_today"]
        print(f"| {r['model']} | {r['batch']} | {r['auto_picked']} | {r['faster_here']} | {t['ort-cpu']:.2f}x | "
              f"{t['openvino']:.2f}x | {t['auto']:.2f}x | {r['auto_open_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
