"""FP32 vs INT8 on ONNX Runtime's CPU provider, side by side in one run: imagenette-cnn at 224x224 and cifar10-cnn.

    .venv/bin/python benchmarks/int8_bench.py [--out benchmarks/out/int8] [--seconds 3] [--rounds 3]

Each preset is built with random weights (speed does not depend on what a
network learned) and exported with ``cnn-export --int8`` (calibrated on the
embedded digits at the preset's size). Then model.onnx (FP32),
model.int8.onnx (the ONNX Runtime CPU flavour) and model.int8.trt.onnx (the
TensorRT flavour, as every INT8 file was before) are timed at batch 1 and 8,
with 1 intra-op thread and with ONNX Runtime's default, interleaved: each
round times every file for ``--seconds`` in turn, ``--rounds`` rounds, and the
median per call over all rounds is reported with the ratio to FP32 of the same
round settings. Accuracy is not measured here (random weights): the tests check
it on trained digits models. Writes int8_bench.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = (("imagenette-cnn", 224), ("cifar10-cnn", 32))
FILES = (("fp32", "model.onnx"), ("int8 (CPU file)", "model.int8.onnx"),
         ("int8 (CPU file, 8-bit weights)", "model.int8.8bit.onnx"), ("int8 (TensorRT file)", "model.int8.trt.onnx"))


def eight_bit(export_dir: Path, float_layers: list[str]) -> Path:
    """The CPU file as it was before 7-bit weights: the same calibration ranges (the export's cache file) and the
    same float layers, 8-bit weights (saturates on x86 without VNNI). Only to measure what 7 bits cost."""
    import tempfile

    from cnnedge.export.qdq import CPU, pre_processed, quantize_with_ranges

    cache = next(export_dir.glob("model.int8.calib-*.json"))
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_processed(export_dir / "model.onnx", pre)
        return quantize_with_ranges(pre, export_dir / "model.int8.8bit.onnx", cache, CPU, float_layers, "uint8",
                                    "entropy", weight_bits=8)


def build(preset: str, size: int, run: Path, **model_kwargs) -> Path:
    """A randomly initialised preset with the card the trainer would write, saved as run/model.keras
    (``model_kwargs`` go to ``create_model``: ``weights=None`` for a transfer preset's untrained base)."""
    import keras

    from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess, Provenance
    from cnnedge.datasets import describe, make_spec
    from cnnedge.trainer.presets import create_model, get_preset

    p = get_preset(preset)
    spec = make_spec("digits", size=(size, size))
    keras.utils.set_random_seed(0)
    model = create_model(preset, (size, size, 3), 10, **model_kwargs)
    card = ModelCard(name=preset, classes=tuple(str(i) for i in range(10)),
                     input=InputSpec(size, size, 3, "NHWC", "float32", p.color),
                     preprocess=Preprocess(resize="stretch", scale=p.scale, mean=p.mean, std=p.std, in_graph=True,
                                           name=p.preprocess_name),
                     provenance=Provenance(dataset=describe(spec), dataset_spec=spec))
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    card.save(run / "card.json")
    return run / "model.keras"


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per physical core)
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_calls(sess, x, seconds: float) -> list[float]:
    name = sess.get_inputs()[0].name
    feed = {name: x}
    for _ in range(3):
        sess.run(None, feed)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    return " ".join(sorted(set(re.findall(r"\b(avx512_vnni|amx_int8|avx512f|avx_vnni|avx2)\b", text)))) or "none"


def kernels() -> str:
    from cnnedge.runtime.cpu_kernels import int8_kernels

    return int8_kernels().name


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    """The machine a benchmark ran on, its load and the time, for the JSON and the table's header line."""
    return {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "cpu_flags": cpu_flags(), "int8_kernels": kernels(),
            "load_average": os.getloadavg(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def facts_line(result: dict) -> str:
    return (f"{result['machine']}; CPU flags: {result['cpu_flags']}; int8 kernels: {result['int8_kernels']}; "
            f"load average {result['load_average']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/int8", help="work folder, e.g. --out /tmp/int8")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per file, batch, threads and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = ap.parse_args(argv)
    import numpy as np

    from cnnedge.export import Int8Options, export
    from cnnedge.export.ort_kernels import ort_cpu_ops

    root = Path(args.out)
    rows, exports = [], {}
    for preset, size in PRESETS:
        run = root / preset
        # random weights: the fallback (which keeps layers float until INT8 agrees with FP32) is off, so that the
        # whole network is timed in int8
        report = export(build(preset, size, run), run / "export", int8=True, force=True, check=False,
                        calib_size=128, verify_size=64, int8_options=Int8Options(target_agreement=0.0))
        cal = report.calibration
        eight_bit(run / "export", cal["float_layers"])
        exports[preset] = {"float_layers": cal["float_layers"], "measured_layers": cal["measured_layers"],
                           "ort_cpu_ops": {name: ort_cpu_ops(run / "export" / name) for _, name in FILES},
                           "int8_step_s": next(s["seconds"] for s in report.steps if s["step"].startswith("INT8"))}
        rng = np.random.default_rng(0)
        for threads in (1, 0):
            sessions = {label: session(run / "export" / name, threads) for label, name in FILES}
            for batch in (1, 8):
                x = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
                samples: dict[str, list[float]] = {label: [] for label in sessions}
                for _ in range(args.rounds):
                    for label, sess in sessions.items():
                        samples[label] += time_calls(sess, x, args.seconds)
                base = float(np.median(samples["fp32"]))
                for label, _ in FILES:
                    med = float(np.median(samples[label]))
                    rows.append({"preset": preset, "size": size, "threads": threads or "default", "batch": batch,
                                 "file": label, "p50_ms": round(med, 3), "calls": len(samples[label]),
                                 "speed_vs_fp32": round(base / med, 2)})
    result = {**machine_facts(), "seconds": args.seconds, "rounds": args.rounds, "exports": exports, "rows": rows}
    root.mkdir(parents=True, exist_ok=True)
    (root / "int8_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    print(facts_line(result))
    print("| preset | threads | batch | file | p50 ms | speed vs FP32 |\n|---|---|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} {r['size']}x{r['size']} | {r['threads']} | {r['batch']} | {r['file']} | "
              f"{r['p50_ms']:.2f} | {r['speed_vs_fp32']:.2f}x |")
    for preset, e in exports.items():
        print(f"{preset}: kept float: {', '.join(e['float_layers']) or 'none'}; ORT CPU kernels: "
              + "; ".join(f"{n}: {ops}" for n, ops in e["ort_cpu_ops"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
