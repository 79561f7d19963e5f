"""A ROS 2 node: sensor_msgs/Image in, the classification out as std_msgs/String JSON (and vision_msgs if present).

Shows: cnnedge's ``Classifier`` inside a ROS 2 node. The image subscription
uses the sensor-data QoS with depth 1 (best effort, newest only), so a slow
model drops stale frames instead of queueing them. Images are converted with a
plain numpy view of the message (bgr8, rgb8, bgra8, rgba8, mono8, mono16);
other encodings go through cv_bridge when it is installed. Each result is
published on ``~/classification`` as JSON:
    {"label": "7", "score": 0.98, "topk": [["7", 0.98], ...], "stamp": 12.5, "frame_id": "cam", "latency_ms": 0.6}
and, when vision_msgs is installed, as vision_msgs/Classification on ``~/classification/vision``.

Needs ROS 2 (Humble or newer) with rclpy, sensor_msgs and std_msgs; without
them it says what to install and exits with status 2.

Run (in a shell where ROS 2 is sourced, e.g. `source /opt/ros/humble/setup.bash`):
    python3 examples/ros2_node.py runs/demo/model.onnx --ros-args -r image:=/camera/image_raw -p threshold:=0.5
    ros2 topic echo /cnnedge_classifier/classification
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

INSTALL_HINT = """\
ros2_node.py: error: ROS 2 Python packages are not importable here ({missing}).
Install ROS 2 (https://docs.ros.org/en/rolling/Installation.html), e.g. on Ubuntu 22.04:
    sudo apt install ros-humble-ros-base ros-humble-vision-msgs ros-humble-cv-bridge
then source it in this shell and run again with the system Python that ROS 2 uses:
    source /opt/ros/humble/setup.bash
    python3 examples/ros2_node.py MODEL [--ros-args ...]
(rclpy comes with ROS 2, not from pip.)"""

# encoding -> (channels, numpy dtype, OpenCV conversion to BGR or None)
ENCODINGS: dict[str, tuple[int, str, str | None]] = {
    "bgr8": (3, "uint8", None), "rgb8": (3, "uint8", "COLOR_RGB2BGR"),
    "bgra8": (4, "uint8", "COLOR_BGRA2BGR"), "rgba8": (4, "uint8", "COLOR_RGBA2BGR"),
    "mono8": (1, "uint8", None), "8UC1": (1, "uint8", None), "8UC3": (3, "uint8", None),
    "mono16": (1, "uint16", None), "16UC1": (1, "uint16", None),
}


def image_to_bgr(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image -> a uint8 BGR (or gray) array as OpenCV gives, without cv_bridge.

    Honours ``step`` (row padding) and ``is_bigendian``; 16-bit mono is scaled to 8 bits.
    Raises ValueError for an encoding this conversion does not know.
    """
    import cv2

    if msg.encoding not in ENCODINGS:
        raise ValueError(f"image encoding {msg.encoding!r} is not one of {', '.join(ENCODINGS)}")
    channels, dtype, code = ENCODINGS[msg.encoding]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * channels * dt.itemsize
    if msg.step < row or len(msg.data) < msg.step * msg.height:
        raise ValueError(f"image {msg.width}x{msg.height} {msg.encoding}: step {msg.step} and "
                         f"{len(msg.data)} data bytes are too small")
    buf = np.frombuffer(bytes(msg.data), np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
    img = buf[:, :row].copy().view(dt).reshape(msg.height, msg.width, channels)
    if dt.itemsize == 2:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    if channels == 1:
        return img[:, :, 0]
    return cv2.cvtColor(img, getattr(cv2, code)) if code else img


def result_json(pred: Any, stamp: float, frame_id: str, latency_ms: float) -> str:
    """The JSON text published for one classified image."""
    return json.dumps({"label": pred.label, "score": round(float(pred.score), 6),
                       "topk": [[lab, round(float(s), 6)] for lab, s in pred.topk],
                       "stamp": stamp, "frame_id": frame_id, "latency_ms": round(latency_ms, 3)})


def _import_ros() -> dict[str, Any] | None:
    """The ROS 2 modules, or None after printing what to install."""
    try:
        import rclpy
        from rclpy.qos import qos_profile_sensor_data
        from rclpy.utilities import remove_ros_args
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
    except ImportError as exc:
        print(INSTALL_HINT.format(missing=exc.name or exc), file=sys.stderr)
        return None
    ros: dict[str, Any] = {"rclpy": rclpy, "qos": qos_profile_sensor_data, "Image": Image, "String": String,
                           "remove_ros_args": remove_ros_args}
    try:
        from vision_msgs.msg import Classification, ObjectHypothesis

        ros.update(Classification=Classification, ObjectHypothesis=ObjectHypothesis)
    except ImportError:
        pass
    try:
        from cv_bridge import CvBridge

        ros["bridge"] = CvBridge()
    except ImportError:
        pass
    return ros


def main(argv: list[str]) -> int:
    ros = _import_ros()
    if ros is None:
        return 2
    rclpy = ros["rclpy"]
    full = [sys.argv[0], *argv]  # rcl takes argv[0] as the program name
    args = ros["remove_ros_args"](full)[1:]
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python3 examples/ros2_node.py MODEL [--ros-args -r image:=/camera/image_raw "
              "-p threshold:=0.5 -p topk:=3]", file=sys.stderr)
        return 2
    from cnnedge.runtime import Classifier

    rclpy.init(args=full)
    node = rclpy.create_node("cnnedge_classifier")
    threshold = float(node.declare_parameter("threshold", 0.0).value)
    topk = int(node.declare_parameter("topk", 3).value)
    clf = Classifier(args[0], topk=topk)
    pub = node.create_publisher(ros["String"], "~/classification", 10)
    vpub = (node.create_publisher(ros["Classification"], "~/classification/vision", 10)
            if "Classification" in ros else None)
    log = node.get_logger()
    log.info(f"{clf!r}: listening on {node.resolve_topic_name('image')}")

    def on_image(msg: Any) -> None:
        t0 = time.perf_counter()
        try:
            try:
                img = image_to_bgr(msg)
            except ValueError:
                if "bridge" not in ros:
                    raise
                img = ros["bridge"].imgmsg_to_cv2(msg, desired_encoding="bgr8")
            pred = clf.predict(img)
        except Exception as exc:  # noqa: BLE001 - a bad frame is logged, the node keeps running
            log.warning(f"frame skipped: {exc}")
            return
        if pred.score < threshold:
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        pub.publish(ros["String"](data=result_json(pred, stamp, msg.header.frame_id,
                                                   (time.perf_counter() - t0) * 1000)))
        if vpub is not None:
            out = ros["Classification"]()
            out.header = msg.header
            for label, score in pred.topk:
                hyp = ros["ObjectHypothesis"]()
                hyp.class_id, hyp.score = label, float(score)
                out.results.append(hyp)
            vpub.publish(out)

    node.create_subscription(ros["Image"], "image", on_image, ros["qos"])
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        clf.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnedge.cli import run_cli

    sys.exit(run_cli("ros2_node.py", main))
