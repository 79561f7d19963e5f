"""``decode="gpu"``: JPEG batches decoded by nvImageCodec and resized by CV-CUDA on the device.

The ``gpu-decode`` extra brings both (``nvidia-nvimgcodec-cu13`` and ``cvcuda-cu13``;
``-cu12`` wheels for CUDA 12, ``nvidia-nvimgcodec-tegra-cu12`` on Jetson). A chunk's
files are read on host threads, decoded in one ``Decoder.decode`` call, resized
(and colour-converted) on the device, stacked into one NHWC uint8 batch and handed
to the backend's ``infer_device`` (ONNX Runtime's IO binding; a device-to-device copy
into a TensorRT engine's input) without a host round trip when the model takes those
pixels directly (normalisation in the graph). Files nvImageCodec cannot decode (PNG, a
damaged JPEG) go through the CPU decoder one by one, reported as a CPU run reports them;
a chunk that holds such a file is assembled on the host.

Nothing here imports a CUDA library until a pool is made.
"""
from __future__ import annotations

import importlib.util
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from ..artifacts import TABLE
from ..errors import MissingDependency, UsageError
from .decodepool import Chunk, _error_text, skipped_rows
from ..imaging.files import read_file
_JPEG = b"\xff\xd8\xff"
_INFLIGHT = 3  # chunks decoded ahead of the model


def on_gpu(backend_name: str) -> bool:
    """Whether the backend of that name runs on a GPU (the table's word; False for names outside it)."""
    info = TABLE.get(backend_name)
    return info is not None and info.gpu


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason(clf: Any) -> str | None:
    """Why GPU decoding cannot serve ``clf`` (None when it can)."""
    backend = getattr(clf, "backend", None)
    name = getattr(backend, "name", "?")
    if not on_gpu(name):
        return f"needs a GPU backend ({', '.join(n for n, b in TABLE.items() if b.gpu)}); this model runs on {name}"
    if not _installed("nvidia.nvimgcodec") or not _installed("cvcuda"):
        return "needs the gpu-decode extra (pip install 'cnnedge[gpu-decode]': nvImageCodec and CV-CUDA)"
    card = getattr(clf, "card", None)
    pre = None if card is None else card.preprocess
    if (pre is None or card.input.channels != 3 or pre.resize != "stretch" or pre.crop_pct != 1.0
            or pre.interpolation != "auto"):
        return ("decodes for colour models resized by plain stretching (the card's resize mode, crop_pct 1 and "
                "interpolation auto); use --decode cpu")
    return None


def wanted(clf: Any, decode: str) -> bool:
    """``auto``: whether GPU decoding can run; ``gpu``: True, or a one-line UsageError saying why not."""
    reason = unavailable_reason(clf)
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


class DeviceBatch:
    """A decoded NHWC uint8 batch in device memory, holding only the files that decoded."""

    def __init__(self, tensor: Any, shape: tuple[int, ...], to_host: Callable[[Any], np.ndarray]) -> None:
        self.tensor, self.shape, self._to_host = tensor, shape, to_host

    def host(self) -> np.ndarray:
        return self._to_host(self.tensor)

    def infer(self, clf: Any) -> np.ndarray:
        """Run the model on this batch: straight from device memory when the backend and card allow it."""
        be = clf.backend
        card = clf.card
        direct = (card.preprocess.in_graph and card.input.layout == "NHWC" and be.input_spec.dtype == "uint8"
                  and on_gpu(be.name) and be.fixed_batch in (None, self.shape[0])
                  and (be.max_batch is None or be.min_batch <= self.shape[0] <= be.max_batch))
        if direct:
            return be.infer_device(self.tensor.cuda().__cuda_array_interface__["data"][0], self.shape, "uint8")
        return clf.infer_pixels(self.host())


class GpuDecodePool:
    """The DecodePool interface (start, submit, mark, release, close; chunks out in order) on the GPU."""

    def __init__(self, clf: Any, cpu_decode: Callable[[str], Any], workers: int, batch: int,
                 out: "queue.Queue[Any]", *, keep: bool = False, stop: threading.Event | None = None) -> None:
        if keep:
            raise UsageError("--decode gpu keeps no original images; use --decode cpu")
        try:
            import cvcuda
            from nvidia import nvimgcodec
        except ImportError as exc:
            raise MissingDependency(f"--decode gpu: {exc}; install cnnedge[gpu-decode]") from None
        self._nv, self._cv = nvimgcodec, cvcuda
        spec = clf.card.input
        self.size = (spec.height, spec.width)
        self.color = spec.color
        self.cpu_decode = cpu_decode
        self.batch, self.out = batch, out
        self.stop = stop or threading.Event()
        device = getattr(clf.backend, "device_id", 0)
        self._decoder = nvimgcodec.Decoder(device_id=device)
        self._params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.RGB, apply_exif_orientation=True)
        self._readers = ThreadPoolExecutor(max_workers=max(2, workers), thread_name_prefix="read")
        self._tasks: "queue.Queue[Chunk | None]" = queue.Queue()
        self._room = threading.Semaphore(_INFLIGHT + 1)
        self._seq = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="gpu decode", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, frames: list[Any]) -> bool:
        while not self.stop.is_set():
            if self._room.acquire(timeout=0.1):
                with self._lock:
                    self._tasks.put(Chunk(self._seq, frames, slot=0, errors=skipped_rows(frames)))
                    self._seq += 1
                return True
        return False

    def mark(self, marker: Any) -> None:
        with self._lock:
            self._tasks.put(Chunk(self._seq, [], marker=marker, slot=-1))
            self._seq += 1

    def help(self) -> bool:
        """Nothing to share: the GPU decodes whole chunks on the pool's own thread."""
        return False

    def release(self, slot: int) -> None:
        if slot >= 0:
            self._room.release()

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    c = self._tasks.get(timeout=0.1)
                except queue.Empty:
                    continue
                if c is None:
                    break
                if c.marker is None:
                    c.t0 = time.perf_counter()
                    self._decode_chunk(c)
                self.out.put(c)
        except BaseException as exc:  # noqa: BLE001 - the inference thread re-raises it
            self.out.put(exc)

    def _read(self, path: str) -> bytes | str:
        try:
            return read_file(path)
        except Exception as exc:  # noqa: BLE001
            return _error_text(exc)

    def _decode_chunk(self, c: Chunk) -> None:
        paths = [f.path for f in c.frames]
        skip = c.errors or {}
        got = list(self._readers.map(lambda i: skip[i] if i in skip else self._read(paths[i]), range(len(paths))))
        errors = {i: g for i, g in enumerate(got) if isinstance(g, str)}
        datas = [g if isinstance(g, bytes) else None for g in got]
        gpu_idx, cpu_idx = split_decodable(datas)
        images = self._decoder.decode([datas[i] for i in gpu_idx], params=self._params) if gpu_idx else []
        resized: dict[int, Any] = {}
        for i, img in zip(gpu_idx, images):
            if img is None:
                cpu_idx.append(i)  # nvImageCodec could not decode it: the CPU decoder says why, or decodes it
            else:
                resized[i] = self._resize(img)
        host: dict[int, np.ndarray] = {}
        for i in sorted(cpu_idx):
            try:
                host[i] = self.cpu_decode(paths[i])
            except Exception as exc:  # noqa: BLE001 - reported like a CPU run reports it
                errors[i] = _error_text(exc)
        c.errors = errors
        good = [i for i in range(len(paths)) if i not in errors]
        if not good:
            return
        if host or not hasattr(self._cv, "stack"):  # a mixed chunk is assembled on the host (model-size rows)
            h, w = self.size
            px = np.empty((len(paths), h, w, 3), np.uint8)
            for i in good:
                px[i] = host[i] if i in host else self._to_host(resized[i])
            c.pixels = px
            return
        stacked = self._cv.stack([resized[i] for i in good])
        self._cv.Stream.current.sync()
        h, w = self.size
        c.pixels = DeviceBatch(stacked, (len(good), h, w, 3), self._to_host)

    def _to_host(self, tensor: Any) -> np.ndarray:
        """A CV-CUDA tensor's pixels on the host (nvImageCodec wraps any CUDA array and copies it back)."""
        return np.asarray(self._nv.as_image(tensor.cuda()).cpu())

    def _resize(self, img: Any) -> Any:
        cv = self._cv
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
        self.stop.set()
        self._tasks.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._readers.shutdown(wait=False, cancel_futures=True)
