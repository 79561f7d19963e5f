"""Latency tables with cnn-bench: ONNX Runtime against the Keras baselines, and INT8 vs FP32 vs FP16 on this CPU.

    .venv/bin/python benchmarks/latency_bench.py [--out benchmarks/out] [--duration 3] [--threads 1] [--retrain]

1. trains the trainer's ``cifar10-cnn`` preset (the classic Keras CIFAR-10 tutorial
   network, 32x32x3 input) for 2 epochs on the embedded scikit-learn digits
   upscaled to 32x32, or reuses that run when it is complete. The accuracy does
   not matter for latency (the same graph with other weights runs in the same
   time), so no CIFAR-10 download is needed;
2. exports FP32, FP16 and INT8 (Q/DQ) ONNX with cnn-export's library entry point;
3. runs cnn-bench (a fresh process) on the run folder: ONNX Runtime CPU for each
   precision and the Keras baselines (``model.predict(x)``, ``model(x)``, and a
   ``tf.function``) at batch 1, 8 and 32;
4. writes ``latency_bench.json`` (cnn-bench's full output), ``latency_summary.json``
   (the ratios) and ``latency_tables.md`` (the tables for benchmarks/README.md) under ``--out``.
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
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESET, EPOCHS, SIZE = "cifar10-cnn", 2, 32


def train_and_export(run: Path, retrain: bool) -> float:
    from cnnedge.export import export
    from cnnedge.trainer.loop import TrainConfig, is_complete, train

    t0 = time.perf_counter()
    if retrain or not is_complete(run):
        train(TrainConfig(preset=PRESET, data="digits", out=str(run), epochs=EPOCHS, img_size=(SIZE, SIZE),
                          force=run.exists(), verbose=0))
    if retrain or not all((run / n).is_file() for n in ("model.onnx", "model.fp16.onnx", "model.int8.onnx")):
        export(run / "model.keras", fp16=True, int8=True, force=True, check=False, calib_size=300)
    return time.perf_counter() - t0


def pick(rows: list[dict], artifact: str, label: str, batch: int) -> dict:
    for r in rows:
        if r["artifact"] == artifact and r["label"] == label and r["batch"] == batch:
            return r
    raise KeyError((artifact, label, batch))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="output folder (git-ignored)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per combination (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime / TensorFlow intra-op threads (default 1)")
    ap.add_argument("--batch", default="1,8,32", help="batch sizes (default 1,8,32)")
    ap.add_argument("--retrain", action="store_true", help="train and export again even if the run exists")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = out / "latency-cifar10-cnn"
    print(f"train + export {PRESET} in {run} ...", flush=True)
    prep_s = train_and_export(run, args.retrain)

    bench_json = out / "latency_bench.json"
    argv = [str(run), "--backends", "ort-cpu,keras", "--batch", args.batch, "--duration", str(args.duration),
            "--threads", str(args.threads), "--json", str(bench_json), "--markdown", str(out / "latency_bench.md"),
            "--plot", str(out / "latency_bench.png"), "--force"]
    command = "cnn-bench " + " ".join(a.replace(str(ROOT) + "/", "") for a in argv)
    print(command, flush=True)
    # a fresh process, so that --threads also applies to TensorFlow (training here already started it)
    code = subprocess.run([sys.executable, "-c", "from cnnedge.cli.bench import console; console()", *argv],
                          cwd=ROOT, check=False).returncode
    if code != 0:
        return code
    data = json.loads(bench_json.read_text())
    rows = data["rows"]
    batches = sorted({r["batch"] for r in rows})
    onnx = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
    ort = {p: {b: pick(rows, a, "ort-cpu", b) for b in batches} for p, a in onnx.items()}
    keras = {m: {b: pick(rows, "model.keras", f"keras {m}" if m != "tf.function" else "keras tf.function", b)
                 for b in batches}
             for m in ("model.predict(x)", "model(x)", "tf.function")}
    b1 = batches[0]
    fp32_b1 = ort["fp32"][b1]["latency_ms"]["p50"]
    summary = {
        "command": command, "settings": data["settings"], "machine": data["machine"], "prep_seconds": round(prep_s, 1),
        "batch1_p50_ms": {**{f"ort-cpu {p}": ort[p][b1]["latency_ms"]["p50"] for p in onnx},
                          **{f"keras {m}": keras[m][b1]["latency_ms"]["p50"] for m in keras}},
        "keras_over_ort_fp32_batch1": {m: round(keras[m][b1]["latency_ms"]["p50"] / fp32_b1, 2) for m in keras},
        "precision_over_fp32": {p: {b: round(ort[p][b]["latency_ms"]["p50"] / ort["fp32"][b]["latency_ms"]["p50"], 3)
                                    for b in batches} for p in ("fp16", "int8")},
        "warnings": data["warnings"],
    }
    (out / "latency_summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    def ms(v: float) -> str:
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"

    md = [f"Batch-{b1} latency, `{PRESET}` (32x32x3 input), per call:", "",
          "| how | p50 ms | p99 ms | max ms | vs ONNX Runtime FP32 (p50) |", "|---|---:|---:|---:|---:|"]
    for name, r in [("ONNX Runtime CPU FP32 (`session.run`)", ort["fp32"][b1]),
                    ("ONNX Runtime CPU FP16", ort["fp16"][b1]), ("ONNX Runtime CPU INT8", ort["int8"][b1]),
                    ("Keras `tf.function`", keras["tf.function"][b1]), ("Keras `model(x, training=False)`",
                                                                         keras["model(x)"][b1]),
                    ("Keras `model.predict(x)`", keras["model.predict(x)"][b1])]:
        lat = r["latency_ms"]
        md.append(f"| {name} | {ms(lat['p50'])} | {ms(lat['p99'])} | {ms(lat['max'])} | "
                  f"{lat['p50'] / fp32_b1:.1f}x |")
    md += ["", "INT8 and FP16 against FP32 on this CPU, ONNX Runtime (p50 per call, images/s):", "",
           "| batch | FP32 ms | FP16 ms | INT8 ms | FP16/FP32 | INT8/FP32 | FP32 img/s | FP16 img/s | INT8 img/s |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in batches:
        f32, f16, i8 = (ort[p][b] for p in ("fp32", "fp16", "int8"))
        md.append(f"| {b} | {ms(f32['latency_ms']['p50'])} | {ms(f16['latency_ms']['p50'])} | "
                  f"{ms(i8['latency_ms']['p50'])} | {f16['latency_ms']['p50'] / f32['latency_ms']['p50']:.2f} | "
                  f"{i8['latency_ms']['p50'] / f32['latency_ms']['p50']:.2f} | {f32['throughput']:,.0f} | "
                  f"{f16['throughput']:,.0f} | {i8['throughput']:,.0f} |")
    m, s = data["machine"], data["settings"]
    md += ["", f"Machine: {m['cpu']}, {m['cores']} cores, no GPU; ONNX Runtime "
           f"{m['libraries'].get('onnxruntime', '?')}, TensorFlow "
           f"{m['libraries'].get('tensorflow-cpu', m['libraries'].get('tensorflow', '?'))}, Keras "
           f"{m['libraries'].get('keras', '?')}; {s['threads']} intra-op thread(s); load average "
           f"{s['load_before']} before, {s['load_after']} after (1/5/15 min)."]
    if data["warnings"]:
        md.append(f"cnn-bench warned about run-to-run spread on {len(data['warnings'])} of {len(rows)} rows "
                  "(shared machine).")
    text = "\n".join(md) + "\n"
    (out / "latency_tables.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
