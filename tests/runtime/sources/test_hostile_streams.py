"""cnn-infer on hostile streams (issue 33): an HTTP server that sends garbage as MJPEG, or good frames and then
garbage, must be given up within a bound set by the flags; a server that accepts and never answers must not hold
Ctrl-C or SIGTERM for the open timeout. Real servers on 127.0.0.1, real cnn-infer processes."""
from __future__ import annotations

import os
import re
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from test_hostile_reads import _classifier_onnx, _cli, _run_default_signals, error_lines, infer  # noqa: E402

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")


class PartsServer:
    """multipart/x-mixed-replace over HTTP on 127.0.0.1, parts labelled image/jpeg every 20 ms until the server
    stops: ``part(connection, n)`` gives the bytes of part n of the connection-th GET (both from 1). ``gate``: no
    part is sent until that many connections are open."""

    def __init__(self, part: Callable[[int, int], bytes], gate: int = 0) -> None:
        self.connections = 0
        self.lock = threading.Lock()
        self.all_in = threading.Event()
        self.stopping = threading.Event()
        if gate <= 0:
            self.all_in.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.connections += 1
                    connection = server.connections
                    if connection >= gate:
                        server.all_in.set()
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                if not server.all_in.wait(300):
                    return
                try:
                    for n in range(1, 100_000):
                        if server.stopping.wait(0.02):
                            return
                        data = part(connection, n)
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(data) + data + b"\r\n")
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cam.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self.all_in.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def jpeg() -> bytes:
    return cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()


def garbage_after(good: int) -> PartsServer:
    """``good`` real JPEG frames on the first connection, then random bytes there and on every later one."""
    frame = jpeg()
    rng = np.random.default_rng(0)
    return PartsServer(lambda c, n: frame if c == 1 and n <= good else rng.integers(0, 256, 3000, np.uint8).tobytes())


class SilentServer:
    """Accepts connections and never answers: an HTTP open waits for its timeout. ``accepted`` is set at the
    first connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/cam.mjpg"
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def stop(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _classifier_onnx(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture()
def garbage() -> Iterator[PartsServer]:
    srv = garbage_after(0)
    yield srv
    srv.stop()


@pytest.fixture()
def good_then_garbage() -> Iterator[PartsServer]:
    srv = garbage_after(15)
    yield srv
    srv.stop()


@pytest.fixture()
def silent() -> Iterator[SilentServer]:
    srv = SilentServer()
    yield srv
    srv.stop()


GIVE_UP_S, OPEN_MS, READ_MS = 3, 4000, 2000
#: --give-up-after, one open and one read timeout, and room for start-up (imports, model load) on a loaded machine
BOUND_S = GIVE_UP_S + (OPEN_MS + READ_MS) / 1000 + 25


@pytest.mark.slow
@pytest.mark.parametrize("server", ["garbage", "good_then_garbage"])
def test_a_stream_of_garbage_is_given_up_within_the_flags_bound(model, server, request):
    """Garbage opens (FFmpeg probes it for seconds and says yes) and then gives no frame; each reopen used to
    restart the --give-up-after clock, so the run never ended. Down now means no frame, whatever opens."""
    srv: PartsServer = request.getfixturevalue(server)
    r = infer(str(model), "--source", srv.url, "--give-up-after", str(GIVE_UP_S), "--open-timeout-ms", str(OPEN_MS),
              "--read-timeout-ms", str(READ_MS), "--quiet", timeout=BOUND_S + 30)
    assert r.rc == 1 and r.seconds < BOUND_S and "Traceback" not in r.err, r
    lines = error_lines(r)
    assert len(lines) == 1 and "gave up on" in lines[0] and srv.url in lines[0], r
    done = int(re.search(r"(\d+) done;", r.err)[1])
    if server == "garbage":
        assert done == 0, r  # no frame made up from garbage
    else:
        assert 0 < done <= 15, r  # the good frames (a loaded machine may drop some: newest frame only)
    assert srv.connections >= 2, "it never tried to reconnect"


def _sent_while_opening(srv: SilentServer, sig: int, *extra: str, model: Path) -> object:
    return _run_default_signals(_cli("infer"), str(model), "--source", srv.url, "--quiet", *extra, sig=sig,
                                when=srv.accepted.is_set, wait=120, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,extra", [(signal.SIGINT, 130, ("--open-timeout-ms", "60000")),
                                            (signal.SIGTERM, 143, ()), (signal.SIGHUP, 129, ())],
                         ids=["sigint-60s-open", "sigterm-default-open", "sighup-default-open"])
def test_a_signal_ends_a_stream_open_at_once_with_the_summary(model, silent, sig, code, extra, tmp_path):
    """The open blocked in FFmpeg until its timeout (60 s, or the default 10 s) before Ctrl-C or SIGTERM took
    effect. The signal is sent once the server has the connection (the open is under way); the run ends within
    a few seconds with its exit code, the usual summary, and the old --json file as it was."""
    old = tmp_path / "out.jsonl"
    old.write_text('{"old": 1}\n')
    r = _sent_while_opening(silent, sig, "--json", str(old), "--force", *extra, model=model)
    assert r.rc == code and r.seconds < 5, r
    assert "interrupted; 0 done" in r.err and "Traceback" not in r.err and not error_lines(r), r
    assert old.read_text() == '{"old": 1}\n' and sorted(os.listdir(tmp_path)) == ["out.jsonl"]


def test_a_stop_event_ends_a_reopen_and_close_does_not_wait_for_it(silent):
    """A live source's reopen (in its capture thread) is waited on in slices: closing the source while FFmpeg
    blocks in the open returns at once; the capture is released when the open ends."""
    import time

    from cnnedge.runtime.sources.capture import open_capture_stoppably

    stop = threading.Event()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(open_capture_stoppably(
        silent.url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 60000], "silent", stop)), daemon=True)
    t.start()
    assert silent.accepted.wait(60)
    t0 = time.monotonic()
    stop.set()
    t.join(30)
    assert got == [None] and time.monotonic() - t0 < 5
