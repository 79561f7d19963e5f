"""``decode="gpu"``: JPEG batches decoded by nvImageCodec and resized by CV-CUDA on the device.

The ``gpu-decode`` extra brings both (``nvidia-nvimgcodec-cu13`` and ``cvcuda-cu13``;
``-cu12`` wheels for CUDA 12, ``nvidia-nvimgcodec-tegra-cu12`` on Jetson). A chunk's
files are read on host threads, decoded in one ``Decoder.decode`` call, resized
(and colour-converted) on the device and stacked into one NHWC uint8 device
:class:`~cnnedge.runtime.pipeline.batch.Batch`, which the inference stage hands to
the backend's ``infer_device`` (ONNX Runtime's IO binding; a device-to-device copy
into a TensorRT engine's input) without a host round trip when the model takes those
pixels directly (normalisation in the graph). Files nvImageCodec cannot decode (PNG, a
damaged JPEG) go through the CPU decoder one by one, reported as a CPU run reports them;
a chunk that holds such a file is assembled on the host.

Nothing here imports a CUDA library until a decoder is made.
"""
from __future__ import annotations

import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from ...artifact.kinds import TABLE
from ...artifact.card import ModelCard
from ...errors import MissingDependency, UsageError
from ...imaging.files import read_file
from .batch import Batch, DeviceBuffer
from .decoders import HostDecoder, skipped_rows
from .preprocessor import error_text

_JPEG = b"\xff\xd8\xff"
AHEAD = 3  # batches decoded ahead of the model


def on_gpu(backend_name: str) -> bool:
    """Whether the backend of that name runs on a GPU (the table's word; False for names outside it)."""
    info = TABLE.get(backend_name)
    return info is not None and info.gpu


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def refusal(backend_name: str, card: ModelCard) -> str | None:
    """Why GPU decoding cannot serve a model of this card on that backend (None when it can)."""
    if not on_gpu(backend_name):
        return (f"needs a GPU backend ({', '.join(n for n, b in TABLE.items() if b.gpu)}); "
                f"this model runs on {backend_name}")
    if not _installed("nvidia.nvimgcodec") or not _installed("cvcuda"):
        return "needs the gpu-decode extra (pip install 'cnnedge[gpu-decode]': nvImageCodec and CV-CUDA)"
    pre = card.preprocess
    if (card.input.channels != 3 or pre.resize != "stretch" or pre.crop_pct != 1.0
            or pre.interpolation != "auto"):
        return ("decodes for colour models resized by plain stretching (the card's resize mode, crop_pct 1 and "
                "interpolation auto); use --decode cpu")
    return None


def unavailable_reason(clf: Any) -> str | None:
    """Why GPU decoding cannot serve ``clf`` (a Classifier; None when it can)."""
    return refusal(clf.backend.name, clf.card)


def wanted(backend_name: str, card: ModelCard, decode: str) -> bool:
    """``auto``: whether GPU decoding can run; ``gpu``: True, or a one-line UsageError saying why not."""
    reason = refusal(backend_name, card)
    if reason is None:
        return True
    if decode == "gpu":
        raise UsageError(f"--decode gpu {reason}")
    return False


def split_decodable(datas: list[bytes | None]) -> tuple[list[int], list[int]]:
    """Indices nvImageCodec is given (JPEG bytes) and those left to the CPU decoder (everything else)."""
    gpu = [i for i, d in enumerate(datas) if d is not None and d.startswith(_JPEG)]
    taken = set(gpu)
    return gpu, [i for i, d in enumerate(datas) if d is not None and i not in taken]


class GpuDecoder:
    """A :class:`~cnnedge.runtime.pipeline.decoders.Decoder` on the device: JPEG files decoded by
    nvImageCodec in one call per batch, resized by CV-CUDA, stacked into one device Batch (only the rows
    that decoded). Anything else (PNG, a damaged JPEG, a frame) goes through ``host`` one by one; a
    batch that holds such a row is assembled on the host."""

    def __init__(self, host: HostDecoder, device_id: int = 0, readers: int = 2) -> None:
        try:
            import cvcuda
            from nvidia import nvimgcodec
        except ImportError as exc:
            raise MissingDependency(f"--decode gpu: {exc}; install cnnedge[gpu-decode]") from None
        self.nv, self.cv, self.host = nvimgcodec, cvcuda, host
        spec = host.preprocessor.input
        self.size, self.color = (spec.height, spec.width), spec.color
        self.decoder = nvimgcodec.Decoder(device_id=device_id)
        self.params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.RGB, apply_exif_orientation=True)
        self.readers = ThreadPoolExecutor(max_workers=max(2, readers), thread_name_prefix="read")

    def read(self, item: Any) -> bytes | str | None:
        """A file's bytes, or why it could not be read; None for a frame (no file)."""
        if item.path is None:
            return None
        try:
            return read_file(item.path)
        except Exception as exc:  # noqa: BLE001
            return error_text(exc)

    def decode_batch(self, items: Sequence[Any]) -> Batch:
        started = time.perf_counter()
        errors = skipped_rows(items)
        got = list(self.readers.map(lambda i: errors.get(i) or self.read(items[i]), range(len(items))))
        errors.update({i: g for i, g in enumerate(got) if isinstance(g, str)})
        datas = [g if isinstance(g, bytes) else None for g in got]
        gpu_idx, _ = split_decodable(datas)
        images = self.decoder.decode([datas[i] for i in gpu_idx], params=self.params) if gpu_idx else []
        resized = {i: self.resize(img) for i, img in zip(gpu_idx, images) if img is not None}
        host: dict[int, np.ndarray] = {}
        for i in range(len(items)):
            if i not in errors and i not in resized:  # the CPU decoder says why, or decodes it
                try:
                    host[i] = self.host.decode_row(items[i])
                except Exception as exc:  # noqa: BLE001 - reported as a CPU run reports it
                    errors[i] = error_text(exc)
        started_at = started if any(f.path is not None for f in items) else None
        batch = Batch(list(items), errors=errors, started=started_at)
        good = [i for i in range(len(items)) if i not in errors]
        if good and (host or not hasattr(self.cv, "stack")):  # a mixed batch is assembled on the host
            batch.pixels = np.empty((len(items),) + self.host.preprocessor.row_shape, np.uint8)
            for i in good:
                batch.pixels[i] = host[i] if i in host else self.to_host(resized[i])
        elif good:
            stacked = self.cv.stack([resized[i] for i in good])
            self.cv.Stream.current.sync()
            shape = (len(good),) + self.host.preprocessor.row_shape
            batch.pixels = DeviceBuffer(stacked.cuda().__cuda_array_interface__["data"][0], shape, "uint8",
                                        stacked, lambda: self.to_host(stacked))
            batch.packed = True
        return batch

    def to_host(self, tensor: Any) -> np.ndarray:
        """A CV-CUDA tensor's pixels on the host (nvImageCodec wraps any CUDA array and copies it back)."""
        return np.asarray(self.nv.as_image(tensor.cuda()).cpu())

    def resize(self, img: Any) -> Any:
        cv = self.cv
        t = cv.as_tensor(img, "HWC")
        h, w = self.size
        src_h, src_w = t.shape[0], t.shape[1]
        interp = cv.Interp.AREA if src_h > h and src_w > w else cv.Interp.LINEAR
        if (src_h, src_w) != (h, w):
            t = cv.resize(t, (h, w, 3), interp)
        if self.color == "BGR":
            t = cv.cvtcolor(t, cv.ColorConversion.RGB2BGR)
        return t

    def close(self) -> None:
        self.readers.shutdown(wait=False, cancel_futures=True)
