"""Time a full export (ONNX FP32 + FP16 + INT8 + TensorRT-RTX engines) of digits-cnn and cifar10-cnn.

    .venv/bin/python benchmarks/export_bench.py [--out benchmarks/out/export] [--gpu sm89]

Each preset is trained first (once; a finished run in the output folder is reused):
digits-cnn on the embedded digits for 20 epochs as `make demo` does, and the
cifar10-cnn network on the embedded digits at 32x32 for 3 epochs, because
CIFAR-10 cannot be downloaded on the machines this project is measured on (the
export's cost depends on the network, not on what it learned). Then each is
exported twice in this process: a cold export (calibration computed) and a
re-export with --force (calibration ranges from the cache). Step times come
from export_report.json. Writes export_bench.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = (("digits-cnn", 20), ("cifar10-cnn", 3))
STEP_GROUPS = (("convert+cleanup", ("Keras -> ONNX", "graph cleanup")), ("fp16", ("FP16 ONNX",)),
               ("int8", ("INT8 ONNX",)), ("parity", ("parity", "Keras reference", "card check")), ("engines", ("engine",)))


def train_once(preset: str, epochs: int, run: Path) -> float:
    from cnnedge.trainer.loop import TrainConfig, is_complete, train

    if is_complete(run):
        return json.loads((run / "metrics.json").read_text())["test_accuracy"]
    result = train(TrainConfig(preset=preset, data="digits", out=str(run), epochs=epochs, img_size=(32, 32),
                               force=run.exists(), verbose=0), log=lambda s: None)
    return result.test_accuracy


def group_seconds(steps: list[dict]) -> dict[str, float]:
    out = {g: 0.0 for g, _ in STEP_GROUPS}
    for s in steps:
        for g, keys in STEP_GROUPS:
            if any(k in s["step"] for k in keys):
                out[g] += s["seconds"]
    return {k: round(v, 2) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/export", help="work folder, e.g. --out /tmp/bench")
    ap.add_argument("--gpu", default="sm89", help="engine targets, e.g. --gpu sm86,sm89")
    args = ap.parse_args(argv)
    from cnnedge.export import export

    root = Path(args.out)
    rows = []
    for preset, epochs in PRESETS:
        run = root / preset
        acc = train_once(preset, epochs, run)
        for label in ("cold", "re-export"):
            t0 = time.perf_counter()
            report = export(run / "model.keras", run / "export", fp16=True, int8=True, engine=True, gpu=args.gpu,
                            force=True, check=False)
            wall = time.perf_counter() - t0
            int8 = report.artifact("model.int8.onnx")
            rows.append({"preset": preset, "run": label, "train_epochs": epochs, "keras_test_accuracy": acc,
                         "wall_s": round(wall, 2), "steps": report.steps, "groups": group_seconds(report.steps),
                         "calibration_cache_hit": report.calibration["cache_hit"],
                         "int8_accuracy_drop_points": round(100 * int8.accuracy_drop, 2),
                         "int8_top1_agreement": int8.top1_agreement, "passed": report.passed,
                         "artifacts": {Path(a.path).name: {"size_bytes": a.size_bytes, "latency_ms_b1": a.latency_ms_b1,
                                                           "max_abs_diff": a.max_abs_diff,
                                                           "top1_agreement": a.top1_agreement}
                                       for a in report.artifacts}})
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
              "gpu_targets": args.gpu, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    root.mkdir(parents=True, exist_ok=True)
    (root / "export_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    heads = ["preset", "run", "wall s"] + [g for g, _ in STEP_GROUPS] + ["INT8 drop (pts)", "passed"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for r in rows:
        cells = [r["preset"], r["run"], f"{r['wall_s']:.1f}"] + [f"{r['groups'][g]:.1f}" for g, _ in STEP_GROUPS]
        cells += [f"{r['int8_accuracy_drop_points']:.2f}", "yes" if r["passed"] else "NO"]
        print("| " + " | ".join(cells) + " |")
    print("\n| preset | artifact | size | ORT CPU ms @ b1 | max abs diff | top-1 agreement |\n|---|---|---|---|---|---|")
    for r in rows:
        if r["run"] != "cold":
            continue
        for name, a in r["artifacts"].items():
            lat = "-" if a["latency_ms_b1"] is None else f"{a['latency_ms_b1']:.3f}"
            diff = "-" if a["max_abs_diff"] is None else f"{a['max_abs_diff']:.1e}"
            agree = "-" if a["top1_agreement"] is None else f"{a['top1_agreement']:.2%}"
            print(f"| {r['preset']} | {name} | {a['size_bytes'] / 1024:.0f} KB | {lat} | {diff} | {agree} |")
    print(f"\nwrote {root / 'export_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
