"""ONNX Runtime's other session settings against cnnedge's, side by side in one process (issue 31).

    .venv/bin/python benchmarks/ort_settings_bench.py [--rounds 7] [--out benchmarks/out]

cnnedge's CPU session (cnnedge.runtime.backends.ort) runs sequentially with one inter-op thread, ONNX Runtime's
memory arena and memory patterns on, and spinning as :func:`~cnnedge.runtime.backends.ort.spinning` decides.
Each variant below changes one of those and is timed interleaved with cnnedge's own session, round after round
in a shuffled order (a session that runs right after another pays for the caches that one left), on the trainer's
imagenette-cnn and MobileNetV2 (224x224, untrained: speed does not depend on the weights), at 1 and 2 intra-op
threads and batch 1 and 32. The ratio variant/cnnedge of the median time per batch is reported: below 1 the
variant is faster. ``control`` is a second session set exactly as cnnedge's: how far its ratio is from 1 is the
noise of the run.

- ``control``: no change;
- ``arena-off``: ``enable_cpu_mem_arena = False`` (memory returned to the system after each run);
- ``pattern-off``: ``enable_mem_pattern = False`` (no planned allocation per input shape);
- ``parallel``: ``ORT_PARALLEL`` execution with 2 inter-op threads (independent branches run together).
"""
from __future__ import annotations

from pathlib import Path

from ort_spin_bench import medians, parse_args, save

VARIANTS = ("cnnedge", "control", "arena-off", "pattern-off", "parallel")


def session(path: Path, threads: int, variant: str):
    """An ONNX Runtime CPU session set as cnnedge sets it, with ``variant``'s one change."""
    import onnxruntime as ort

    from cnnedge.runtime.backends.ort import spinning

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning(threads) else "0")
    if variant == "arena-off":
        so.enable_cpu_mem_arena = False
    elif variant == "pattern-off":
        so.enable_mem_pattern = False
    elif variant == "parallel":
        so.execution_mode, so.inter_op_num_threads = ort.ExecutionMode.ORT_PARALLEL, 2
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def main() -> None:
    args = parse_args(__doc__)
    rows = []
    for name, threads, batch, med in medians(args, lambda p, n: {v: session(p, n, v) for v in VARIANTS}, True):
        row = {"model": name, "threads": threads, "batch": batch, "cnnedge_ms": med["cnnedge"] * 1e3,
               **{f"{v}_over_cnnedge": med[v] / med["cnnedge"] for v in VARIANTS[1:]}}
        rows.append(row)
        print(f"{name:15s} threads {threads} batch {batch:2d}: cnnedge {med['cnnedge'] * 1e3:8.2f} ms; "
              + ", ".join(f"{v} {med[v] / med['cnnedge']:.2f}" for v in VARIANTS[1:]), flush=True)
    save(args, "ort_settings_bench.json", rows)


if __name__ == "__main__":
    main()
