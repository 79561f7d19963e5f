"""What an export tells: :class:`ExportReport` (written as ``export_report.json``), and :class:`ParityFailure`,
the error that carries it when an artifact missed its threshold."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError
from .parity import ArtifactResult


class ParityFailure(ExportError):
    """An artifact missed its parity threshold; the files and the report are written, ``report`` says what."""

    def __init__(self, message: str, report: "ExportReport"):
        super().__init__(message)
        self.report = report


@dataclass
class ExportReport:
    """Every artifact's parity result, every step's time, and what the user should know about the export."""

    model: str
    out_dir: str
    artifacts: list[ArtifactResult] = field(default_factory=list)
    other_engines: list[ArtifactResult] = field(default_factory=list)  # the ONNX files on OpenVINO (.parity_engines)
    emulated: list[ArtifactResult] = field(default_factory=list)  # the CPU INT8 file on an emulated AVX2 CPU
    parity_engines: dict[str, Any] | None = None  # parity_engines.EnginePlan: the CPU engines checked, and not
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
        """Every parity result: the artifacts as run here, on the other CPU engines, then the CPU INT8 file on the
        emulated CPU."""
        return self.artifacts + self.other_engines + self.emulated

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
        d["other_engines"] = [a.to_dict() for a in self.other_engines]
        d["emulated"] = [a.to_dict() for a in self.emulated]
        d["passed"] = self.passed
        d["total_seconds"] = round(sum(s["seconds"] for s in self.steps), 3)
        return d

    def table(self) -> str:
        """One row per file per engine, the warnings, then which CPU engines were checked and which not."""
        from .parity import table

        return "\n".join([table(self.checked), *self.parity_lines()])

    def parity_lines(self) -> list[str]:
        """``verified on: ort-cpu, openvino`` and a line per CPU engine not checked, with its reason."""
        plan = self.parity_engines
        if not plan:
            return []
        return [f"verified on: {', '.join(plan['verified'])}"] + \
            [f"not verified on {name}: {why}" for name, why in plan["not_verified"].items()]


def library_versions(kit: Any) -> dict[str, str]:
    """The versions of the libraries an export ran with (``kit``: the TensorRT toolkit, when engines are built),
    recorded in the report and the cards so that a result can be reproduced."""
    from .. import __version__
    from ..host import versions

    v = {"cnnedge": __version__, **versions(("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx",
                                             "onnxruntime", "onnxslim", "onnxconverter-common"))}
    if kit is not None:
        v[kit.flavour] = kit.version
    return v
