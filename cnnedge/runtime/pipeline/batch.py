"""What travels between the stages: a :class:`Batch` of rows, on the host or on the device."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class DeviceBuffer:
    """A C-contiguous batch in device memory: what ``Backend.infer_device`` takes. ``owner`` keeps the
    memory alive while the batch is in use; ``to_host`` copies it back when the backend cannot take it."""

    ptr: int
    shape: tuple[int, ...]
    dtype: str
    owner: Any
    to_host: Callable[[], np.ndarray]


@dataclass
class Batch:
    """Rows for one inference call. ``items``: the frames or files (row ids), in order. ``pixels``: one row
    per item (failed rows hold garbage), or with ``packed`` only the rows without an error (a device
    batch). ``errors``: row -> why it gave no pixels. ``started``: when its decode began (latency of a
    file); None for frames, timed from their capture. ``release``: gives its buffer back once inferred."""

    items: list[Any]
    pixels: np.ndarray | DeviceBuffer | None = None
    errors: dict[int, str] = field(default_factory=dict)
    images: list[Any] | None = None
    packed: bool = False
    started: float | None = None
    release: Callable[[], None] | None = None

    @property
    def usable(self) -> int:
        """Rows that go to the model."""
        return len(self.items) - len(self.errors)

    def model_rows(self) -> np.ndarray | DeviceBuffer | None:
        """The pixels of the rows without an error (all rows, without a copy, when none failed)."""
        if self.usable == 0:
            return None
        if self.packed or not self.errors or isinstance(self.pixels, DeviceBuffer):
            return self.pixels
        assert self.pixels is not None
        return self.pixels[[i for i in range(len(self.items)) if i not in self.errors]]

    def give_back(self) -> None:
        """Return the buffer to its decoder (idempotent)."""
        release, self.release = self.release, None
        if release is not None:
            release()


class EndOfInput:
    """Passed through a decode stage, in order, after the last batch: nothing more will come."""


END_OF_INPUT = EndOfInput()
