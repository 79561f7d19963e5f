"""Results of a benchmark and their forms: the stdout table, JSON, Markdown and the plot."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .stats import Latency

METHOD_LABEL = {"infer": "", "tf.function": " tf.function", "predict": " model.predict(x)",
                "call": " model(x)"}


@dataclass
class Row:
    """One measured (artifact, backend, method, batch)."""

    artifact: str
    path: str
    backend: str              # ort-cpu | ort-cuda | ort-trt | trt | keras
    method: str               # infer | tf.function | predict | call
    precision: str
    batch: int
    requested: list[int]
    latency: Latency
    throughput: float         # images/s: batch / mean call latency (calls back to back)
    run_p50_ms: list[float]
    spread: float | None
    stages_ms: dict[str, dict[str, float]] | None = None   # GPU: h2d / compute / d2h, p50 and mean
    copy: bool | None = None
    samples_ms: list[float] | None = None
    wall_s: float | None = None          # wall time of the timed loop, harness between calls included

    def __post_init__(self) -> None:
        if self.batch < 1 or self.throughput <= 0:
            raise ValueError(f"invalid row: batch {self.batch}, throughput {self.throughput}")

    @property
    def label(self) -> str:
        return self.backend + METHOD_LABEL.get(self.method, f" {self.method}")

    @property
    def line(self) -> tuple[str, str]:
        return self.artifact, self.label

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "artifact": self.artifact, "path": self.path, "backend": self.backend, "method": self.method,
            "label": self.label, "precision": self.precision, "batch": self.batch, "requested": self.requested,
            "latency_ms": self.latency.to_dict(), "throughput": round(self.throughput, 3),
            "run_p50_ms": [round(v, 6) for v in self.run_p50_ms],
            "spread": None if self.spread is None else round(self.spread, 4),
            "wall_s": None if self.wall_s is None else round(self.wall_s, 6),
        }
        if self.stages_ms is not None:
            d["stages_ms"] = self.stages_ms
            d["copy"] = self.copy
        if samples and self.samples_ms is not None:
            d["samples_ms"] = [round(v, 5) for v in self.samples_ms]
        return d


@dataclass
class Skipped:
    """An (artifact, backend) that cannot run here, and why."""

    artifact: str
    backend: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"artifact": self.artifact, "backend": self.backend, "reason": self.reason}


@dataclass
class EndToEnd:
    """The whole pipeline on a folder next to the decode+resize-only bound of the same run."""

    artifact: str
    backend: str
    batch: int
    workers: int
    images: int
    failed: int
    throughput: float                 # images/s through the pipeline
    bound_throughput: float           # images/s of read + decode + resize alone, same pool size
    latency_ms: dict[str, float]      # capture (file read) to result, per image
    stages_ms: dict[str, float]       # read, decode, resize (per image), wait, inference, postprocess
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "backend": self.backend, "batch": self.batch, "workers": self.workers,
                "images": self.images, "failed": self.failed, "throughput": round(self.throughput, 3),
                "bound_throughput": round(self.bound_throughput, 3),
                "fraction_of_bound": round(self.throughput / self.bound_throughput, 4)
                if self.bound_throughput > 0 else None,
                "latency_ms": {k: round(v, 4) for k, v in self.latency_ms.items()},
                "stages_ms": {k: round(v, 4) for k, v in self.stages_ms.items()}, "seconds": round(self.seconds, 3)}


@dataclass
class BenchReport:
    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # batches changed to fit an artifact
    warnings: list[str] = field(default_factory=list)   # noisy runs
    end_to_end: list[EndToEnd] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)  # "artifact on backend" -> Backend.settings
    started: str = ""
    seconds: float = 0.0

    # ordering ------------------------------------------------------------------------------------------
    def line_key(self) -> dict[tuple[str, str], float]:
        """Each line's sort key: its p50 at batch 1 (or at its smallest measured batch)."""
        best: dict[tuple[str, str], tuple[int, float]] = {}
        for r in self.rows:
            cur = best.get(r.line)
            if cur is None or r.batch < cur[0]:
                best[r.line] = (r.batch, r.latency.p50)
        return {k: (0 if b == 1 else 1, v) for k, (b, v) in best.items()}  # type: ignore[misc]

    def sorted_rows(self) -> list[Row]:
        key = self.line_key()
        return sorted(self.rows, key=lambda r: (key[r.line], r.line, r.batch))

    def fastest(self) -> Row | None:
        """The fastest row at batch 1 (lowest p50), or None when nothing ran at batch 1."""
        ones = [r for r in self.rows if r.batch == 1]
        return min(ones, key=lambda r: r.latency.p50) if ones else None

    def int8_speedups(self) -> list[dict[str, Any]]:
        """INT8 against FP32 on this machine: for each INT8 row, the FP32 row of the same backend, method and
        batch (p50 over p50; above 1 means INT8 is faster)."""
        fp32: dict[tuple[str, str, int], Row] = {}
        for r in self.sorted_rows():
            if r.precision == "fp32":
                fp32.setdefault((r.backend, r.method, r.batch), r)
        out = []
        for r in self.sorted_rows():
            base = fp32.get((r.backend, r.method, r.batch))
            if r.precision == "int8" and base is not None:
                out.append({"artifact": r.artifact, "fp32_artifact": base.artifact, "backend": r.label,
                            "batch": r.batch, "speedup": round(base.latency.p50 / r.latency.p50, 3)})
        return out

    def _speedup_lines(self) -> list[str]:
        kernels = (self.machine.get("cpu_int8_kernels") or {}).get("name")
        return [f"INT8/FP32 speed here: {s['artifact']} on {s['backend']}, batch {s['batch']}: {s['speedup']:.2f}x "
                f"{s['fp32_artifact']}'s (p50)" + (f"; CPU int8 kernels: {kernels}"
                                                   if kernels and s["backend"].startswith("ort-cpu") else "")
                for s in self.int8_speedups()]

    # forms ---------------------------------------------------------------------------------------------
    def _cells(self) -> tuple[list[str], list[list[str]]]:
        head = ["", "artifact", "backend", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "max ms", "images/s"]
        fast = self.fastest()
        rows = []
        for r in self.sorted_rows():
            lat = r.latency
            rows.append(["*" if r is fast else "", r.artifact, r.label, r.precision, str(r.batch), _ms(lat.p50),
                         _ms(lat.p90), _ms(lat.p99), _ms(lat.max), f"{r.throughput:,.0f}"])
        return head, rows

    def table(self) -> str:
        head, rows = self._cells()
        out = []
        if rows:
            widths = [max(len(c) for c in col) for col in zip(head, *rows)]
            right = {4, 5, 6, 7, 8, 9}
            for cells in [head] + rows:
                out.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                                     for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
            out.append("* fastest at batch 1 (p50). Latency per call (one batch); no outliers removed.")
        else:
            out.append("nothing could run here")
        out += self._speedup_lines()
        kernels = (self.machine.get("cpu_int8_kernels") or {}).get("name")
        if kernels and not self.int8_speedups() and any(r.precision == "int8" and r.label.startswith("ort-cpu")
                                                        for r in self.rows):
            out.append(f"CPU int8 kernels here: {kernels}")
        out += self._engine_lines()
        out += self._stage_lines()
        out += self._e2e_lines()
        out += self.skipped_lines()
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def _engine_lines(self) -> list[str]:
        """What each engine was set to on this machine (threads, spinning), so a figure can be reproduced."""
        from ..runtime.backends.base import settings_text

        return [f"engine: {name}{settings_text(s)}" for name, s in self.engines.items() if s]

    def noise_summary(self, max_spread: float) -> str | None:
        """One line for all the rows whose runs disagreed by more than ``max_spread``, or None."""
        noisy = [r for r in self.rows if r.spread is not None and r.spread > max_spread]
        if not noisy:
            return None
        worst = max(noisy, key=lambda r: r.spread or 0.0)
        load = self.settings.get("load_after") or self.settings.get("load_before")
        return (f"p50 varied more than {max_spread:.0%} between runs on {len(noisy)} of {len(self.rows)} rows "
                f"(worst: {worst.artifact} {worst.label} batch {worst.batch}, {worst.spread:.0%}); the machine is "
                f"noisy (load average {load[0] if load else '?'}): measure again with --duration, fewer --threads "
                "or when it is quieter (each row's spread is in the JSON)")

    def skipped_lines(self) -> list[str]:
        """One line per backend and reason: the files it could not run."""
        groups: dict[tuple[str, str], list[str]] = {}
        for s in self.skipped:
            groups.setdefault((s.backend, s.reason), []).append(s.artifact)
        return [f"cannot run here: {backend} ({', '.join(arts)}): {reason}"
                for (backend, reason), arts in groups.items()]

    def _stage_lines(self) -> list[str]:
        lines = []
        for r in self.sorted_rows():
            if r.stages_ms:
                st = r.stages_ms
                lines.append(f"{r.artifact} {r.label} batch {r.batch}: p50 h2d {_ms(st['h2d']['p50'])} ms, compute "
                             f"{_ms(st['compute']['p50'])} ms, d2h {_ms(st['d2h']['p50'])} ms"
                             + ("" if r.copy else " (--no-copy: buffers on the device)"))
        return lines

    def _e2e_lines(self) -> list[str]:
        lines = []
        for e in self.end_to_end:
            s = e.stages_ms
            lines.append(f"end-to-end {e.artifact} {e.backend} batch {e.batch}, {e.workers} workers, "
                         f"{e.images} images: "
                         f"{e.throughput:,.0f} images/s vs decode+resize bound {e.bound_throughput:,.0f} images/s "
                         f"({e.throughput / e.bound_throughput:.0%}); latency p50 {_ms(e.latency_ms['p50'])} ms, "
                         f"p99 {_ms(e.latency_ms['p99'])} ms; per image read {_ms(s['read'])} ms, decode "
                         f"{_ms(s['decode'])} ms, resize {_ms(s['resize'])} ms, wait for batch {_ms(s['wait'])} ms; "
                         f"per batch inference {_ms(s['inference'])} ms, postprocess {_ms(s['postprocess'])} ms")
        return lines

    def markdown(self) -> str:
        head, rows = self._cells()
        head[0] = "fastest"
        rows = [["**\\***" if c[0] else ""] + c[1:] for c in rows]
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * 6) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        m = self.machine
        out += ["", f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores"
                + (f" (int8 kernels: {m['cpu_int8_kernels']['name']})" if m.get("cpu_int8_kernels") else "")
                + (f", GPU {', '.join(g['name'] for g in m['gpus'])}" if m.get("gpus") else ", no GPU")
                + f"; load average {self.settings.get('load_before')} before, {self.settings.get('load_after')} after; "
                f"ONNX Runtime intra-op threads {self.settings.get('threads')}."]
        if self.int8_speedups():
            out += [""] + [f"- {line}" for line in self._speedup_lines()]
        if self.end_to_end:
            out += ["", "| end-to-end | backend | batch | images/s | decode+resize bound | read ms | decode ms | "
                        "resize ms | wait ms | inference ms/batch | postprocess ms/batch |",
                    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for e in self.end_to_end:
                s = e.stages_ms
                out.append(f"| {e.artifact} | {e.backend} | {e.batch} | {e.throughput:,.0f} | "
                           f"{e.bound_throughput:,.0f} | {_ms(s['read'])} | {_ms(s['decode'])} | {_ms(s['resize'])} | "
                           f"{_ms(s['wait'])} | {_ms(s['inference'])} | {_ms(s['postprocess'])} |")
        if self.skipped:
            out += [""] + [f"- {line}" for line in self.skipped_lines()]
        if self.notes or self.warnings:
            out += [""] + [f"- note: {n}" for n in self.notes] + [f"- warning: {w}" for w in self.warnings]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict[str, Any]:
        fast = self.fastest()
        return {"started": self.started, "seconds": round(self.seconds, 3), "settings": self.settings,
                "machine": self.machine, "engines": self.engines, "rows": [r.to_dict() for r in self.sorted_rows()],
                "fastest": None if fast is None else {"artifact": fast.artifact, "label": fast.label},
                "int8_speedup": self.int8_speedups(),
                "skipped": [s.to_dict() for s in self.skipped], "notes": self.notes, "warnings": self.warnings,
                "end_to_end": [e.to_dict() for e in self.end_to_end]}

    def json_text(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def write_json(self, path: str | os.PathLike, replace: bool = True) -> None:
        """Written atomically; ``replace=False`` (no --force) keeps a file that appeared at ``path`` meanwhile."""
        from ..staging import write_text

        write_text(path, self.json_text(), replace)

    def write_markdown(self, path: str | os.PathLike, replace: bool = True) -> None:
        from ..staging import write_text

        write_text(path, self.markdown(), replace)

    def plot(self, path: str | os.PathLike, replace: bool = True) -> None:
        """Latency (p50, with p99 as a dashed line) vs batch, one line per artifact/backend; throughput below."""
        from .._lazy import require

        mpl = require("matplotlib", "--plot")
        mpl.use("Agg")
        import matplotlib.pyplot as plt

        from ..staging import staged_path

        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
        lines: dict[tuple[str, str], list[Row]] = {}
        for r in self.sorted_rows():
            lines.setdefault(r.line, []).append(r)
        for (art, label), rows in lines.items():
            rows = sorted(rows, key=lambda r: r.batch)
            xs = [r.batch for r in rows]
            p = ax1.plot(xs, [r.latency.p50 for r in rows], marker="o", label=f"{art} {label}")
            ax1.plot(xs, [r.latency.p99 for r in rows], linestyle="--", color=p[0].get_color(), alpha=0.5)
            ax2.plot(xs, [r.throughput for r in rows], marker="o", color=p[0].get_color())
        ax1.set_ylabel("latency per batch, ms (p50; dashed p99)")
        ax2.set_ylabel("throughput, images/s")
        ax2.set_xlabel("batch size")
        batches = sorted({r.batch for r in self.rows})
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            if batches:
                ax.set_xticks(batches, [str(b) for b in batches])
                ax.minorticks_off()
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax1.legend(fontsize=7, loc="best")
        m = self.machine
        fig.suptitle(f"cnn-bench on {m.get('cpu', '?')} ({m.get('cores', '?')} cores"
                     + (f", {m['gpus'][0]['name']}" if m.get("gpus") else "") + ")", fontsize=9)
        fig.tight_layout()
        with staged_path(Path(path), replace) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)


def _ms(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"
