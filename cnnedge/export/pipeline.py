"""The export pipeline: one function that chains the steps, each reading one artifact and writing one.

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
from typing import Any, Callable, Iterator

from ..card import ModelCard, now_iso, sha256_file
from ..errors import ExportError, UsageError
from .parity import ArtifactResult, Thresholds

INPUT_DTYPES = ("uint8", "float32")
REPORT_NAME = "export_report.json"
ONNX_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
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
    names = [ONNX_NAMES[p] for p in precisions]
    for p in engine_precisions(fp16, int8) if engine else []:
        names += [ENGINE_NAMES[p], ENGINE_NAMES[p] + ".json"]
    return names + [REPORT_NAME]


def engine_precisions(fp16: bool, int8: bool) -> list[str]:
    return (["fp16"] if fp16 else []) + (["int8"] if int8 else []) or ["fp32"]


def export(model_path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, fp16: bool = False,
           int8: bool = False, engine: bool = False, input_dtype: str = "uint8", calib: str | None = None,
           calib_size: int = 300, calib_method: str = "entropy", verify: str | None = None,
           verify_size: int = 1000, batch: str = "1,8,32", gpu: str | None = None, workspace_mib: int = 1024,
           timing_cache: str | os.PathLike | None = None, triton: str | os.PathLike | None = None,
           thresholds: Thresholds | None = None, opset: int | None = None, cleanup: bool = True,
           trust: bool = False, force: bool = False, check: bool = True,
           progress: Callable[[str], None] | None = None) -> ExportReport:
    """Export a Keras model to ONNX FP32 (always), FP16 / INT8 ONNX and TensorRT engines, each checked against Keras.

    Returns the :class:`ExportReport` (also written as ``export_report.json``). With ``check`` (the default) a
    missed parity threshold raises :class:`ParityFailure` after the files and report are written.
    """
    from .engine import Profile, parse_gpus, toolkit
    from .int8 import METHODS
    from .keras2onnx import DEFAULT_OPSET

    say = progress or (lambda _msg: None)
    thresholds = thresholds or Thresholds()
    model_path = Path(model_path)
    # --- arguments first: nothing is loaded or written before they are all valid -------------------------
    if input_dtype not in INPUT_DTYPES:
        raise UsageError(f"--input {input_dtype!r}; expected one of {', '.join(INPUT_DTYPES)}")
    if calib_method not in METHODS:
        import difflib

        close = difflib.get_close_matches(calib_method, METHODS, n=1)
        raise UsageError(f"--calib-method {calib_method!r}; expected one of {', '.join(METHODS)}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    for flag, n in (("--calib-size", calib_size), ("--verify-size", verify_size), ("--workspace", workspace_mib)):
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"{flag} must be a positive integer, found {n!r}")
    profile = batch if isinstance(batch, Profile) else Profile.parse(batch)
    kit = gpus = None
    if engine:
        kit = toolkit()
        gpus = parse_gpus(gpu, kit.flavour)
    elif gpu:
        raise UsageError("--gpu applies to --engine builds; add --engine or drop --gpu")
    from ..keras_io import check_model_file

    check_model_file(model_path, trust)
    out = Path(out_dir) if out_dir is not None else model_path.parent
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    from ..atomic import refuse_overwrite

    for name in planned_outputs(fp16, int8, engine):
        refuse_overwrite(out / name, force)
    # --- load ----------------------------------------------------------------------------------------------
    from ..keras_io import load_card_for, load_keras_model

    report = ExportReport(model=str(model_path), out_dir=str(out), thresholds=asdict(thresholds), created=now_iso())
    timer = _Steps(report, say)
    with timer("load Keras model"):
        model = load_keras_model(model_path, trust=trust)
    card = load_card_for(model_path) if model_path.suffix.lower() == ".keras" else _card_beside(model_path)
    from .keras2onnx import check_image_model

    check_image_model(model, card)
    from .data import load_images, pixel_spec

    with timer("read verification images"):
        vsrc = verify if verify is not None else (calib if calib is not None and not _is_dir(calib) else None)
        try:
            vset = load_images(vsrc, card, "test", verify_size, "--verify")
        except UsageError:
            if verify is None and calib is not None:  # only a calibration folder: check on those images
                vset = load_images(calib, card, "test", verify_size, "--verify")
            else:
                raise
        report.verify = vset.describe()
    cset = None
    if int8:
        with timer("read calibration images"):
            try:
                cset = load_images(calib, card, "train", calib_size, "--calib")
            except UsageError as exc:
                if calib is None:
                    raise UsageError(f"--int8 needs calibration images and none are available: {exc}") from None
                raise
    versions = _versions(kit)
    report.versions = versions
    spec_in = pixel_spec(card, input_dtype)
    with timer("Keras reference outputs"):
        from .parity import keras_outputs

        ref = keras_outputs(model, vset.inputs(pixel_spec(card, "float32"), card))
        x = vset.inputs(spec_in, card)
    source_sha = sha256_file(model_path)
    base_card = card.replace(input={"dtype": input_dtype}, precision="fp32",
                             provenance={"source_sha256": source_sha, "parent": model_path.name,
                                         "versions": {**card.provenance.versions, **versions}})
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cnn-export-", dir=out))
    try:
        _run(report, timer, model, card, base_card, staging, out, x, ref, vset, cset, fp16, int8, engine,
             kit, gpus, profile, workspace_mib, timing_cache, calib_method, cleanup, opset or DEFAULT_OPSET,
             thresholds, force)
        from ..atomic import write_text

        write_text(staging / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
        for f in sorted(staging.iterdir()):  # everything succeeded: move into place, file by file
            if f.is_file():
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if triton is not None:
        with timer("Triton model repository"):
            report.triton = _write_triton(Path(triton), report, base_card, profile, force)
        from ..atomic import write_text

        write_text(out / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
    if check and not report.passed:
        raise ParityFailure("parity check failed: " + " | ".join(report.failures) + f" (see {out / REPORT_NAME}; "
                            "thresholds can be changed with --min-agreement-* / --max-*)", report)
    return report


def _run(report: ExportReport, timer: "_Steps", model: Any, card: ModelCard, base_card: ModelCard, staging: Path,
         out: Path, x: Any, ref: Any, vset: Any, cset: Any, fp16: bool, int8: bool, engine: bool, kit: Any,
         gpus: Any, profile: Any, workspace_mib: int, timing_cache: Any, calib_method: str, cleanup: bool,
         opset: int, thresholds: Thresholds, force: bool) -> None:
    from . import onnx_io
    from .data import pixel_spec
    from .parity import compare_engine, compare_onnx

    paths: dict[str, Path] = {}
    with timer("Keras -> ONNX (tf2onnx)"):
        from .keras2onnx import keras_to_onnx

        proto = keras_to_onnx(model, card, base_card.input.dtype, opset)
    if cleanup:
        with timer("graph cleanup (onnxslim)"):
            from .cleanup import simplify

            proto, res = simplify(proto, x[:64])
            report.cleanup = asdict(res)
    onnx_io.canonical_names(proto)
    graph_sha = hashlib.sha256(proto.graph.SerializeToString()).hexdigest()
    onnx_io.embed_card(proto, base_card)
    paths["fp32"] = onnx_io.save(proto, staging / ONNX_NAMES["fp32"])
    if fp16:
        with timer("FP16 ONNX"):
            from .fp16 import to_fp16

            half = onnx_io.embed_card(to_fp16(proto), base_card.replace(precision="fp16"))
            paths["fp16"] = onnx_io.save(half, staging / ONNX_NAMES["fp16"])
    if int8:
        with timer(f"INT8 ONNX (calibrating on {len(cset)} images, {calib_method})"):
            import onnx

            from .int8 import cache_name, quantize

            spec = pixel_spec(card, base_card.input.dtype)
            name = cache_name(graph_sha, cset.fingerprint(spec, card), calib_method)
            target = staging / ONNX_NAMES["int8"]
            res8 = quantize(paths["fp32"], target, cset, card, spec, calib_method, out / name, staging / name)
            calib_info = {**cset.describe(), "method": calib_method, "data_sha256": res8.data_sha256,
                          "cache_file": res8.cache_file, "cache_hit": res8.cache_hit}
            report.calibration = calib_info
            q = onnx.load(str(target))
            onnx_io.embed_card(q, base_card.replace(precision="int8", provenance={"calibration": calib_info}))
            paths["int8"] = onnx_io.save(q, target)
    for precision, p in paths.items():
        with timer(f"parity {p.name}"):
            r = compare_onnx(p, precision, x, ref, vset.labels, thresholds)
            r.path = str(out / p.name)
            report.artifacts.append(r)
    if engine:
        from .engine import build

        report.engines = {"flavour": kit.flavour, "version": kit.version, "gpus": list(gpus),
                          "profile": profile.as_dict(), "workspace_mib": workspace_mib,
                          "timing_cache": None if kit.flavour == "tensorrt_rtx" else str(timing_cache or
                                                                                        out / "tensorrt.timing.cache")}
        for precision in engine_precisions(fp16, int8):
            target = staging / ENGINE_NAMES[precision]
            with timer(f"{kit.flavour} engine {target.name} for {','.join(gpus)}"):
                ecard = onnx_io.card_from_model(__import__("onnx").load(str(paths[precision])))
                t0 = time.perf_counter()
                build(paths[precision], target, ecard, kit, gpus, profile, workspace_mib,
                      Path(timing_cache) if timing_cache else out / "tensorrt.timing.cache")
                built = round(time.perf_counter() - t0, 3)
            with timer(f"parity {target.name}"):
                r = compare_engine(target, precision, x, ref, vset.labels, thresholds)
                r.path = str(out / target.name)
                if r.passed is None:
                    r.note = (f"built for {','.join(gpus)} with {kit.flavour} {kit.version}; {r.note}: it is built "
                              f"from {paths[precision].name}, checked above")
                r.seconds = built if r.seconds is None else r.seconds + built
                report.artifacts.append(r)


def _write_triton(repo: Path, report: ExportReport, card: ModelCard, profile: Any, force: bool) -> list[str]:
    from . import onnx_io
    from .triton import TritonModel, model_name, write_model

    written = []
    for a in report.artifacts:
        p = Path(a.path)
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


def _is_dir(source: str) -> bool:
    return Path(source).expanduser().is_dir()


def _card_beside(model_path: Path) -> ModelCard:
    """The card for a legacy .h5 model: card.json in its folder."""
    from ..card import CARD_FILENAME
    from ..errors import CardError

    p = model_path.with_name(CARD_FILENAME)
    if not p.is_file():
        raise CardError(f"{model_path}: no model card at {p}; models trained with cnn-train have one")
    return ModelCard.load(p)


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
