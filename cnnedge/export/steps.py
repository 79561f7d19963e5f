"""The export steps chained: one function that runs them, each reading one artifact and writing one.

Everything is written into a hidden staging folder inside the output folder and
moved into place (``os.replace``, atomic per file) only when every step has
succeeded, so a failed or interrupted export leaves no partial files; existing
outputs are refused up front unless ``force``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..card import ModelCard, now_iso, sha256_file
from ..errors import ExportError, UsageError
from .int8 import FILE_NAMES as INT8_FILES
from .int8 import TENSORRT
from .parity import ArtifactResult, Thresholds

if TYPE_CHECKING:
    from .int8 import Int8Options

INPUT_DTYPES = ("uint8", "float32")
REPORT_NAME = "export_report.json"
ONNX_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
INT8_TRT_NAME = INT8_FILES[TENSORRT]  # the TensorRT-flavoured INT8 file (see export/int8.py)
ENGINE_NAMES = {"fp32": "model.engine", "fp16": "model.fp16.engine", "int8": "model.int8.engine"}


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
    steps: list[dict[str, Any]] = field(default_factory=list)
    cleanup: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    verify: dict[str, Any] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    engines: dict[str, Any] | None = None
    triton: list[str] = field(default_factory=list)
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(a.passed is not False for a in self.artifacts)

    @property
    def failures(self) -> list[str]:
        return [f"{Path(a.path).name}: {'; '.join(a.failures)}" for a in self.artifacts if a.passed is False]

    def artifact(self, name: str) -> ArtifactResult:
        for a in self.artifacts:
            if Path(a.path).name == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["artifacts"] = [a.to_dict() for a in self.artifacts]
        d["passed"] = self.passed
        d["total_seconds"] = round(sum(s["seconds"] for s in self.steps), 3)
        return d

    def table(self) -> str:
        from .parity import table

        return table(self.artifacts)


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

    def __post_init__(self) -> None:
        from .engine import Profile
        from .int8 import METHODS

        if self.input_dtype not in INPUT_DTYPES:
            raise UsageError(f"--input {self.input_dtype!r}; expected one of {', '.join(INPUT_DTYPES)}")
        if self.calib_method not in METHODS:
            import difflib

            close = difflib.get_close_matches(self.calib_method, METHODS, n=1)
            raise UsageError(f"--calib-method {self.calib_method!r}; expected one of {', '.join(METHODS)}"
                             + (f" (did you mean {close[0]!r}?)" if close else ""))
        for flag, n in (("--calib-size", self.calib_size), ("--verify-size", self.verify_size),
                        ("--workspace", self.workspace_mib)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise UsageError(f"{flag} must be a positive integer, found {n!r}")
        if self.opset is not None and not 13 <= self.opset <= 21:
            raise UsageError(f"--opset {self.opset}: expected 13..21 (Q/DQ per-channel needs 13; default 17)")
        from .int8 import Int8Options

        if self.int8_options is None:
            object.__setattr__(self, "int8_options", Int8Options())
        elif not isinstance(self.int8_options, Int8Options):
            raise UsageError(f"int8_options must be an Int8Options, found {type(self.int8_options).__name__}")
        if not isinstance(self.batch, Profile):
            object.__setattr__(self, "batch", Profile.parse(self.batch))
        if self.gpu and not self.engine:
            raise UsageError("--gpu applies to --engine builds; add --engine or drop --gpu")


@dataclass
class _Job:
    """The state one export shares between its steps."""

    opts: ExportOptions
    report: ExportReport
    timer: "_Steps"
    model: Any
    card: ModelCard  # as trained
    base_card: ModelCard  # as exported: input dtype, provenance
    out: Path
    staging: Path
    x: Any  # verification images as the artifacts take them
    ref: Any  # Keras outputs on them
    vset: Any
    cset: Any
    kit: Any
    gpus: tuple[str, ...] | None
    paths: dict[str, Path] = field(default_factory=dict)
    graph_sha: str = ""


def export(model_path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, fp16: bool = False,
           int8: bool = False, engine: bool = False, input_dtype: str = "uint8", calib: str | None = None,
           calib_size: int = 300, calib_method: str = "entropy", int8_options: "Int8Options | None" = None,
           verify: str | None = None, verify_size: int = 1000, batch: Any = "1,8,32", gpu: str | None = None, workspace_mib: int = 1024,
           timing_cache: str | os.PathLike | None = None, triton: str | os.PathLike | None = None,
           thresholds: Thresholds | None = None, opset: int | None = None, cleanup: bool = True,
           trust: bool = False, force: bool = False, check: bool = True,
           progress: Callable[[str], None] | None = None) -> ExportReport:
    """Export a Keras model to ONNX FP32 (always), FP16 / INT8 ONNX and TensorRT engines, each checked against Keras.

    Writes into ``out_dir`` (default: the model's folder); the options are those of ``cnn-export`` (see
    :class:`ExportOptions`). Returns the :class:`ExportReport` (also written as ``export_report.json``). With
    ``check`` (the default) a missed parity threshold raises :class:`ParityFailure` after the files and the
    report are written. ``progress`` receives one line per step.
    """
    opts = ExportOptions(fp16=fp16, int8=int8, engine=engine, input_dtype=input_dtype, calib=calib,
                         calib_size=calib_size, calib_method=calib_method, int8_options=int8_options, verify=verify,
                         verify_size=verify_size, batch=batch, gpu=gpu, workspace_mib=workspace_mib, timing_cache=timing_cache,
                         triton=triton, thresholds=thresholds or Thresholds(), opset=opset, cleanup=cleanup,
                         trust=trust, force=force)
    return run(model_path, out_dir, opts, check=check, progress=progress)


def run(model_path: str | os.PathLike, out_dir: str | os.PathLike | None, opts: ExportOptions, *,
        check: bool = True, progress: Callable[[str], None] | None = None) -> ExportReport:
    """:func:`export` with the options as one :class:`ExportOptions`."""
    from ..atomic import refuse_overwrite
    from ..keras_io import check_model_file, load_card_for, load_keras_model
    from .engine import parse_gpus, toolkit

    model_path = Path(model_path)
    kit = gpus = None
    if opts.engine:
        kit = toolkit()
        gpus = parse_gpus(opts.gpu, kit.flavour)
    check_model_file(model_path, opts.trust)
    out = Path(out_dir) if out_dir is not None else model_path.parent
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    for name in planned_outputs(opts.fp16, opts.int8, opts.engine):
        refuse_overwrite(out / name, opts.force)
    # --- load: nothing is written until every input has been read and checked ------------------------------
    report = ExportReport(model=str(model_path), out_dir=str(out), thresholds=asdict(opts.thresholds),
                          created=now_iso(), versions=_versions(kit))
    timer = _Steps(report, progress or (lambda _msg: None))
    with timer("load Keras model"):
        model = load_keras_model(model_path, trust=opts.trust)
    card = load_card_for(model_path)
    from .keras2onnx import check_image_model

    check_image_model(model, card)
    if opts.triton is not None:
        _check_triton(Path(opts.triton), card, opts)
    vset, cset = _read_images(opts, card, timer, report)
    from .data import pixel_spec
    from .parity import keras_outputs

    with timer("Keras reference outputs"):
        ref = keras_outputs(model, vset.inputs(pixel_spec(card, "float32"), card))
        x = vset.inputs(pixel_spec(card, opts.input_dtype), card)
    base_card = card.replace(input={"dtype": opts.input_dtype}, precision="fp32",
                             provenance={"source_sha256": sha256_file(model_path), "parent": model_path.name,
                                         "versions": {**card.provenance.versions, **report.versions}})
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    job = _Job(opts, report, timer, model, card, base_card, out, staging, x, ref, vset, cset, kit, gpus)
    try:
        _to_onnx(job)
        if opts.fp16:
            _to_fp16(job)
        if opts.int8:
            _to_int8(job)
        _check_onnx(job)
        if opts.engine:
            _build_engines(job)
        from ..atomic import write_text

        write_text(staging / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
        for f in sorted(staging.iterdir()):  # everything succeeded: move into place, file by file
            if f.is_file():
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if opts.triton is not None:
        with timer("Triton model repository"):
            report.triton = _write_triton(Path(opts.triton), report, base_card, opts.batch, opts.force)
        from ..atomic import write_text

        write_text(out / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
    if check and not report.passed:
        raise ParityFailure("parity check failed: " + " | ".join(report.failures) + f" (see {out / REPORT_NAME}; "
                            "thresholds can be changed with --min-agreement-* / --max-*)", report)
    return report


STAGING_PREFIX = ".cnn-export-"


def sweep_stale_staging(out: Path) -> list[Path]:
    """Remove staging folders left in ``out`` by exports that were killed (kill -9, power loss):
    their name carries the exporting process's id, and that process no longer exists."""
    removed = []
    for d in out.glob(f"{STAGING_PREFIX}*-*"):
        pid = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not (d.is_dir() and pid.isdigit()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # another export is running here right now
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _read_images(opts: ExportOptions, card: ModelCard, timer: "_Steps", report: ExportReport) -> tuple[Any, Any]:
    """Verification images (held out) and, for INT8, calibration images."""
    from .data import load_images

    with timer("read verification images"):
        calib_is_dir = opts.calib is not None and Path(opts.calib).expanduser().is_dir()
        source = opts.verify if opts.verify is not None else (None if calib_is_dir else opts.calib)
        flag = "--calib" if opts.verify is None and source is not None else "--verify"
        try:
            vset = load_images(source, card, "test", opts.verify_size, flag)
        except UsageError:
            if opts.verify is None and calib_is_dir:  # nothing else to check on: the calibration folder
                vset = load_images(opts.calib, card, "test", opts.verify_size, "--verify")
                vset.source += " (the calibration images: no held-out set given)"
            else:
                raise
        report.verify = vset.describe()
    cset = None
    if opts.int8:
        with timer("read calibration images"):
            try:
                cset = load_images(opts.calib, card, "train", opts.calib_size, "--calib")
            except UsageError as exc:
                if opts.calib is None:
                    raise UsageError(f"--int8 needs calibration images and none are available: {exc}") from None
                raise
    return vset, cset


def _to_onnx(job: _Job) -> None:
    from . import onnx_io
    from .keras2onnx import DEFAULT_OPSET, keras_to_onnx

    with job.timer("Keras -> ONNX (tf2onnx)"):
        proto = keras_to_onnx(job.model, job.card, job.opts.input_dtype, job.opts.opset or DEFAULT_OPSET)
    if job.opts.cleanup:
        with job.timer("graph cleanup (onnxslim)"):
            from .cleanup import simplify

            proto, res = simplify(proto, job.x[:64])
            job.report.cleanup = asdict(res)
    onnx_io.canonical_names(proto)
    job.graph_sha = hashlib.sha256(proto.graph.SerializeToString()).hexdigest()
    onnx_io.embed_card(proto, job.base_card)
    job.paths["fp32"] = onnx_io.save(proto, job.staging / ONNX_NAMES["fp32"])


def _to_fp16(job: _Job) -> None:
    import onnx

    from . import onnx_io
    from .fp16 import to_fp16

    with job.timer("FP16 ONNX"):
        half = to_fp16(onnx.load(str(job.paths["fp32"])))
        onnx_io.embed_card(half, job.base_card.replace(precision="fp16"))
        job.paths["fp16"] = onnx_io.save(half, job.staging / ONNX_NAMES["fp16"])


def _to_int8(job: _Job) -> None:
    from .data import pixel_spec
    from .int8 import CPU, FILE_NAMES, TENSORRT, cache_name, fingerprint, quantize

    cset, method = job.cset, job.opts.calib_method
    with job.timer(f"INT8 ONNX (calibrating on {len(cset)} images, {method})"):
        pixels = cset.inputs(pixel_spec(job.card, job.opts.input_dtype), job.card)  # preprocessed once
        data_sha = fingerprint(pixels)
        name = cache_name(job.graph_sha, data_sha, method)
        card = job.base_card.replace(precision="int8", provenance={"calibration": cset.describe()})
        res = quantize(job.paths["fp32"], job.staging, pixels, data_sha, card, method, job.out / name,
                       job.staging / name, job.opts.int8_options)
        job.report.calibration = {**cset.describe(), **res.describe()}
        job.paths["int8"] = job.staging / FILE_NAMES[CPU]
        job.paths["int8-trt"] = job.staging / FILE_NAMES[TENSORRT]  # what TensorRT builds the INT8 engine from


def _check_onnx(job: _Job) -> None:
    from .parity import compare_onnx

    for key, p in job.paths.items():
        with job.timer(f"parity {p.name}"):
            r = compare_onnx(p, key.split("-")[0], job.x, job.ref, job.vset.labels, job.opts.thresholds)
            r.path = str(job.out / p.name)
            job.report.artifacts.append(r)


def _build_engines(job: _Job) -> None:
    import onnx

    from . import onnx_io
    from .engine import build
    from .parity import compare_engine

    kit, gpus, opts = job.kit, job.gpus, job.opts
    cache = Path(opts.timing_cache) if opts.timing_cache else job.out / "tensorrt.timing.cache"
    job.report.engines = {"flavour": kit.flavour, "version": kit.version, "gpus": list(gpus),
                          "profile": opts.batch.as_dict(), "workspace_mib": opts.workspace_mib,
                          "timing_cache": None if kit.flavour == "tensorrt_rtx" else str(cache)}
    for precision in engine_precisions(opts.fp16, opts.int8):
        source = job.paths.get(f"{precision}-trt", job.paths[precision])
        target = job.staging / ENGINE_NAMES[precision]
        with job.timer(f"{kit.flavour} engine {target.name} for {','.join(gpus)}"):
            t0 = time.perf_counter()
            build(source, target, onnx_io.card_from_model(onnx.load(str(source))), kit, gpus, opts.batch,
                  opts.workspace_mib, cache)
            built = round(time.perf_counter() - t0, 3)
        with job.timer(f"parity {target.name}"):
            r = compare_engine(target, precision, job.x, job.ref, job.vset.labels, opts.thresholds)
            r.path = str(job.out / target.name)
            if r.passed is None:
                r.note = (f"built for {','.join(gpus)} with {kit.flavour} {kit.version}; {r.note}: it is built "
                          f"from {source.name}, checked above")
            r.seconds = built if r.seconds is None else r.seconds + built
            job.report.artifacts.append(r)


def _check_triton(repo: Path, card: ModelCard, opts: ExportOptions) -> None:
    """Refuse up front (not after the export) to overwrite a Triton model without --force."""
    from ..atomic import refuse_overwrite
    from .triton import model_name

    precisions = ["fp32"] + (["fp16"] if opts.fp16 else []) + (["int8"] if opts.int8 else [])
    for p in precisions:
        refuse_overwrite(repo / model_name(card, p, False) / "config.pbtxt", opts.force)


def _write_triton(repo: Path, report: ExportReport, card: ModelCard, profile: Any, force: bool) -> list[str]:
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
            m = TritonModel(model_name(card, a.precision, False), p, "onnxruntime_onnx", inp, outp)
        elif report.engines and report.engines["flavour"] == "tensorrt":
            from ..sidecar import EngineSidecar

            side = EngineSidecar.load(p)
            m = TritonModel(model_name(card, a.precision, True), p, "tensorrt_plan", side.input_name,
                            side.output_name)
        else:
            continue
        written.append(str(write_model(repo, m, card, profile.max, force)))
    return written


class _Steps:
    """Times each step, reports progress, records it in the report."""

    def __init__(self, report: ExportReport, say: Callable[[str], None]):
        self.report, self.say = report, say

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.say(f"{name} ...")
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
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
