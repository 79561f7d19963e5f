"""A camera and a listener for examples/ros2_node.py, run by tests/examples/test_ros2_node.py with the ROS 2 venv's
Python.

    python tests/ros2_peer.py NAMESPACE CASES.npz OUT.jsonl

Publishes every array of CASES.npz as the node's subscriptions take it: a key ending in ``bgr8``, ``rgb8`` or
``mono8`` as sensor_msgs/Image of that encoding, one ending in ``png`` or ``jpeg`` (the file's bytes) as
sensor_msgs/CompressedImage, each with the key as ``frame_id`` and its position n as the stamp (n s + 0.5 s).
The node keeps only the newest frame (sensor-data QoS, depth 1), so images go one at a time: the next is
published once the answer to this one has arrived. Everything waits on ROS events (the publishers and the
answer subscription matched, an answer received); an image whose answer has not come in RESEND_S is published
again (best effort may lose one), and the run gives up after DEADLINE_S. Writes one JSON line per image,
``{"key", "sent", "answer"}``, with the node's JSON answer as it arrived; exits 1 if any is missing.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import rclpy
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

RESEND_S = 10.0
DEADLINE_S = 300.0
CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1}


def message(key: str, data: np.ndarray, n: int):
    kind = key.rsplit("_", 1)[1]
    if kind in CHANNELS:
        msg = Image(height=data.shape[0], width=data.shape[1], encoding=kind, is_bigendian=0,
                    step=data.shape[1] * CHANNELS[kind], data=data.tobytes())
    else:
        msg = CompressedImage(format=kind, data=data.tobytes())
    msg.header.frame_id = key
    msg.header.stamp.sec, msg.header.stamp.nanosec = n, 500_000_000
    return msg


def main(namespace: str, cases: str, out: str) -> int:
    arrays = np.load(cases)
    rclpy.init()
    node = rclpy.create_node("cnnedge_test_camera", namespace=namespace)
    matched: dict[str, bool] = {}

    def on_match(name: str):
        return lambda info: matched.__setitem__(name, info.current_count > 0)

    pubs = {"raw": node.create_publisher(Image, "image", qos_profile_sensor_data,
                                         event_callbacks=PublisherEventCallbacks(matched=on_match("raw"))),
            "compressed": node.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data,
                                                event_callbacks=PublisherEventCallbacks(
                                                    matched=on_match("compressed")))}
    answers: dict[str, dict] = {}

    def on_answer(msg: String) -> None:
        got = json.loads(msg.data)
        answers.setdefault(got["frame_id"], got)

    node.create_subscription(String, "cnnedge_classifier/classification", on_answer, 10,
                             event_callbacks=SubscriptionEventCallbacks(matched=on_match("answers")))
    deadline = time.monotonic() + DEADLINE_S
    rows = []
    try:
        while not all(matched.get(k) for k in ("raw", "compressed", "answers")):
            if time.monotonic() > deadline:
                print(f"ros2_peer.py: the node never matched: {matched}", file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=1.0)
        for n, key in enumerate(arrays.files):
            msg = message(key, arrays[key], n)
            pub = pubs["raw" if isinstance(msg, Image) else "compressed"]
            sent = 0
            while key not in answers and time.monotonic() < deadline:
                pub.publish(msg)
                sent += 1
                resend = time.monotonic() + RESEND_S
                while key not in answers and time.monotonic() < min(resend, deadline):
                    rclpy.spin_once(node, timeout_sec=1.0)
            if key not in answers:
                print(f"ros2_peer.py: no answer for {key} after {DEADLINE_S} s ({len(rows)} answered)",
                      file=sys.stderr)
                return 1
            rows.append({"key": key, "sent": sent, "answer": answers[key]})
    finally:
        with open(out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
