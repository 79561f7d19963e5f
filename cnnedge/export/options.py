"""What to export and how: :class:`ExportOptions`, checked on construction so that a wrong option costs no load."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import OptionError
from .parity import Thresholds

if TYPE_CHECKING:
    from .int8 import Int8Options

INPUT_DTYPES = ("uint8", "float32")


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
    parity_engines: Any = None  # "ort-cpu,openvino" or a sequence; None: every installed CPU engine (.parity_engines)

    def __post_init__(self) -> None:
        from .engine import Profile
        from .calibration import METHODS

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
        from .parity_engines import parse, plan

        object.__setattr__(self, "parity_engines", parse(self.parity_engines))
        plan(self.parity_engines)  # a named engine that is not installed is refused before anything is read
        if self.gpu and not self.engine:
            raise OptionError("gpu", "applies to {engine} builds; add {engine} or drop {gpu}")
