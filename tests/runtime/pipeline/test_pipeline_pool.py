"""The batched pipeline's decode pool: threads and worker processes, crashes, Ctrl-C, memory, GPU decode options."""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cnnedge.errors import UsageError
from cnnedge.runtime.classifier import Classifier
from cnnedge.runtime.pipeline.gpu_decoder import split_decodable, unavailable_reason
from cnnedge.runtime import pipeline
from cnnedge.runtime.pipeline import PipelineStats, default_workers

from test_runtime_models import models, split  # noqa: E402

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[3]


def _digits(folder: Path, n: int, ext: str = ".png", start: int = 0) -> list[Path]:
    _, _, x, _ = split()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        p = folder / f"img{i:05d}{ext}"
        cv2.imwrite(str(p), x[i % len(x)])
        out.append(p)
    return out


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _is_worker(pid: int) -> bool:
    try:
        return b"cnnedge.runtime.pipeline.decode_pool" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_every_file_once_in_order_with_failures(tmp_path, processes):
    files = _digits(tmp_path / "imgs", 37)
    (tmp_path / "imgs" / "img00005x.png").write_bytes(b"not an image at all")
    (tmp_path / "imgs" / "img00020x.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)  # truncated JPEG
    expected = sorted(str(p) for p in (tmp_path / "imgs").iterdir())
    with Classifier(models()["onnx"], threads=1) as clf:
        stats = PipelineStats()
        results = list(clf.stream(str(tmp_path / "imgs"), batch=4, workers=2, processes=processes,
                              stats=stats))
        direct = clf.predict_batch([str(p) for p in sorted(files)])
    assert [r.path for r in results] == expected
    bad = {Path(r.path).name: r.error for r in results if r.error}
    assert set(bad) == {"img00005x.png", "img00020x.jpg"}
    assert "truncated" in bad["img00020x.jpg"]
    assert [r.prediction.index for r in results if r.ok] == [p.index for p in direct]
    assert stats.done == 37 and stats.failed == 2


def test_pipeline_run_gives_a_list_per_inference_call(tmp_path):
    _digits(tmp_path / "imgs", 22)
    with Classifier(models()["onnx"], threads=1) as clf:
        batches = list(pipeline.run(clf.backend, clf.card, str(tmp_path / "imgs"), batch=8, processes=False))
        flat = list(clf.stream(str(tmp_path / "imgs"), batch=8, processes=False))
    assert [len(b) for b in batches] == [8, 8, 6]
    assert all(len({r.batch for r in b}) == 1 for b in batches)
    assert [r.path for b in batches for r in b] == [r.path for r in flat]


def test_a_crashing_worker_is_replaced_and_its_file_reported(tmp_path, monkeypatch):
    # No real image reliably crashes OpenCV's decoder, so the pool is given a decoder (tests/crashing_decoder.py,
    # which the worker processes import) that makes its worker process exit abruptly (os._exit) on such files.
    from crashing_decoder import CrashingDecoder

    from cnnedge.runtime.pipeline import Preprocessor

    _digits(tmp_path / "imgs", 60)
    for i in (13, 41):
        os.rename(tmp_path / "imgs" / f"img{i:05d}.png", tmp_path / "imgs" / f"img{i:05d}boom.png")
    here = str(ROOT / "tests")
    monkeypatch.setenv("PYTHONPATH", here + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH")
                                             else ""))
    expected = sorted(str(p) for p in (tmp_path / "imgs").iterdir())
    with Classifier(models()["onnx"], threads=1) as clf:
        stats = PipelineStats()
        crashing = CrashingDecoder(Preprocessor.from_card(clf.card), "boom")
        results = list(clf.stream(str(tmp_path / "imgs"), batch=8, workers=2, processes=True, stats=stats,
                              decoder=crashing))
    assert [r.path for r in results] == expected  # nothing lost, nothing repeated
    failed = {Path(r.path).name: r.error for r in results if r.error}
    assert set(failed) == {"img00013boom.png", "img00041boom.png"}
    assert all("decoder crashed" in e and "exit code 70" in e for e in failed.values())
    assert stats.done == 58


def test_ctrl_c_leaves_no_worker_processes(tmp_path):
    _digits(tmp_path / "imgs", 3000)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from cnnedge.runtime.classifier import Classifier
        clf = Classifier({str(models()["onnx"])!r}, threads=1)
        for i, r in enumerate(clf.stream({str(tmp_path / "imgs")!r}, batch=4, workers=2, processes=True)):
            if i == 40:
                print("running", flush=True)
            time.sleep(0.005)  # a slow consumer: the run lasts long enough to be interrupted
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"running"
        kids: set[int] = set()
        for _ in range(100):
            kids = {k for k in _descendants(proc.pid) if _alive(k)}
            if len(kids) >= 2:
                break
            time.sleep(0.05)
        assert len(kids) >= 2, "the worker processes did not start"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)], "worker processes outlived an interrupted run"


def _rss_or_0_kb(pid: int) -> int:
    try:
        return _rss_kb(pid)
    except OSError:  # it ended between the listing and the read
        return 0


def _maps_the_ring(pid: int) -> bool:
    """A decode worker maps the shared-memory ring just before it says it is ready (see decode_pool)."""
    try:
        return "/dev/shm/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
def test_memory_stays_flat_over_10000_files(tmp_path):
    """No memory that grows with the files read, in this process or its decode workers. Measured as a rate,
    not a level: after 2,000 files and both workers up (an event waited for, not a time), memory is
    sampled every 1,000 files; a leak grows every one of the 8 slices alike, while what a loaded machine
    or the allocator does once (a worker finishing its start, a queue's new high-water mark, pages first
    touched) lands in one or two. So the median slice must grow less than 1 MB per 1,000 files, however the
    one-off steps fall (a worker held 1.5 s at its start grew the old 2,000-to-10,000 figure by 55 MB, this
    median by nothing); a leak of 2 KB a file (16 MB over the run, which a 30 MB bound let through) fails it."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    tile = split()[2][0]
    for i in range(10_000):
        cv2.imwrite(str(folder / f"{i:05d}{'.png' if i % 2 else '.jpg'}"), np.roll(tile, i % 7, axis=1))
    me, workers = os.getpid(), 2

    def family() -> tuple[list[int], int]:
        kids = [k for k in _descendants(me) if _alive(k) and _is_worker(k)]
        return kids, _rss_or_0_kb(me) + sum(_rss_or_0_kb(k) for k in kids)

    samples: list[int] = []
    with Classifier(models()["onnx"], threads=1) as clf:
        n = 0
        for r in clf.stream(str(folder), batch=16, workers=workers, processes=True):
            assert r.ok, r.error
            n += 1
            if n == 2_000:  # the workers may still be starting on a loaded machine: wait for them
                deadline = time.monotonic() + 180
                while True:
                    kids, _ = family()
                    if len(kids) >= workers and all(_maps_the_ring(k) for k in kids):
                        break
                    assert time.monotonic() < deadline, \
                        f"{workers} decode workers not ready after 180 s: {kids} (no room in /dev/shm?)"
                    time.sleep(0.05)
            if n >= 2_000 and n % 1_000 == 0:
                samples.append(family()[1])
    assert n == 10_000 and len(samples) == 9
    slices_mb = [(b - a) / 1024 for a, b in zip(samples, samples[1:])]
    rate = statistics.median(slices_mb)
    assert rate < 1.0, (f"memory grows {rate:.2f} MB per 1,000 files (median of 8 slices from 2,000 to 10,000 "
                        f"files: {[round(x, 1) for x in slices_mb]} MB; samples {samples} kB)")


def _clip(path: Path, frames: int) -> Path:
    """A short MJPG video of digits: a finite source that is not image files."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    _, _, x, _ = split()
    for i in range(frames):
        w.write(x[i])
    w.release()
    return path


def test_huge_max_wait_closes_the_batch_when_every_source_has_ended(tmp_path):
    vid = _clip(tmp_path / "clip.avi", 3)
    _digits(tmp_path / "imgs", 3)
    with Classifier(models()["onnx"], threads=1) as clf:
        t0 = time.perf_counter()
        results = list(clf.stream([str(vid), str(tmp_path / "imgs")], batch=8, max_wait_ms=1e9))
        took = time.perf_counter() - t0
    assert len(results) == 6 and all(r.ok for r in results)
    assert took < 20, f"the batch waited {took:.1f} s for sources that had ended"


def test_default_batch_is_32_for_files_and_8_with_a_video(tmp_path):
    """No batch given: image files alone go 32 to an inference call (fewer calls and hand-offs), a run
    with a video (or a camera or stream) among its sources keeps batches of 8."""
    vid = _clip(tmp_path / "clip.avi", 3)
    _digits(tmp_path / "imgs", 40)
    with Classifier(models()["onnx"], threads=1) as clf:
        stats = PipelineStats()
        files = list(pipeline.run(clf.backend, clf.card, str(tmp_path / "imgs"), stats=stats, processes=False))
        assert stats.batch_size == 32 and [len(b) for b in files] == [32, 8]
        stats = PipelineStats()
        mixed = [r for b in pipeline.run(clf.backend, clf.card, [str(vid), str(tmp_path / "imgs")], stats=stats)
                 for r in b]
        assert stats.batch_size == 8 and len(mixed) == 43 and all(r.ok for r in mixed)
        assert len(list(clf.stream(str(tmp_path / "imgs")))) == 40


def test_default_workers_are_the_cores_this_process_may_use():
    assert default_workers() == len(os.sched_getaffinity(0))


def test_decode_option_is_checked_in_one_line(tmp_path):
    _digits(tmp_path / "imgs", 2)
    with Classifier(models()["onnx"], "ort-cpu", threads=1) as clf:
        with pytest.raises(UsageError, match="decode 'gpus'"):
            clf.stream(str(tmp_path / "imgs"), decode="gpus")
        with pytest.raises(UsageError, match="needs a GPU backend .* this model runs on ort-cpu"):
            clf.stream(str(tmp_path / "imgs"), decode="gpu")
        assert unavailable_reason(clf) is not None
        # auto falls back to the CPU decoder on a CPU backend
        assert len(list(clf.stream(str(tmp_path / "imgs"), decode="auto"))) == 2


def test_cli_decode_gpu_on_a_cpu_backend_exits_2(tmp_path):
    _digits(tmp_path / "imgs", 2)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", "import sys; from cnnedge.cli.infer import console; console()",
                        str(models()["onnx"]), "--source",
                        str(tmp_path / "imgs"), "--backend", "ort-cpu", "--decode", "gpu"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("cnn-infer: error:") and "--decode gpu needs a GPU backend" in lines[-1]
    assert "Traceback" not in p.stderr


def test_gpu_decode_leaves_non_jpeg_files_to_the_cpu_decoder(tmp_path):
    jpg = _digits(tmp_path, 1, ".jpg")[0].read_bytes()
    png = _digits(tmp_path, 1, ".png", start=1)[0].read_bytes()
    gpu, cpu = split_decodable([jpg, png, None, b"garbage", jpg])
    assert gpu == [0, 4] and cpu == [1, 3]  # None: a file that could not be read, reported already


def _gpu_decode_ready() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "no CUDA execution provider (needs onnxruntime-gpu and an NVIDIA GPU)"
    import importlib.util

    for mod in ("nvidia.nvimgcodec", "cvcuda"):
        try:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed (the gpu-decode extra)"
        except ImportError:
            return f"{mod} is not installed (the gpu-decode extra)"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_decode_ready() is not None, reason=f"GPU decode cannot run here: {_gpu_decode_ready()}")
def test_gpu_decode_agrees_with_the_cpu_path(tmp_path):
    files = _digits(tmp_path / "imgs", 60, ".jpg")
    (tmp_path / "imgs" / "z.png").write_bytes(files[0].read_bytes())  # a JPEG named .png still decodes
    _digits(tmp_path / "imgs", 3, ".png", start=100)  # PNGs fall back to the CPU decoder
    with Classifier(models()["onnx"], "ort-cuda") as clf:
        cpu = list(clf.stream(str(tmp_path / "imgs"), batch=16, decode="cpu"))
        gpu = list(clf.stream(str(tmp_path / "imgs"), batch=16, decode="gpu"))
    assert [r.path for r in gpu] == [r.path for r in cpu]
    agree = np.mean([a.prediction.index == b.prediction.index for a, b in zip(cpu, gpu)])
    assert agree >= 0.95


def test_buffers_bound_once_give_the_session_s_answers():
    # The GPU path's buffers (page-locked host memory bound to the session once) are bound the same way
    # on plain memory here, which is what a machine without CUDA can run.
    from cnnedge.runtime.backends import load_backend

    _, _, x, _ = split()
    batch = np.stack([cv2.resize(im, (32, 32)) for im in x[:5]])[..., ::-1].copy()
    with load_backend(models()["onnx"], "ort-cpu", threads=1) as be:
        bound = be.bind_buffers(5, page_locked=False)
        np.copyto(bound.input, batch)
        be.session.run_with_iobinding(bound.binding)
        want = be.session.run(None, {be.input_spec.name: batch})[0]
        np.testing.assert_allclose(bound.output, want, rtol=1e-6)
        np.copyto(bound.input, batch[::-1])  # reused: the next call sees the new contents
        be.session.run_with_iobinding(bound.binding)
        np.testing.assert_allclose(bound.output, want[::-1], rtol=1e-6)


def test_preload_dlls_prints_nothing_on_stdout_and_what_it_said_is_kept(capsys):
    """onnxruntime-gpu 1.31.1's preload_dlls() prints these lines on stdout wherever CUDA's libraries are missing
    (seen with the real wheel under CPython 3.12 here, by benchmarks/gpu_check.py's auto_backend step), and
    cnn-infer writes its results on stdout. The wheel (~250 MB) is not installed in the test environment: a
    stand-in prints its exact lines; this ONNX Runtime's own preload_dlls is called for real."""
    import onnxruntime

    from cnnedge.runtime.backends.ort import quiet_preload

    class GpuWheel:
        @staticmethod
        def preload_dlls() -> None:
            print("Failed to load libcublasLt.so.13: libcublasLt.so.13: cannot open shared object file: No such file "
                  "or directory")
            print("\033[33mWARNING: Unable to parse CUDA version 'x'. Skipping DLL preloading.\033[0m")

    class Broken:
        @staticmethod
        def preload_dlls() -> None:
            raise RuntimeError("Invalid parameter of directory=None. The directory does not exist!")

    said = quiet_preload(GpuWheel)
    assert said == ["Failed to load libcublasLt.so.13: libcublasLt.so.13: cannot open shared object file: No such "
                    "file or directory", "WARNING: Unable to parse CUDA version 'x'. Skipping DLL preloading."]
    assert quiet_preload(Broken) == ["RuntimeError: Invalid parameter of directory=None. The directory does not exist!"]
    if hasattr(onnxruntime, "preload_dlls"):
        assert quiet_preload(onnxruntime) == []  # the CPU package has no CUDA to load
    assert capsys.readouterr() == ("", "")


def test_auto_skips_the_tensorrt_provider_when_its_library_cannot_load():
    from cnnedge.runtime.backends.ort import tensorrt_loadable

    import ctypes.util

    if ctypes.util.find_library("nvinfer"):
        pytest.skip("TensorRT's library is installed on this machine")
    assert tensorrt_loadable() is False


def test_gpu_decode_with_kept_images_is_refused_and_auto_keeps_them(tmp_path):
    _digits(tmp_path / "imgs", 2)
    with Classifier(models()["onnx"], "ort-cpu", threads=1) as clf:
        with pytest.raises(UsageError, match="keeps no original images"):
            clf.stream(str(tmp_path / "imgs"), decode="gpu", keep_images=True)
        got = list(clf.stream(str(tmp_path / "imgs"), decode="auto", keep_images=True))
    assert [r.image.shape[:2] for r in got] == [(32, 32), (32, 32)]


def test_worker_processes_start_mid_run_and_every_file_stays_once_in_order(tmp_path, monkeypatch):
    # The default on a machine with 4+ cores: threads start at once, worker processes join once a run
    # is long enough and files wait for a decoder. The thresholds are lowered so that this short run hands over.
    from cnnedge.runtime.pipeline import decode_pool

    monkeypatch.setattr(decode_pool, "SPAWN_AFTER_S", 0.0)
    monkeypatch.setattr(decode_pool, "SPAWN_MIN_LEFT_S", 0.0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    _, _, x, _ = split()
    for i in range(600):  # photo-sized PNGs: decoding, not the consumer, is what the run waits for
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.resize(x[i % len(x)], (400, 400)))
    expected = sorted(str(p) for p in folder.iterdir())
    seen: set[int] = set()
    with Classifier(models()["onnx"], threads=1) as clf:
        results = []
        for i, r in enumerate(clf.stream(str(folder), batch=4, workers=4)):
            results.append(r)
            if i % 20 == 0:
                seen |= {k for k in _descendants(os.getpid()) if _alive(k) and _is_worker(k)}
    assert [r.path for r in results] == expected and all(r.ok for r in results)
    assert len(seen) == 4, f"expected the 4 decode workers, saw {len(seen)}"


def test_a_waiting_caller_decodes_queued_pieces_with_decode_one_here(tmp_path):
    """The inference stage calls decode_one_here() when nothing is ready: it decodes queued pieces itself
    beside the pool's thread, batches still come out whole, in order, with their failures, and
    decode_one_here() is False once nothing is queued."""
    import queue

    from cnnedge.runtime.pipeline.decode_pool import DecodePool
    from cnnedge.runtime.pipeline import HostDecoder, Preprocessor
    from cnnedge.runtime.sources import Frame

    files = _digits(tmp_path / "imgs", 30)
    files[7].write_bytes(b"not an image")
    with Classifier(models()["onnx"], threads=1) as clf:
        pre = Preprocessor.from_card(clf.card)
        out: queue.Queue = queue.Queue()
        pool = DecodePool(HostDecoder(pre), 1, 6, out, processes=False)
        pool.start()
        try:
            for i in range(0, 30, 6):
                assert pool.submit([Frame("t", 0.0, 0.0, path=str(p)) for p in files[i:i + 6]])
            helped = 0
            while pool.decode_one_here():
                helped += 1
            batches = [out.get(timeout=10) for _ in range(5)]
            assert helped >= 1 and not pool.decode_one_here()
            assert [b.items[0].path for b in batches] == [str(files[i]) for i in range(0, 30, 6)]
            assert [sorted(b.errors) for b in batches] == [[], [1], [], [], []]
            pixels = np.concatenate([np.array(b.pixels) for b in batches])
            direct = np.stack([pre.file_pixels(str(p)) for i, p in enumerate(files) if i != 7])
            assert np.array_equal(np.delete(pixels, 7, axis=0), direct)
        finally:
            pool.close()


class _DeviceLikeDecoder:
    """Stands in for nvImageCodec + CV-CUDA (absent here): decodes with OpenCV, then hands the batch on as the
    GPU decoder does, a packed device-like buffer of the rows that decoded (its pointer, shape and dtype,
    and a copy back to the host), with the failed rows reported beside it."""

    def __init__(self, pre) -> None:
        from cnnedge.runtime.pipeline import HostDecoder

        self.host = HostDecoder(pre)
        self.copies_back = 0

    def decode_batch(self, items):
        from cnnedge.runtime.pipeline import DeviceBuffer

        got = self.host.decode_batch(items)
        good = np.ascontiguousarray(got.model_rows()) if got.usable else None
        if good is not None:
            def to_host(a=good):
                self.copies_back += 1
                return a.copy()

            got.pixels = DeviceBuffer(good.ctypes.data, good.shape, "uint8", good, to_host)
            got.packed = True
        return got

    def close(self) -> None:
        pass


def test_a_device_batch_goes_through_the_same_inference_stage(tmp_path):
    """The --decode gpu road on a CPU: a decoder yielding device-like Batches (a double for nvImageCodec) feeds
    the real ONNX Runtime backend through the pipeline's inference stage, which takes the copy back to the
    host that a backend without device input needs; Results match the CPU decode pool's, failures included."""
    from cnnedge.runtime.pipeline import Preprocessor

    _digits(tmp_path / "imgs", 21)
    (tmp_path / "imgs" / "img00003x.png").write_bytes(b"not an image")
    with Classifier(models()["onnx"], "ort-cpu", threads=1) as clf:
        double = _DeviceLikeDecoder(Preprocessor.from_card(clf.card, clf.backend.input_spec.dtype))
        stats = PipelineStats()
        on_device = list(clf.stream(str(tmp_path / "imgs"), batch=8, decoder=double, stats=stats))
        cpu = list(clf.stream(str(tmp_path / "imgs"), batch=8, decode="cpu", processes=False))
    assert double.copies_back == 3 and stats.batches == 3
    assert [r.path for r in on_device] == [r.path for r in cpu]
    assert [r.error is None for r in on_device] == [r.error is None for r in cpu] and stats.failed == 1
    assert [r.prediction.index for r in on_device if r.ok] == [r.prediction.index for r in cpu if r.ok]
