"""The ``<engine>.json`` sidecar that travels beside a TensorRT plan.

The plan stays a plain plan (``trtexec`` and Triton read it as it is); the
sidecar carries the model card, the plan's sha256, the TensorRT flavour and
version and the compute capabilities it was built for. An engine is native
code: :func:`verify_engine` refuses a plan whose hash, flavour, version or GPU
does not match, before anything deserializes it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .card import MAX_CARD_BYTES, ModelCard, card_path_for, parse_json, sha256_file
from ..errors import CardError, ModelLoadError

SIDECAR_VERSION = 1
FLAVOURS = ("tensorrt", "tensorrt_rtx")
REBUILD = "rebuild it on this machine with: cnn-export MODEL.keras --engine"


@dataclass(frozen=True)
class EngineSidecar:
    card: ModelCard
    plan_sha256: str
    flavour: str
    trt_version: str
    compute_capabilities: tuple[str, ...]
    input_name: str
    output_name: str
    profile: dict[str, int] = field(default_factory=dict)  # min / opt / max batch
    source_onnx_sha256: str | None = None
    version: int = SIDECAR_VERSION

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise CardError(f"engine sidecar: flavour {self.flavour!r}; expected one of {', '.join(FLAVOURS)}")
        if not isinstance(self.plan_sha256, str) or len(self.plan_sha256) != 64:
            raise CardError("engine sidecar: plan_sha256 must be a 64-character hex digest")
        if not self.compute_capabilities:
            raise CardError("engine sidecar: compute_capabilities must not be empty")
        object.__setattr__(self, "compute_capabilities", tuple(self.compute_capabilities))
        for key in ("min", "opt", "max"):
            if key in self.profile and (not isinstance(self.profile[key], int) or self.profile[key] < 1):
                raise CardError(f"engine sidecar: profile.{key} must be a positive integer")

    def to_json(self) -> str:
        d = asdict(self)
        d["card"] = self.card.to_dict()
        d["compute_capabilities"] = list(self.compute_capabilities)
        return json.dumps(d, indent=2, sort_keys=True)

    def save(self, engine_path: str | os.PathLike) -> Path:
        from ..staging import write_text

        path = card_path_for(engine_path)
        write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, engine_path: str | os.PathLike) -> "EngineSidecar":
        path = card_path_for(engine_path)
        if not path.is_file():
            raise ModelLoadError(f"{engine_path}: no sidecar {path.name} beside the engine, so it cannot be "
                                 f"checked before loading; {REBUILD}")
        if path.stat().st_size > MAX_CARD_BYTES:
            raise CardError(f"{path}: larger than the {MAX_CARD_BYTES}-byte sidecar limit")
        data: Any = parse_json(path.read_bytes(), str(path))
        if not isinstance(data, dict):
            raise CardError(f"{path}: expected a JSON object")
        if data.get("version") != SIDECAR_VERSION:
            raise CardError(f"{path}: sidecar version {data.get('version')!r} is not supported; {REBUILD}")
        try:
            data["card"] = ModelCard.from_dict(data.get("card"))
            return cls(**data)
        except TypeError as exc:
            raise CardError(f"{path}: malformed engine sidecar ({exc})") from None
        except CardError as exc:
            raise CardError(f"{path}: {exc}") from None


def verify_engine(engine_path: str | os.PathLike, flavour: str, trt_version: str,
                  compute_capability: str | None) -> EngineSidecar:
    """Check an engine against its sidecar and this machine before deserializing it.

    ``compute_capability`` is the GPU present (e.g. ``"sm89"``), or None when the
    caller cannot tell (then only hash, flavour and version are checked).
    """
    side = EngineSidecar.load(engine_path)
    actual = sha256_file(engine_path)
    if actual != side.plan_sha256:
        raise ModelLoadError(f"{engine_path}: sha256 {actual[:12]}... does not match its sidecar "
                             f"({side.plan_sha256[:12]}...); the plan was altered or replaced; {REBUILD}")
    if side.flavour != flavour:
        raise ModelLoadError(f"{engine_path}: built with {side.flavour}, but this machine loads {flavour}; {REBUILD}")
    if side.trt_version != trt_version:
        raise ModelLoadError(f"{engine_path}: built with {side.flavour} {side.trt_version}, this machine has "
                             f"{trt_version}; {REBUILD}")
    if compute_capability is not None and compute_capability not in side.compute_capabilities:
        raise ModelLoadError(f"{engine_path}: built for {', '.join(side.compute_capabilities)}, this GPU is "
                             f"{compute_capability}; {REBUILD}")
    return side
