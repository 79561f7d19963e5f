"""A ROS 2 node: sensor_msgs/Image or CompressedImage in, the classification out as std_msgs/String JSON.

Shows: cnnedge's ``Classifier`` inside a ROS 2 node. It subscribes to ``image`` (sensor_msgs/Image) and
``image/compressed`` (sensor_msgs/CompressedImage, JPEG or PNG as image_transport's compressed plugin sends),
both with the sensor-data QoS at depth 1 (best effort, newest only), so a slow model drops stale frames
instead of queueing them. Raw images are converted with a plain numpy view of the message (bgr8, rgb8,
bgra8, rgba8, mono8, mono16); other encodings go through cv_bridge when it is installed. Compressed images
are decoded by cnnedge's own decoder, with the limits cnn-infer keeps (pixel bombs, truncated files). Each
result is published on ``~/classification`` as JSON (the message every install gets):
    {"label": "7", "score": 0.98, "topk": [["7", 0.98], ...], "stamp": 12.5, "frame_id": "cam", "latency_ms": 0.6}
with ``stamp`` and ``frame_id`` copied from the image's header, and, when vision_msgs imports, as
vision_msgs/Classification on ``~/classification/vision``. SIGINT (Ctrl-C, what ros2 launch sends first) and
SIGTERM stop it cleanly: the node is destroyed, the model closed, exit status 0.

Needs rclpy, sensor_msgs and std_msgs, from either
  - ROS 2 (Humble or newer) from apt, with the system Python that ROS 2 uses:
        source /opt/ros/humble/setup.bash
  - or PyPI's ROS 2 Kilted wheels, in a Python 3.11 venv beside cnnedge (tests/examples/test_ros2_node.py runs it so):
        pip install 'cnnedge[cpu]' 'ros-kilted-rclpy[fastrtps]' ros-kilted-sensor-msgs ros-kilted-std-msgs
    (no wheels of vision_msgs or cv_bridge were found: JSON only there).
Without them it says what to install and exits with status 2.

Run:
    python3 examples/ros2_node.py runs/demo/model.int8.onnx --ros-args -r image:=/camera/image_raw \
        -r image/compressed:=/camera/image_raw/compressed -p threshold:=0.5
    ros2 topic echo /cnnedge_classifier/classification
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np

INSTALL_HINT = """\
ros2_node.py: error: ROS 2 Python packages are not importable here ({missing}).
Either install ROS 2 (https://docs.ros.org/en/rolling/Installation.html), e.g. on Ubuntu 22.04:
    sudo apt install ros-humble-ros-base ros-humble-vision-msgs ros-humble-cv-bridge
then source it in this shell and run again with the system Python that ROS 2 uses:
    source /opt/ros/humble/setup.bash
    python3 examples/ros2_node.py MODEL [--ros-args ...]
or, with Python 3.11, install ROS 2 Kilted's rclpy from PyPI into this environment:
    pip install 'ros-kilted-rclpy[fastrtps]' ros-kilted-sensor-msgs ros-kilted-std-msgs"""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

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


def compressed_to_bgr(msg: Any) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG, PNG, ...) -> a uint8 BGR array, by cnnedge's decoder and its limits.

    Raises cnnedge's ImageError for data that is not a whole, readable image of a sane size.
    """
    from cnnedge.imaging.decode import decode_image

    return decode_image(bytes(msg.data), f"CompressedImage ({msg.format or 'no format'})")


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
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String
    except ImportError as exc:
        print(INSTALL_HINT.format(missing=exc.name or exc), file=sys.stderr)
        return None
    ros: dict[str, Any] = {"rclpy": rclpy, "qos": qos_profile_sensor_data, "Image": Image, "String": String,
                           "CompressedImage": CompressedImage, "remove_ros_args": remove_ros_args}
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    ros.update(executor=SingleThreadedExecutor, no_signal_handlers=SignalHandlerOptions.NO)
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
              "-r image/compressed:=/camera/image_raw/compressed -p threshold:=0.5 -p topk:=3]", file=sys.stderr)
        return 2
    # A ROS node is stopped by signals (ros2 launch sends SIGINT, then SIGTERM). Whichever thread the kernel hands
    # one to (ONNX Runtime's, DDS's, the executor's), Python writes its number to the wakeup pipe that this thread
    # waits on once the node runs, so a stop never lands halfway through a callback or the clean-up.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for s in STOP_SIGNALS:
        signal.signal(s, lambda signum, frame: None)
    from cnnedge.runtime import Classifier

    clf = Classifier(args[0])  # a model that cannot load fails here, before ROS starts
    rclpy.init(args=full, signal_handler_options=ros["no_signal_handlers"])
    node = rclpy.create_node("cnnedge_classifier")
    threshold = float(node.declare_parameter("threshold", 0.0).value)
    topk = int(node.declare_parameter("topk", 3).value)
    pub = node.create_publisher(ros["String"], "~/classification", 10)
    vpub = (node.create_publisher(ros["Classification"], "~/classification/vision", 10)
            if "Classification" in ros else None)
    log = node.get_logger()

    def classify(msg: Any, to_bgr: Any) -> None:
        t0 = time.perf_counter()
        try:
            pred = clf.predict(to_bgr(msg), topk=topk)
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

    def raw_to_bgr(msg: Any) -> np.ndarray:
        try:
            return image_to_bgr(msg)
        except ValueError:
            if "bridge" not in ros:
                raise
            return ros["bridge"].imgmsg_to_cv2(msg, desired_encoding="bgr8")

    node.create_subscription(ros["Image"], "image", lambda m: classify(m, raw_to_bgr), ros["qos"])
    node.create_subscription(ros["CompressedImage"], "image/compressed", lambda m: classify(m, compressed_to_bgr),
                             ros["qos"])
    executor = ros["executor"]()
    executor.add_node(node)
    failed: list[BaseException] = []
    stopping = threading.Event()

    def spin() -> None:
        try:
            executor.spin()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which ends the node
            if not stopping.is_set():
                failed.append(exc)
                os.write(wake_w, b"\0")

    spinner = threading.Thread(target=spin, name="ros2-spin", daemon=True)
    spinner.start()
    log.info(f"{clf!r}: listening on {node.resolve_topic_name('image')} and "
             f"{node.resolve_topic_name('image/compressed')}")
    sig = os.read(wake_r, 1)[0]
    while sig and sig not in STOP_SIGNALS:  # another signal a library handles in Python: not ours
        sig = os.read(wake_r, 1)[0]
    stopping.set()
    for s in STOP_SIGNALS:  # a second signal ends the process at once
        signal.signal(s, signal.SIG_DFL)
    if not failed:
        print(f"ros2_node.py: {signal.Signals(sig).name}: stopping", file=sys.stderr)
    executor.shutdown()
    spinner.join()
    node.destroy_node()
    clf.close()
    rclpy.shutdown()
    if failed:
        raise failed[0]
    print("ros2_node.py: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # not cnnedge.cli.run_cli, unlike the other examples: it takes SIGINT and SIGTERM itself, and here ROS's
    # way of stopping (above) owns them
    from cnnedge.errors import CnnEdgeError

    try:
        sys.exit(main(sys.argv[1:]))
    except CnnEdgeError as exc:
        print(f"ros2_node.py: error: {exc}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
