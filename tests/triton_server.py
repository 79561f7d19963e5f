"""A real Triton Inference Server for tests: the ``tritonserver`` of the pinned ``nvidia-pytriton``
wheel (tests/model_wheels.py downloads it, sha256-checked), which has the Python backend only.

Unpacked once into ``tests/.wheels/``; started on 127.0.0.1 with free ports in its own process
group, the venv's ``bin/`` first on PATH (the backend stub runs the ``python3`` it finds there),
and always stopped: SIGTERM, then SIGKILL to the group after a grace period.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import model_wheels as MW

REQ = "nvidia-pytriton==0.7.0"
UNPACKED = MW.FOLDER / "nvidia_pytriton-0.7.0"


def unpacked() -> Path | None:
    """The unpacked server (stub for this Python in place), or None when the wheel is not here."""
    done = UNPACKED / ".unpacked"
    if done.is_file():
        return UNPACKED
    whl = MW.wheel(REQ)
    if whl is None:
        return None
    tmp = UNPACKED.with_name(UNPACKED.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(whl) as z:
        z.extractall(tmp)  # the wheel's own files: sha256-pinned above
    server = tmp / "pytriton" / "tritonserver"
    stub = server / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / \
        "triton_python_backend_stub"
    shutil.copy(stub, server / "backends" / "python" / stub.name)
    for exe in (server / "bin" / "tritonserver", server / "backends" / "python" / stub.name):
        exe.chmod(0o755)
    (tmp / ".unpacked").write_text(REQ + "\n")
    shutil.rmtree(UNPACKED, ignore_errors=True)
    tmp.rename(UNPACKED)
    return UNPACKED


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (bound together, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TritonServer:
    """``with TritonServer(repo, log) as s:`` a live server; ``s.http``, ``s.grpc``: host:port."""

    def __init__(self, repo: Path, log: Path, root: Path, start_timeout_s: float = 120):
        self.repo, self.log, self.root, self.start_timeout_s = repo, log, root, start_timeout_s
        self.proc: subprocess.Popen | None = None
        http, grpc, metrics = free_ports(3)
        self.http, self.grpc = f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        server = root / "pytriton" / "tritonserver"
        self.argv = [str(server / "bin" / "tritonserver"), "--model-repository", str(repo),
                     "--backend-directory", str(server / "backends"), "--exit-on-error=false",
                     "--strict-readiness=false", "--http-address", "127.0.0.1", "--http-port", str(http),
                     "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc),
                     "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics)]

    def __enter__(self) -> "TritonServer":
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                   LD_LIBRARY_PATH=str(self.root / "nvidia_pytriton.libs"))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver not ready after {self.start_timeout_s:.0f} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its backend stubs: one group, started here
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()
