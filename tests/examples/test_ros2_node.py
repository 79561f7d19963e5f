"""examples/ros2_node.py with a real rclpy: ROS 2 Kilted's wheels from PyPI, in tests/.ros2-venv.

`make ros2-for-tests` (a step of `make test`) builds that venv from tests/ros2-requirements.txt, with cnnedge and
the main venv's numpy, OpenCV and ONNX Runtime at the same versions, so the node's answers can be compared
exactly with `Classifier.predict` here. tests/ros2_peer.py, in that venv, publishes the demo's held-out digits
to the node as bgr8, rgb8 and mono8 sensor_msgs/Image and as PNG and JPEG CompressedImage, and collects its
JSON answers. Each test run gets its own ROS domain and namespace, on localhost only. Where the venv is absent
(no registry, another Python than 3.11) every test skips with the reason.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest


pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROS_VENV = ROOT / "tests" / ".ros2-venv"
ROS_PY = ROS_VENV / "bin" / "python"
NODE = ROOT / "examples" / "ros2_node.py"
PEER = ROOT / "tests" / "ros2_peer.py"
OTHER_KINDS = 40  # digits sent also as rgb8, mono8, PNG and JPEG (all of them go as bgr8)


@pytest.fixture(scope="module")
def ros_env():
    """The environment for the ROS 2 venv's processes: a domain of their own, discovery on localhost only."""
    if not ROS_PY.exists():
        pytest.skip(f"no ROS 2 venv at {ROS_VENV}: `make ros2-for-tests` builds it from PyPI's ROS 2 Kilted wheels "
                    "(Python 3.11, a reachable registry)")
    env = {**os.environ, "ROS_DOMAIN_ID": str(1 + os.getpid() % 100), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([str(ROS_PY), "-c", "import rclpy, sensor_msgs.msg, std_msgs.msg, cnnedge"],
                         env=env, capture_output=True, text=True, timeout=120)
    if res.returncode:
        pytest.skip(f"rclpy does not import in {ROS_VENV}: {res.stderr.strip().splitlines()[-1:]}")
    return env


@pytest.fixture(scope="module")
def demo(demo_int8):
    return demo_int8


class Node:
    """examples/ros2_node.py running in the ROS 2 venv under ``namespace``; always ended by ``close``."""

    def __init__(self, model: Path, env: dict, namespace: str) -> None:
        self.proc = subprocess.Popen([str(ROS_PY), str(NODE), str(model), "--ros-args", "-r", f"__ns:={namespace}"],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.log = ""

    def wait_for(self, text: str, timeout: float = 120) -> None:
        """Read the node's output as it comes until ``text`` appears (or the node exits, or ``timeout``)."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while text not in self.log:
                left = deadline - time.monotonic()
                assert left > 0, f"no {text!r} from the node in {timeout} s:\n{self.log}"
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    assert chunk, f"the node exited ({self.proc.wait()}) before {text!r}:\n{self.log}"
                    self.log += chunk.decode(errors="replace")

    def stop(self, sig: int, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status, the rest of the output in ``log``."""
        self.proc.send_signal(sig)
        rest, _ = self.proc.communicate(timeout=timeout)
        self.log += rest.decode(errors="replace")
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def cases(demo, folder: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """What the peer publishes (key -> message payload) and what the Python API is given for the same key."""
    import cv2

    sent, given = {}, {}
    for i, bgr in enumerate(demo.images):
        sent[f"{i:04d}_bgr8"] = given[f"{i:04d}_bgr8"] = bgr
        if i >= OTHER_KINDS:
            continue
        sent[f"{i:04d}_rgb8"], given[f"{i:04d}_rgb8"] = np.ascontiguousarray(bgr[:, :, ::-1]), bgr
        sent[f"{i:04d}_mono8"] = given[f"{i:04d}_mono8"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        for kind, ext in (("png", ".png"), ("jpeg", ".jpg")):
            path = folder / f"{i:04d}{ext}"
            assert cv2.imwrite(str(path), bgr)
            sent[f"{i:04d}_{kind}"], given[f"{i:04d}_{kind}"] = np.fromfile(path, np.uint8), path
    return sent, given


def test_node_answers_every_image_as_classifier_predict_and_stops_on_sigterm(ros_env, demo, tmp_path):
    from cnnedge.runtime import Classifier

    sent, given = cases(demo, tmp_path)
    np.savez(tmp_path / "cases.npz", **sent)
    namespace = f"/cnnedge_test_{uuid.uuid4().hex[:8]}"
    node = Node(demo.run / "model.int8.onnx", ros_env, namespace)
    try:
        node.wait_for("listening on")
        peer = subprocess.run([str(ROS_PY), str(PEER), namespace, str(tmp_path / "cases.npz"),
                               str(tmp_path / "answers.jsonl")], env=ros_env, capture_output=True, text=True,
                              timeout=600)
        assert peer.returncode == 0, peer.stderr[-3000:]
        assert node.stop(signal.SIGTERM) == 0, node.log
    finally:
        node.close()
    assert "Traceback" not in node.log and "ros2_node.py: stopped" in node.log, node.log
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == list(sent), "every published image is answered, in order"
    with Classifier(demo.run / "model.int8.onnx") as clf:
        for n, r in enumerate(rows):
            want, got = clf.predict(given[r["key"]], topk=3), r["answer"]  # the node's default topk
            assert set(got) == {"label", "score", "topk", "stamp", "frame_id", "latency_ms"}, got
            assert got["frame_id"] == r["key"] and got["stamp"] == pytest.approx(n + 0.5), got
            assert got["label"] == want.label, (r["key"], got, want)
            assert got["score"] == pytest.approx(want.score, abs=1e-6), (r["key"], got, want)
            assert [lab for lab, _ in got["topk"]] == [lab for lab, _ in want.topk] and got["latency_ms"] >= 0
    bgr = [r for r in rows if r["key"].endswith("_bgr8")]
    right = sum(r["answer"]["label"] == demo.classes[demo.labels[int(r["key"][:4])]] for r in bgr)
    assert len(bgr) == len(demo.images) and right >= 0.9 * len(bgr), f"only {right}/{len(bgr)} right"


def test_node_stops_cleanly_on_sigint(ros_env, demo):
    node = Node(demo.run / "model.int8.onnx", ros_env, f"/cnnedge_test_{uuid.uuid4().hex[:8]}")
    try:
        node.wait_for("listening on")
        assert node.stop(signal.SIGINT) == 0, node.log
    finally:
        node.close()
    assert "Traceback" not in node.log and "ros2_node.py: stopped" in node.log, node.log
