"""Layers kept float: the measured candidates (the classifier head) and the accuracy-aware fallback that keeps
the layers losing most in int8 float until the file agrees with FP32 on the calibration images."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .calibration import CALIBRATION_BATCH, Batches, rebatch
from .qdq import with_tail
from .sensitivity import SENSITIVITY_IMAGES, mac_counts, sensitivity

CANDIDATE_OPS = ("Gemm", "MatMul")
# makes the file with these layers float (and their tails, :func:`.qdq.with_tail`) under this scratch name
Requantize = Callable[[list[str], str], Path]


@dataclass(frozen=True)
class LayerChoice:
    """One candidate layer: top-1 agreement with FP32 on the calibration images, quantized and kept float."""

    node: str
    op: str
    agreement_quantized: float
    agreement_float: float
    kept_float: bool


@dataclass(frozen=True)
class KeptLayer:
    """A layer the fallback keeps float in the CPU file, and what that costs."""

    node: str
    op: str
    noise_added: float  # noise-to-signal power ratio the layer adds in int8 (see :func:`sensitivity`)
    mac_share: float  # of the model's multiply-adds per image: what this layer now runs in float
    agreement: float  # the CPU file's top-1 agreement with FP32 on the calibration images, this layer float too


@dataclass(frozen=True)
class Fallback:
    """What :func:`fallback` did: the CPU file's calibration agreement before and after keeping ``kept`` float."""

    target: float
    images: int
    agreement_before: float
    agreement_after: float
    kept: list[KeptLayer]
    float_mac_share: float  # of the model's multiply-adds, all kept layers together
    reached: bool


def measure_candidates(graph: Any, exclude: list[str], max_cost: float, batches: Batches, fp32_path: Path,
                       quantized: Path, requantize: Requantize, batch: int | None = None
                       ) -> tuple[list[LayerChoice], float]:
    """Agreement with FP32 on the calibration images with each candidate layer quantized and kept float: the
    three models run side by side over one pass of ``batches()``, keeping only counts. Also the agreement of the
    CPU file as chosen."""
    linear = [n for n in graph.node if n.op_type in CANDIDATE_OPS]
    if not linear or linear[-1].name in exclude:
        return [], _agreements(fp32_path, [quantized], batches, batch)[0]
    last = linear[-1]  # the classifier head: its logits decide top-1
    without = requantize(with_tail(graph, [*exclude, last.name]), "cpu-candidate.onnx")
    with_q, without_q = _agreements(fp32_path, [quantized, without], batches, batch)
    keep = without_q - with_q > max_cost
    return [LayerChoice(last.name, last.op_type, with_q, without_q, keep)], without_q if keep else with_q


def _agreements(fp32_path: Path, models: list[Path], batches: Batches, batch: int | None) -> list[float]:
    """Top-1 agreement of each of ``models`` with ``fp32_path`` on the calibration images, side by side."""
    from .compare import opened, side_by_side, top1

    with opened(fp32_path, *models) as runs:
        ref, *top = side_by_side(runs, lambda: rebatch(batches(), batch or CALIBRATION_BATCH, tail=batch is None),
                                 top1)
    return [float(np.mean(t == ref)) if len(ref) else 0.0 for t in top]


def _rounds(n: int) -> Iterator[int]:
    """How many of the ``n`` ranked layers each fallback round keeps float: 1, 2, 3, 4, then growing by half."""
    k = 1
    while k < n:
        yield k
        k = k + 1 if k < 4 else k + k // 2
    yield n


def fallback(graph: Any, pre: Path, fp32_path: Path, quantized: Path, exclude: list[str], agreement: float | None,
             target: float, batches: Batches, requantize: Requantize, batch: int | None
             ) -> tuple[Path, Fallback | None]:
    """Accuracy-aware fallback for one INT8 file (``quantized``, made by ``requantize(exclude, name)``): while it
    agrees with FP32 (run by ONNX Runtime's CPU provider, which simulates a Q/DQ file's int8 exactly) on fewer
    calibration images than ``target``, keep float the layers that lose most in int8 (ranked by
    :func:`.sensitivity.sensitivity`), in growing rounds, until it agrees or none is left. ``agreement``: the file's, when
    already measured. Returns the file and what was done (None when nothing needed doing)."""
    if target <= 0:
        return quantized, None
    if agreement is None:
        agreement = _agreements(fp32_path, [quantized], batches, batch)[0]
    if agreement >= target:
        return quantized, None
    ranking = [r for r in sensitivity(pre, quantized, batches, batch) if r[0] not in exclude]
    macs = mac_counts(graph)
    total = sum(macs.values()) or 1
    kept: list[KeptLayer] = []
    best, reached, now = quantized, False, agreement
    for k in _rounds(len(ranking)):
        best = requantize(with_tail(graph, [*exclude, *(r[0] for r in ranking[:k])]), f"fallback-{k}.onnx")
        now = _agreements(fp32_path, [best], batches, batch)[0]
        kept += [KeptLayer(node, op, float(f"{added:.3g}"), round(macs.get(node, 0) / total, 4), now)
                 for node, op, added in ranking[len(kept):k]]
        if now >= target:
            reached = True
            break
    share = sum(k.mac_share for k in kept)
    return best, Fallback(target, SENSITIVITY_IMAGES, agreement, now, kept, round(share, 4), reached)
