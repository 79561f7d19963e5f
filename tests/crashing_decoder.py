"""A decoder that ends its worker process abruptly on some files: no real image reliably crashes OpenCV's
decoders, so the crash-recovery test gives the pool this one (worker processes import it from here)."""
from __future__ import annotations

import os
from typing import Any

from cnnedge.runtime.pipeline import HostDecoder


class CrashingDecoder(HostDecoder):
    """A HostDecoder whose process exits with code 70 (as a crashing native decoder would end it) on a
    file whose name holds ``word``; every other file is decoded as usual."""

    def __init__(self, preprocessor: Any, word: str) -> None:
        super().__init__(preprocessor)
        self.word = word

    def decode_row(self, item: Any) -> Any:
        if item.path is not None and self.word in os.path.basename(item.path):
            os._exit(70)
        return super().decode_row(item)
