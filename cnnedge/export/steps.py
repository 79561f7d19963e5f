"""The export steps chained: one function that runs them, each reading one artifact and writing one.

Everything is written into a hidden staging folder inside the output folder and
moved into place (``os.replace``, atomic per file) only when every step has
succeeded, so a failed or interrupted export leaves no partial files; existing
outputs are refused up front unless ``force``.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..artifact.card import ModelCard, now_iso, sha256_file
from ..errors import CnnEdgeError, ExportError, OptionError, UsageError, first_line
from ..artifact.commit import STAGING_PREFIX
from .data import batch_for
from ..artifact.names import ENGINE_NAMES, ONNX_NAMES, REPORT_NAME
from .int8 import FILE_NAMES as INT8_FILES
from .int8 import TENSORRT
from .parity import ArtifactResult, Thresholds

if TYPE_CHECKING:
    import numpy as np

    from .data import ImageSet
    from .engine import Profile, Toolkit
    from .int8 import Int8Options
    from .sources import KerasSource, OnnxSource
    from .stops import Watch

INPUT_DTYPES = ("uint8", "float32")
INT8_TRT_NAME = INT8_FILES[TENSORRT]  # the TensorRT-flavoured INT8 file (see export/int8.py)


class ParityFailure(ExportError):
    """An artifact missed its parity threshold; the files and the report are written, ``report`` says what."""

    def __init__(self, message: str, report: "ExportReport"):
        super().__init__(message)
        self.report = report


@dataclass
class ExportReport:
    model: str
    out_dir: str
    artifacts: list[ArtifactResult] = field(default_factory=list)
    emulated: list[ArtifactResult] = field(default_factory=list)  # the CPU INT8 file on an emulated AVX2 CPU
    cpu_int8: dict[str, Any] | None = None  # emulated.IsaCheck: the CPUs the CPU INT8 file was verified on
    steps: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] | None = None  # a model from elsewhere: its opset and what was done to it
    cleanup: dict[str, Any] | None = None
    fp16: dict[str, Any] | None = None  # the FP16 converter's clamped weight values
    card_check: dict[str, Any] | None = None  # parity.CardCheck: is the card true to the model (labels needed)
    calibration: dict[str, Any] | None = None
    verify: dict[str, Any] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    engines: dict[str, Any] | None = None
    triton: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the user should read even with -q
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(a.passed is not False for a in self.checked) and not self._card_failures

    @property
    def checked(self) -> list[ArtifactResult]:
        """Every parity result: the artifacts as run here, then the CPU INT8 file on the emulated CPU."""
        return self.artifacts + self.emulated

    @property
    def failures(self) -> list[str]:
        return self._card_failures + [f"{a.label}: {'; '.join(a.failures)}" for a in self.checked
                                      if a.passed is False]

    @property
    def _card_failures(self) -> list[str]:
        return [f"model card: {f}" for f in (self.card_check or {}).get("failures", [])]

    def artifact(self, name: str) -> ArtifactResult:
        for a in self.artifacts:
            if Path(a.path).name == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["artifacts"] = [a.to_dict() for a in self.artifacts]
        d["emulated"] = [a.to_dict() for a in self.emulated]
        d["passed"] = self.passed
        d["total_seconds"] = round(sum(s["seconds"] for s in self.steps), 3)
        return d

    def table(self) -> str:
        from .parity import table

        return table(self.checked)


def planned_outputs(fp16: bool, int8: bool, engine: bool) -> list[str]:
    precisions = ["fp32"] + (["fp16"] if fp16 else []) + (["int8"] if int8 else [])
    names = [ONNX_NAMES[p] for p in precisions] + ([INT8_TRT_NAME] if int8 else [])
    for p in engine_precisions(fp16, int8) if engine else []:
        names += [ENGINE_NAMES[p], ENGINE_NAMES[p] + ".json"]
    return names + [REPORT_NAME]


def engine_precisions(fp16: bool, int8: bool) -> list[str]:
    return (["fp16"] if fp16 else []) + (["int8"] if int8 else []) or ["fp32"]


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; validated on construction, before anything is loaded or written."""

    fp16: bool = False
    int8: bool = False
    engine: bool = False
    input_dtype: str = "uint8"
    calib: str | None = None
    calib_size: int = 300
    calib_method: str = "entropy"
    int8_options: "Int8Options | None" = None  # None: Int8Options()
    verify: str | None = None
    verify_size: int = 1000
    batch: Any = "1,8,32"  # "MIN,OPT,MAX" or an engine.Profile; a Profile after validation
    gpu: str | None = None
    workspace_mib: int = 1024
    timing_cache: str | os.PathLike | None = None
    triton: str | os.PathLike | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    opset: int | None = None
    cleanup: bool = True
    trust: bool = False
    force: bool = False
    describe: Any = None  # sources.Description: a model from elsewhere, without a card

    def __post_init__(self) -> None:
        from .engine import Profile
        from .int8 import METHODS

        if self.input_dtype not in INPUT_DTYPES:
            raise OptionError("input_dtype", f"{self.input_dtype!r}; expected one of {', '.join(INPUT_DTYPES)}")
        if self.calib_method not in METHODS:
            import difflib

            close = difflib.get_close_matches(self.calib_method, METHODS, n=1)
            raise OptionError("calib_method", f"{self.calib_method!r}; expected one of {', '.join(METHODS)}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""))
        for name in ("calib_size", "verify_size", "workspace_mib"):
            n = getattr(self, name)
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise OptionError(name, f"must be a positive integer, found {n!r}")
        if self.opset is not None and not 13 <= self.opset <= 21:
            raise OptionError("opset", f"{self.opset}: expected 13..21 (Q/DQ per-channel needs 13; default 17)")
        from .int8 import Int8Options

        if self.int8_options is None:
            object.__setattr__(self, "int8_options", Int8Options())
        elif not isinstance(self.int8_options, Int8Options):
            raise OptionError("int8_options", f"must be an Int8Options, found {type(self.int8_options).__name__}")
        if not isinstance(self.batch, Profile):
            object.__setattr__(self, "batch", Profile.parse(self.batch))
        if self.gpu and not self.engine:
            raise OptionError("gpu", "applies to {engine} builds; add {engine} or drop {gpu}")


@dataclass(frozen=True)
class Workspace:
    """Where an export writes and what it tells: what every step shares."""

    opts: ExportOptions
    report: ExportReport
    timer: "_Steps"
    out: Path
    staging: Path  # the hidden folder the steps write into


@dataclass(frozen=True)
class Checked:
    """What the load phase read and checked before anything is written: the steps' input."""

    source: "KerasSource | OnnxSource"
    card: ModelCard  # the source model's
    base_card: ModelCard  # as exported: input dtype, provenance
    verify: "ImageSet"
    calib: "ImageSet | None"
    ref: "np.ndarray"  # the source model's outputs on the verification images, fed as it expects
    probe: "np.ndarray"  # verification images as the FP32 graph takes them (the clean-up step's check)


@dataclass(frozen=True)
class Fp32:
    """The FP32 file and the hash of its graph (the calibration cache's key)."""

    path: Path
    graph_sha: str


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

    watch = Watch()
    steps = _Steps(None, progress or (lambda _msg: None), watch)
    try:
        return _named(model_path, steps, lambda: _run(Path(model_path), out_dir, opts, check, steps))
    except BaseException as exc:
        stop = watch.stop_behind(exc)
        if stop is None or stop.__class__ is exc.__class__:
            raise
        raise stop from exc


def _named(model_path: str | os.PathLike, steps: "_Steps", run: Callable[[], ExportReport]) -> ExportReport:
    """``run()``, its failures named: the step, the model, the library's message."""
    try:
        return run()
    except CnnEdgeError as exc:
        if steps.current is None or isinstance(exc, (UsageError, ParityFailure)):
            raise
        msg = unstaged(str(exc))
        if msg == str(exc) and str(model_path) in msg:
            raise  # it names the model and nothing staged
        try:
            named = type(exc)(msg if str(model_path) in msg else f"{steps.current} failed for {model_path}: {msg}")
        except TypeError:  # an error class with its own fields: as it is
            raise exc from None
        raise named from exc
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.filename is not None:
            raise  # a file the user named or a full disk: the CLI names the file
        what = "model card nested too deeply" if isinstance(exc, RecursionError) else first_line(exc)
        raise ExportError(f"{steps.current or 'preparing the export'} failed for {model_path}: "
                          f"{type(exc).__name__}: {what} (run with --traceback for the details)") from exc


def unstaged(message: str) -> str:
    """``message`` without the staging folder's paths, which are gone when the user reads it: a staged file is
    named by its own name."""
    import re

    return re.sub(r"(?:[^\s'\"]*/)?" + re.escape(STAGING_PREFIX) + r"[^\s'\":]*/([^\s'\":/]+)", r"\1 (staged)",
                  message)


def _run(model_path: Path, out_dir: str | os.PathLike | None, opts: ExportOptions, check: bool,
         timer: "_Steps") -> ExportReport:
    from ..atomic import refuse_overwrite
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
                          created=now_iso(), versions=_versions(kit))
    timer.report = report
    if out.is_dir():
        from ..artifact.commit import recover

        for line in recover(out):  # exports killed here: finish or undo what they left, first
            _warn(report, timer, line)
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
            _check_triton(Path(opts.triton), card, opts)
        vset, cset = _read_images(opts, card, timer, report)
        with timer(f"{source.kind} reference outputs"):
            ref = reference_outputs(source.predict, vset.images, card)
        if described:
            card = _check_output_kind(card, source, ref, report, timer)
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


def _check_output_kind(card: ModelCard, source: Any, ref: Any, report: ExportReport, timer: "_Steps") -> ModelCard:
    """A described model's output kind: detected when not said; when said, checked against the outputs (a
    softmax model declared logits would get a second softmax in cnn-infer)."""
    from ..runtime.classifier import output_kind

    seen = output_kind(ref)
    said = source.declared_output
    if said is None:
        return card.replace(output=seen)
    if said != seen:
        _warn(report, timer, f"{source.path}: --output {said}, but its outputs on {len(ref)} images "
                             + ("are non-negative rows summing to 1, as probabilities are; cnn-infer would apply a "
                                "second softmax: drop --output logits" if said == "logits" else
                                "do not sum to 1: they look like logits; use --output logits"))
    return card


def _warn(report: ExportReport, timer: "_Steps", line: str) -> None:
    report.warnings.append(line)
    timer.say(f"warning: {line}")


def _write(opts: ExportOptions, report: ExportReport, timer: "_Steps", out: Path, data: Checked, kit: "Toolkit | None",
           gpus: tuple[str, ...] | None, check: bool) -> ExportReport:
    """Every step into a staging folder, then everything into place at once; the report; the verdict."""
    from . import scratch
    from ..artifact.commit import commit, in_flight, staging_prefix

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=out))
    ws = Workspace(opts, report, timer, out, staging)
    try:
        with scratch.inside(staging):
            _steps(ws, data, kit, gpus)
        if check and not report.passed:  # the gate failed: nothing of the folder's is replaced or removed
            kept = _keep_failed(staging, out)
            raise ParityFailure("parity check failed: " + " | ".join(report.failures) + f"; nothing in {out} was "
                                f"replaced: the failed files and their report are in {kept} (thresholds can be "
                                "changed with --min-agreement-* / --max-*)", report)
        # everything succeeded: into place, all or nothing (see .commit); with --force, what a previous export
        # left that this one does not write goes in the same commit, so the folder never mixes two models
        commit(staging, out, remove=stale_outputs(out, planned_outputs(opts.fp16, opts.int8, opts.engine)))
    finally:
        if not in_flight(out, staging):
            shutil.rmtree(staging, ignore_errors=True)
    if opts.triton is not None:
        with timer("Triton model repository"):
            report.triton = _write_triton(Path(opts.triton), report, data.base_card, opts.batch, opts.force,
                                          data.source.fixed_batch)
        from ..atomic import write_text

        write_text(out / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _steps(ws: Workspace, data: Checked, kit: "Toolkit | None", gpus: tuple[str, ...] | None) -> None:
    """Every artifact, checked, and the report, into the staging folder."""
    opts, staging = ws.opts, ws.staging
    fp32 = _to_onnx(ws, data)
    files = {"fp32": fp32.path}
    if opts.fp16:
        files["fp16"] = _to_fp16(ws, data, fp32.path)
    if opts.int8:
        files["int8"], files["int8-trt"] = _to_int8(ws, data, fp32)
    _check_onnx(ws, data, files)
    if opts.engine:
        assert kit is not None and gpus is not None
        _build_engines(ws, data, files, kit, gpus)
    from ..atomic import write_text

    write_text(staging / REPORT_NAME, json.dumps(ws.report.to_dict(), indent=2) + "\n")


FAILED_PREFIX = "export-failed-"


def all_outputs() -> list[str]:
    """Every file name an export can write into its folder (of any option combination)."""
    return planned_outputs(True, True, True) + [ENGINE_NAMES["fp32"], ENGINE_NAMES["fp32"] + ".json"]


def stale_outputs(out: Path, planned: list[str]) -> list[str]:
    """The export files in ``out`` that an export writing ``planned`` would not replace: left by an earlier
    export (of another model, or with other options), they must go with the commit."""
    return [n for n in all_outputs() if n not in planned and (out / n).is_file()]


def _keep_failed(staging: Path, out: Path) -> Path:
    """Move a failed export's staged files (its artifacts and report) to a new ``export-failed-<time>`` folder in
    ``out``, where the user can look at them, away from the working set."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        target = out / f"{FAILED_PREFIX}{stamp}{f'-{i}' if i else ''}"
        try:
            os.rename(staging, target)  # refuses an existing non-empty folder: never merges into one
            return target
        except OSError:
            if not target.exists():
                raise
    raise ExportError(f"{out}: could not find a free {FAILED_PREFIX}* folder name for the failed export's files")


def _read_images(opts: ExportOptions, card: ModelCard, timer: "_Steps", report: ExportReport) -> tuple[Any, Any]:
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


def _to_onnx(ws: Workspace, data: Checked) -> Fp32:
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
            _warn(ws.report, ws.timer, res.note)
    onnx_io.canonical_names(proto)
    graph_sha = hashlib.sha256(proto.graph.SerializeToString()).hexdigest()
    onnx_io.embed_card(proto, data.base_card)
    return Fp32(onnx_io.save(proto, ws.staging / ONNX_NAMES["fp32"]), graph_sha)


def _to_fp16(ws: Workspace, data: Checked, fp32: Path) -> Path:
    import onnx

    from . import onnx_io
    from .fp16 import moved_line, to_fp16

    with ws.timer("FP16 ONNX"):
        half, counts = to_fp16(onnx.load(str(fp32)))
        ws.report.fp16 = counts
        line = moved_line(counts)
        if line:
            ws.timer.say(line)
        onnx_io.embed_card(half, data.base_card.replace(precision="fp16"))
        return onnx_io.save(half, ws.staging / ONNX_NAMES["fp16"])


def _to_int8(ws: Workspace, data: Checked, fp32: Fp32) -> tuple[Path, Path]:
    """The CPU INT8 file and the TensorRT one (what the INT8 engine is built from)."""
    from .int8 import CPU, FILE_NAMES, TENSORRT, cache_name, fingerprint_batches, quantize

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


def _check_onnx(ws: Workspace, data: Checked, files: dict[str, Path]) -> None:
    from .parity import compare_onnx

    for key, p in files.items():
        with ws.timer(f"parity {p.name}"):
            r = compare_onnx(p, key.split("-")[0], data.verify.images, data.ref, data.verify.labels,
                             ws.opts.thresholds)
            r.path = str(ws.out / p.name)
            ws.report.artifacts.append(r)
        if key == "int8":
            _check_int8_cpus(ws, data, p, r)


def _check_int8_cpus(ws: Workspace, data: Checked, path: Path, native: ArtifactResult) -> None:
    """The CPU INT8 file on the CPUs it will meet: its weights' no-saturation guarantee, the native run above,
    and an emulated AVX2 CPU without VNNI where this one has VNNI (see :mod:`.emulated`)."""
    from . import emulated
    from .parity import compare_emulated
    from ..runtime.cpu_kernels import int8_kernels

    check = emulated.IsaCheck(int8_kernels().describe(), [f"{native.cpu} (native)"],
                              saturation=(ws.report.calibration or {}).get("saturation"))
    exe, why = emulated.emulator()
    if exe is None:
        check.not_verified.append(f"x86 without VNNI, emulated: {why}")
    else:
        with ws.timer(f"parity {path.name} on an emulated AVX2 CPU ({emulated.EMULATOR} -cpu {emulated.CPU_MODEL})"):
            r = compare_emulated(path, "int8", data.verify.images, data.ref, data.verify.labels, ws.opts.thresholds,
                                 exe, emulated.images_for(native.latency_ms_b1))
            r.path = str(ws.out / path.name)
            ws.report.emulated.append(r)
            check.verified.append(r.cpu or "")
    if not int8_kernels().exact:
        check.not_verified.append("x86 with VNNI: cannot be emulated here (qemu 7 has no AVX-512); its 32-bit sums "
                                  "are exact")
    ws.report.cpu_int8 = check.describe()


def _engine_profile(ws: Workspace, fixed: int | None) -> "Profile":
    """``--batch``, or the one batch size a fixed-batch graph takes (said when that differs)."""
    from .engine import Profile

    asked: Profile = ws.opts.batch
    if not fixed:
        return asked
    profile = Profile(fixed, fixed, fixed)
    if profile != asked:
        ws.timer.say(f"the model takes batches of {fixed} only: engine profile {fixed},{fixed},{fixed} instead of "
                     f"--batch {asked.min},{asked.opt},{asked.max}")
    return profile


def _build_engines(ws: Workspace, data: Checked, files: dict[str, Path], kit: "Toolkit",
                   gpus: tuple[str, ...]) -> None:
    import onnx

    from . import onnx_io
    from .engine import build
    from .parity import compare_engine

    opts = ws.opts
    profile = _engine_profile(ws, data.source.fixed_batch)
    cache = Path(opts.timing_cache) if opts.timing_cache else ws.out / "tensorrt.timing.cache"
    ws.report.engines = {"flavour": kit.flavour, "version": kit.version, "gpus": list(gpus),
                         "profile": profile.as_dict(), "workspace_mib": opts.workspace_mib,
                         "timing_cache": None if kit.flavour == "tensorrt_rtx" else str(cache)}
    for precision in engine_precisions(opts.fp16, opts.int8):
        source = files.get(f"{precision}-trt", files[precision])
        target = ws.staging / ENGINE_NAMES[precision]
        with ws.timer(f"{kit.flavour} engine {target.name} for {','.join(gpus)}"):
            t0 = time.perf_counter()
            build(source, target, onnx_io.card_from_model(onnx.load(str(source))), kit, gpus, profile,
                  opts.workspace_mib, cache)
            built = round(time.perf_counter() - t0, 3)
        with ws.timer(f"parity {target.name}"):
            r = compare_engine(target, precision, data.verify.images, data.ref, data.verify.labels, opts.thresholds)
            r.path = str(ws.out / target.name)
            if r.passed is None:
                r.note = (f"built for {','.join(gpus)} with {kit.flavour} {kit.version}; {r.note}: it is built "
                          f"from {source.name}, checked above")
            r.seconds = built if r.seconds is None else r.seconds + built
            ws.report.artifacts.append(r)


def _check_triton(repo: Path, card: ModelCard, opts: ExportOptions) -> None:
    """Refuse up front (not after the export) to overwrite a Triton model without --force."""
    from ..atomic import refuse_overwrite
    from .triton import check_labels, planned_names

    check_labels(card)
    precisions = ["fp32"] + (["fp16"] if opts.fp16 else []) + (["int8"] if opts.int8 else [])
    for name in planned_names(card, precisions, bool(opts.engine)):
        refuse_overwrite(repo / name / "config.pbtxt", opts.force)


def _write_triton(repo: Path, report: ExportReport, card: ModelCard, profile: Any, force: bool,
                  fixed_batch: int | None = None) -> list[str]:
    """Per artifact, the entry for Triton's own backend (when it has one) and cnnedge's Python-backend entry."""
    from . import onnx_io
    from .triton import TritonModel, model_name, write_model

    written = []
    for a in report.artifacts:
        p = Path(a.path)
        if a.kind == "onnx" and p.name == INT8_TRT_NAME:
            continue  # Triton's ONNX Runtime model is model.int8.onnx; TensorRT takes the plan
        if a.kind == "onnx":
            import onnx

            proto = onnx.load(str(p), load_external_data=False)
            inp, outp = onnx_io.io_names(proto)
            models = [TritonModel(model_name(card, a.precision, "onnxruntime"), p, "onnxruntime", inp, outp),
                      TritonModel(model_name(card, a.precision, "cnnedge"), p, "cnnedge", inp, outp)]
        else:
            from ..artifact.sidecar import EngineSidecar

            side = EngineSidecar.load(p)
            models = [TritonModel(model_name(card, a.precision, "cnnedge-engine"), p, "cnnedge-engine",
                                  side.input_name, side.output_name)]
            if report.engines and report.engines["flavour"] == "tensorrt":
                models.insert(0, TritonModel(model_name(card, a.precision, "tensorrt"), p, "tensorrt",
                                             side.input_name, side.output_name))
        written += [str(write_model(repo, m, card, profile.max, force, fixed_batch)) for m in models]
    return written


class _Steps:
    """Times each step, reports progress, records it in the report."""

    def __init__(self, report: ExportReport | None, say: Callable[[str], None], watch: "Watch | None" = None):
        self.report, self.say, self.watch = report, say, watch
        self.current: str | None = None  # the step running now (named in an unexpected failure)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.current = name
        self.say(f"{name} ...")
        t0 = time.perf_counter()
        yield
        stop = self.watch.signalled() if self.watch is not None else None
        if stop is not None:  # a library swallowed the stop: the export ends here all the same
            raise stop
        dt = time.perf_counter() - t0
        self.current = None
        if self.report is not None:
            self.report.steps.append({"step": name, "seconds": round(dt, 3)})
        self.say(f"{name}: {dt:.1f} s")


def _versions(kit: Any) -> dict[str, str]:
    import importlib.metadata as md

    from .. import __version__

    v = {"cnnedge": __version__}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxslim",
                "onnxconverter-common"):
        with contextlib.suppress(md.PackageNotFoundError):
            v[pkg] = md.version(pkg)
    if kit is not None:
        v[kit.flavour] = kit.version
    return v
