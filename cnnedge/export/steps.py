"""The export steps chained: one function that runs them, each reading one artifact and writing one.

Everything is written into a hidden staging folder inside the output folder and
moved into place (``os.replace``, atomic per file) only when every step has
succeeded, so a failed or interrupted export leaves no partial files; existing
outputs are refused up front unless ``force``.

The steps: read the model and the images, then (:func:`_steps`) FP32 ONNX, FP16, INT8
(:mod:`.onnx_files`), their parity (:mod:`.onnx_parity`), the engines (:mod:`.engine_files`), each under
:mod:`.timer`'s one wrapper; then the commit (:mod:`.workspace`) and the Triton entries (:mod:`.triton`).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..artifact.card import ModelCard, now_iso, sha256_file
from ..artifact.names import REPORT_NAME
from ..errors import OptionError, UsageError
from .data import batch_for
from .engine_files import build_engines
from .onnx_files import to_fp16, to_int8, to_onnx
from .onnx_parity import check_onnx
from .options import ExportOptions
from .report import ExportReport, ParityFailure, library_versions
from .triton import check_repository, write_repository
from .workspace import (Checked, Workspace, keep_failed, planned_outputs, recovered_lines, stale_outputs,
                        staging_folder)

if TYPE_CHECKING:
    from .engine import Toolkit
    from .timer import StepTimer


def export(model_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
           options: ExportOptions | None = None, *, check: bool = True,
           progress: Callable[[str], None] | None = None, **option_values: Any) -> ExportReport:
    """Export a Keras model to ONNX FP32 (always), FP16 / INT8 ONNX and TensorRT engines, each checked against it.

    Writes into ``out_dir`` (default: the model's folder). The options are an :class:`ExportOptions` or its
    fields as keywords (``export(path, fp16=True, int8=True)``). Returns the :class:`ExportReport` (also written
    as ``export_report.json``). With ``check`` (the default) a missed parity threshold raises
    :class:`ParityFailure` after the files and the report are written. ``progress`` receives one line per step.
    """
    if options is None:
        names = {f.name for f in fields(ExportOptions)}
        unknown = sorted(set(option_values) - names)
        if unknown:
            raise UsageError(f"export() takes no option {', '.join(unknown)} (options: {', '.join(sorted(names))})")
        options = ExportOptions(**option_values)
    elif option_values:
        raise UsageError("export(): give either an ExportOptions or option keywords, not both")
    return run(model_path, out_dir, options, check=check, progress=progress)


def run(model_path: str | os.PathLike, out_dir: str | os.PathLike | None, opts: ExportOptions, *,
        check: bool = True, progress: Callable[[str], None] | None = None) -> ExportReport:
    """:func:`export` with the options as one :class:`ExportOptions`.

    A failure that is not already a :class:`~cnnedge.errors.CnnEdgeError` (a library's bug or limit) becomes
    one :class:`ExportError` naming the step, the model and the library's message; the original is chained.
    A stop (Ctrl-C, SIGTERM) stays a stop, whatever a library made of it (see :mod:`.stops`).
    """
    from .stops import Watch
    from .timer import StepTimer

    timer = StepTimer(progress or (lambda _msg: None), Watch())
    return timer.guarded(model_path, lambda: _run(Path(model_path), out_dir, opts, check, timer))


def _run(model_path: Path, out_dir: str | os.PathLike | None, opts: ExportOptions, check: bool,
         timer: "StepTimer") -> ExportReport:
    from ..staging import refuse_overwrite
    from .engine import parse_gpus, toolkit
    from .keras2onnx import exported_card
    from .parity import check_card

    kit = gpus = None
    if opts.engine:
        kit = toolkit()
        gpus = parse_gpus(opts.gpu, kit.flavour)

    out = Path(out_dir) if out_dir is not None else model_path.parent
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise OptionError("out_dir", f"{out}: {blocked} exists and is not a folder; choose another output folder")
    report = ExportReport(model=str(model_path), out_dir=str(out), thresholds=asdict(opts.thresholds),
                          created=now_iso(), versions=library_versions(kit))
    timer.report = report
    if out.is_dir():
        for line in recovered_lines(out):  # exports killed here: finish or undo what they left, first
            timer.warn(line)
    for name in planned_outputs(opts.fp16, opts.int8, opts.engine):
        if (out / name).resolve() == model_path.resolve():
            raise OptionError("out_dir", f"{out}: the export would write {name} over the model it exports; choose "
                                         "another output folder")
        refuse_overwrite(out / name, opts.force)
    # --- load: nothing is written until every input has been read and checked ------------------------------
    with timer("read model card"):  # before the model: a bad card or a missing description costs no load
        source = _open(model_path, opts)
    described = source.card is None
    try:
        with timer(f"load {source.kind} model"):
            card = source.load()
        if opts.triton is not None:
            check_repository(Path(opts.triton), card, opts)
        vset, cset = _read_images(opts, card, timer, report)
        with timer(f"{source.kind} reference outputs"):
            ref = reference_outputs(source.predict, vset.images, card)
        if described:
            card = _check_output_kind(card, source, ref, timer)
        if vset.labels is not None:
            with timer("card check (labelled images)"):
                acc = float((ref.argmax(1) == vset.labels).mean())
                report.card_check = asdict(check_card(source.predict, vset.images, vset.labels, card, acc,
                                                           ref=ref, batch=batch_for(card.input)))
        prov = {"source_sha256": sha256_file(model_path), "parent": model_path.name,
                "versions": {**card.provenance.versions, **report.versions}}
        if described:
            prov["created"] = report.created
        base_card = exported_card(card, opts.input_dtype).replace(precision="fp32", provenance=prov)
        probe = vset.inputs(base_card.input, base_card, limit=source.fixed_batch or batch_for(card.input, PROBE))
        return _write(opts, report, timer, out, Checked(source, card, base_card, vset, cset, ref, probe), kit, gpus,
                      check)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


PROBE = 64  # images the clean-up step runs through both graphs


def reference_outputs(predict: Callable[[Any], Any], images: Any, card: ModelCard) -> Any:
    """The source model's outputs on ``images`` fed as its card says, a batch at a time."""
    from .compare import outputs, slices
    from .sources import source_inputs

    return outputs(lambda imgs: predict(source_inputs(imgs, card)), slices(images, batch_for(card.input)))


def _open(model_path: Path, opts: ExportOptions) -> Any:
    """The source; a missing description also lists the best common preprocessing measured on the user's
    labelled images, when there are some."""
    from .sources import DescriptionMissing, open_source

    try:
        return open_source(model_path, opts.describe, opts.trust, opts.opset)
    except DescriptionMissing as exc:
        from .suggest import hint

        raise exc.with_hint(hint(model_path, opts.describe, exc.missing, opts.verify or opts.calib, opts.trust,
                                 opts.opset)) from None


def _check_output_kind(card: ModelCard, source: Any, ref: Any, timer: "StepTimer") -> ModelCard:
    """A described model's output kind: detected when not said; when said, checked against the outputs (a
    softmax model declared logits would get a second softmax in cnn-infer)."""
    from ..runtime.classifier import output_kind

    seen = output_kind(ref)
    said = source.declared_output
    if said is None:
        return card.replace(output=seen)
    if said != seen:
        timer.warn(f"{source.path}: --output {said}, but its outputs on {len(ref)} images "
                   + ("are non-negative rows summing to 1, as probabilities are; cnn-infer would apply a "
                      "second softmax: drop --output logits" if said == "logits" else
                      "do not sum to 1: they look like logits; use --output logits"))
    return card


def _read_images(opts: ExportOptions, card: ModelCard, timer: "StepTimer", report: ExportReport) -> tuple[Any, Any]:
    """Verification images (held out where there are some) and, for INT8, calibration images."""
    from .data import DATASETS, load_images

    with timer("read verification images"):
        recorded = bool((card.provenance.dataset_spec or {}).get("source"))
        if opts.verify is not None:
            source, flag, note = opts.verify, "--verify", ""
        elif opts.calib in DATASETS or (recorded and opts.calib is not None):
            source, flag, note = (opts.calib if opts.calib in DATASETS else None), "--calib", ""
        elif recorded:
            source, flag, note = None, "--verify", ""
        elif opts.calib is not None:
            source, flag, note = opts.calib, "--calib", " (the calibration images: no held-out set given)"
        else:
            raise OptionError("verify", "needed: the model's card records no training data to check the export "
                                        "on; give {verify} DIR (a folder of images, in folders named after the "
                                        "classes for accuracy) or {verify} DATASET")
        vset = load_images(source, card, "test", opts.verify_size, flag)
        vset.source += note
        report.verify = vset.describe()
    cset = None
    if opts.int8:
        with timer("read calibration images"):
            try:
                cset = load_images(opts.calib, card, "train", opts.calib_size, "--calib")
            except UsageError as exc:
                if opts.calib is None:
                    raise OptionError("int8", f"needs calibration images and none are available: {exc}") from None
                raise
    return vset, cset


def _write(opts: ExportOptions, report: ExportReport, timer: "StepTimer", out: Path, data: Checked,
           kit: "Toolkit | None", gpus: tuple[str, ...] | None, check: bool) -> ExportReport:
    """Every step into a staging folder, then everything into place at once; the report; the verdict."""
    from . import scratch

    with staging_folder(out) as folder:
        staging = folder.path
        ws = Workspace(opts, report, timer, out, staging)
        with scratch.inside(staging):
            _steps(ws, data, kit, gpus)
        if check and not report.passed:  # the gate failed: nothing of the folder's is replaced or removed
            kept = keep_failed(staging, out)
            raise ParityFailure("parity check failed: " + " | ".join(report.failures) + f"; nothing in {out} was "
                                f"replaced: the failed files and their report are in {kept} (thresholds can be "
                                "changed with --min-agreement-* / --max-*" + _engine_hint(report) + ")", report)
        # everything succeeded: into place, all or nothing (see cnnedge.staging); with --force, what a previous
        # export left that this one does not write goes in the same commit, so the folder never mixes two models
        folder.commit(remove=stale_outputs(out, planned_outputs(opts.fp16, opts.int8, opts.engine)))
    if opts.triton is not None:
        with timer("Triton model repository"):
            report.triton = write_repository(Path(opts.triton), report, data.base_card, opts.batch, opts.force,
                                             data.source.fixed_batch)
        from ..staging import write_text

        write_text(out / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _engine_hint(report: ExportReport) -> str:
    """How to leave out a CPU engine that failed a file, when one did: a deployment that never meets it may."""
    failed = sorted({a.engine for a in report.other_engines if a.passed is False and a.engine})
    if not failed:
        return ""
    keep = [e for e in (report.parity_engines or {}).get("verified", []) if e not in failed]
    return f"; where {', '.join(failed)} will never run these files: --parity-engines {','.join(keep)}"


def _steps(ws: Workspace, data: Checked, kit: "Toolkit | None", gpus: tuple[str, ...] | None) -> None:
    """Every artifact, checked, and the report, into the staging folder."""
    from ..staging import write_text

    opts = ws.opts
    fp32 = to_onnx(ws, data)
    files = {"fp32": fp32.path}
    if opts.fp16:
        files["fp16"] = to_fp16(ws, data, fp32.path)
    if opts.int8:
        files["int8"], files["int8-trt"] = to_int8(ws, data, fp32)
    check_onnx(ws, data, files)
    if opts.engine:
        assert kit is not None and gpus is not None
        build_engines(ws, data, files, kit, gpus)
    write_text(ws.staging / REPORT_NAME, json.dumps(ws.report.to_dict(), indent=2) + "\n")
