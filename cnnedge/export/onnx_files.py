"""The ONNX steps: the source model as FP32 ONNX (always), then FP16 and INT8 files made from that one, each
written into the staging folder with its card embedded."""
from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from ..artifact.names import ONNX_NAMES
from ..errors import OptionError
from .data import batch_for
from .workspace import Checked, Workspace


@dataclass(frozen=True)
class Fp32:
    """The FP32 file and the hash of its graph (the calibration cache's key)."""

    path: Path
    graph_sha: str


def to_onnx(ws: Workspace, data: Checked) -> Fp32:
    """The source model as FP32 ONNX taking the asked input dtype, cleaned up unless told not to."""
    from . import onnx_io

    source = data.source
    step = "Keras -> ONNX (tf2onnx)" if source.kind == "Keras" else "ONNX -> uint8-input ONNX"
    with ws.timer(step):
        proto = source.to_onnx(data.card, ws.opts.input_dtype, ws.opts.opset)
    change = getattr(source, "opset_change", None)
    if change is not None:
        ws.report.source = {**asdict(change), "notes": list(source.notes)}
    for note in source.notes:
        ws.timer.say(note)
    if ws.opts.cleanup:
        with ws.timer("graph cleanup (onnxslim)"):
            from .cleanup import simplify

            proto, res = simplify(proto, data.probe)
            ws.report.cleanup = asdict(res)
        if res.note:
            ws.timer.warn(res.note)
    onnx_io.canonical_names(proto)
    graph_sha = hashlib.sha256(proto.graph.SerializeToString()).hexdigest()
    onnx_io.embed_card(proto, data.base_card)
    return Fp32(onnx_io.save(proto, ws.staging / ONNX_NAMES["fp32"]), graph_sha)


def to_fp16(ws: Workspace, data: Checked, fp32: Path) -> Path:
    """The FP16 file, converted from the FP32 one; the weights it had to clamp are in the report."""
    import onnx

    from . import onnx_io
    from .fp16 import moved_line
    from .fp16 import to_fp16 as convert

    with ws.timer("FP16 ONNX"):
        half, counts = convert(onnx.load(str(fp32)))
        ws.report.fp16 = counts
        line = moved_line(counts)
        if line:
            ws.timer.say(line)
        onnx_io.embed_card(half, data.base_card.replace(precision="fp16"))
        return onnx_io.save(half, ws.staging / ONNX_NAMES["fp16"])


def to_int8(ws: Workspace, data: Checked, fp32: Fp32) -> tuple[Path, Path]:
    """The CPU INT8 file and the TensorRT one (what the INT8 engine is built from)."""
    from .calibration import cache_name, fingerprint_batches
    from .int8 import quantize
    from .qdq import CPU, FILE_NAMES, TENSORRT

    cset, method, fixed = data.calib, ws.opts.calib_method, data.source.fixed_batch
    assert cset is not None
    if fixed and len(cset) % fixed:  # a fixed-batch graph is calibrated in whole batches
        from .data import ImageSet

        keep = len(cset) - len(cset) % fixed
        if keep == 0:
            raise OptionError("calib_size", f"{len(cset)} images; the model takes batches of {fixed}: give at "
                                            f"least {fixed}")
        cset = ImageSet(cset.images[:keep], None if cset.labels is None else cset.labels[:keep], cset.source,
                        cset.skipped)
    with ws.timer(f"INT8 ONNX (calibrating on {len(cset)} images, {method})"):
        card = data.base_card  # the FP32 graph's: its input is what calibration feeds
        batches = functools.partial(cset.batches, card.input, card, batch_for(card.input, 32))  # re-startable
        data_sha = fingerprint_batches(batches())
        name = cache_name(fp32.graph_sha, data_sha, method)
        card = card.replace(precision="int8", provenance={"calibration": cset.describe()})
        res = quantize(fp32.path, ws.staging, batches, len(cset), data_sha, card, method, ws.out / name,
                       ws.staging / name, ws.opts.int8_options, batch=fixed)
        ws.report.calibration = {**cset.describe(), **res.describe()}
    return ws.staging / FILE_NAMES[CPU], ws.staging / FILE_NAMES[TENSORRT]
