"""ONNX Runtime INT8 against OpenVINO INT8 on the same model.int8.onnx, side by side in one process (issue 31).

    .venv/bin/python benchmarks/openvino_bench.py [--out benchmarks/out/openvino] [--seconds 2] [--rounds 3]

The preset is built with random weights and exported with ``cnn-export --int8`` as in int8_bench.py (reused when
the export is already in ``--out``). Both engines open the file through cnnedge's own backends
(``load_backend(path, "ort-cpu")`` and ``"openvino"``), as cnn-infer and cnn-bench do, at each ``--threads`` and
``--batch``; OpenVINO with its hint chosen from the batch (LATENCY at 1, THROUGHPUT above, the batch split over
its streams) and, above batch 1, with LATENCY forced, to show what the choice is worth. Interleaved: each round
times every engine for ``--seconds`` in turn; the median per call over the rounds is reported as a ratio to ONNX
Runtime's in the same settings (below 1: faster than ONNX Runtime). Ratios, not times: the machine is shared.
Writes openvino_bench.json in ``--out`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from int8_bench import build, facts_line, machine_facts  # noqa: E402


def exported(preset: str, size: int, root: Path, **model_kwargs) -> Path:
    """model.int8.onnx of ``preset`` with random weights, exported once into ``root`` (``model_kwargs``: see
    int8_bench.build)."""
    out = root / preset / "export"
    if not (out / "model.int8.onnx").is_file():
        from cnnedge.export import Int8Options, export

        # random weights: the fallback that keeps layers float until INT8 agrees with FP32 is off, so that the
        # whole network is timed in int8
        export(build(preset, size, root / preset, **model_kwargs), out, int8=True, force=True, check=False, calib_size=128,
               verify_size=64, int8_options=Int8Options(target_agreement=0.0))
    return out / "model.int8.onnx"


def time_calls(be, x, seconds: float) -> list[float]:
    for _ in range(2):
        be.infer(x)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        be.infer(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def save(path: Path, model: str, args: argparse.Namespace, rows: list[dict]) -> dict:
    """The machine, engine versions, settings and ``rows`` written to ``path`` as JSON; prints the header line."""
    from importlib import metadata

    result = {**machine_facts(), "model": model,
              "versions": {p: metadata.version(p) for p in ("onnxruntime", "openvino")},
              "seconds": args.seconds, "rounds": args.rounds, "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{facts_line(result)}; {result['model']}; {result['versions']}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/openvino", help="work folder, e.g. --out /tmp/ov")
    ap.add_argument("--preset", default="imagenette-cnn", help="cnn-train preset, e.g. --preset cifar10-cnn")
    ap.add_argument("--size", type=int, default=224, help="input size, e.g. --size 224")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per engine, setting and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", default="1,2", help="thread counts, e.g. --threads 1,2")
    ap.add_argument("--batch", default="1,32", help="batch sizes, e.g. --batch 1,32")
    args = ap.parse_args(argv)
    import numpy as np

    from cnnedge.runtime.backends import load_backend

    model = exported(args.preset, args.size, Path(args.out))
    rng = np.random.default_rng(0)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        engines = {"ort-cpu": load_backend(model, "ort-cpu", threads=threads),
                   "openvino": load_backend(model, "openvino", threads=threads),
                   "openvino, LATENCY forced": load_backend(model, "openvino", threads=threads, hint="latency")}
        for batch in (int(b) for b in args.batch.split(",")):
            x = rng.integers(0, 256, (batch, args.size, args.size, 3), dtype=np.uint8)
            use = {k: v for k, v in engines.items() if batch > 1 or "forced" not in k}
            outs = {k: be.infer(x) for k, be in use.items()}
            agree = float(np.mean(outs["openvino"].argmax(1) == outs["ort-cpu"].argmax(1)))
            samples: dict[str, list[float]] = {k: [] for k in use}
            for _ in range(args.rounds):
                for k, be in use.items():
                    samples[k] += time_calls(be, x, args.seconds)
            base = float(np.median(samples["ort-cpu"]))
            streams = engines["openvino"].streams if batch > 1 else 1
            for k in use:
                med = float(np.median(samples[k]))
                rows.append({"threads": threads, "batch": batch, "engine": k, "p50_ms": round(med, 3),
                             "calls": len(samples[k]), "ratio_to_ort": round(med / base, 3),
                             "openvino_streams": streams if k == "openvino" else None,
                             "top1_agreement_with_ort": round(agree, 3) if k == "openvino" else None})
        for be in engines.values():
            be.close()
    save(Path(args.out) / "openvino_bench.json", f"{args.preset} {args.size}x{args.size}, random weights, "
         f"{model.name}", args, rows)
    print("| threads | batch | engine | p50 ms | time vs ORT INT8 |\n|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['batch']} | {r['engine']} | {r['p50_ms']:.2f} | {r['ratio_to_ort']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
