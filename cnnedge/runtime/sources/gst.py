"""GStreamer pipelines as sources: whether this OpenCV has GStreamer, whether a pipeline is live (a camera or a
network stream, reconnected when it drops) or finite (ends at its end of stream, every frame read once), and the
Jetson CSI camera pipeline."""
from __future__ import annotations

import re

from .capture import OPEN_TIMEOUT_MS, READ_TIMEOUT_MS, cv2_module
from .frames import SourceError
from .live import LiveSource

#: source elements that capture from a device or the network: a pipeline holding one is live. Anything else
#: (filesrc, videotestsrc, multifilesrc, appsrc, ...) is finite unless ``is-live=true`` or ``--live`` says so.
LIVE_ELEMENTS = frozenset({
    "v4l2src", "nvarguscamerasrc", "nvv4l2camerasrc", "libcamerasrc", "rtspsrc", "udpsrc", "tcpclientsrc",
    "tcpserversrc", "souphttpsrc", "srtsrc", "srtclientsrc", "srtserversrc", "rtmpsrc", "rtmp2src", "ristsrc",
    "webrtcsrc", "whepsrc", "shmsrc", "ximagesrc", "pipewiresrc", "avfvideosrc", "ksvideosrc", "mfvideosrc",
    "dshowvideosrc", "aravissrc", "pylonsrc", "tisgstsrc", "dc1394src", "decklinkvideosrc", "ndisrc",
})
#: URI schemes of network streams: a uridecodebin/urisourcebin/playbin ``uri=`` with one of them is live
LIVE_SCHEMES = ("rtsp", "rtsps", "rtspt", "udp", "rtp", "srt", "rtmp", "http", "https", "v4l2")


def has_gstreamer() -> bool:
    """Whether this OpenCV was built with GStreamer (PyPI's wheels are not; Debian's and JetPack's are)."""
    info = cv2_module().getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(m and m.group(1).upper() != "NO")


def is_live_pipeline(pipeline: str) -> bool:
    """A pipeline is live when one of its elements is a device or network source (:data:`LIVE_ELEMENTS`), says
    ``is-live=true``, or opens a network URI; otherwise it is finite. A camera that drops must reconnect, while a
    file or test pattern must end at its end of stream instead of being replayed."""
    for part in pipeline.split("!"):
        words = part.split()
        if not words:
            continue
        if words[0].split(".")[-1] in LIVE_ELEMENTS:  # "name.", "t. ! queue" style references are not elements
            return True
        for word in words[1:]:
            key, _, value = word.partition("=")
            value = value.strip("\"'").lower()
            if key == "is-live" and value in ("true", "1", "yes"):
                return True
            if key == "uri" and value.split(":", 1)[0] in LIVE_SCHEMES:
                return True
    return False


def gstreamer(pipeline: str, name: str | None = None, *, live: bool = False, open_timeout_ms: int = OPEN_TIMEOUT_MS,
              read_timeout_ms: int = READ_TIMEOUT_MS, give_up_s: float | None = None) -> LiveSource:
    """A GStreamer pipeline as a source. Live (``live=True``, or :func:`is_live_pipeline`): newest frame only,
    reconnecting with back-off, ``give_up_s`` as for :class:`LiveSource`. Finite: every frame once, in order,
    ending at the end of stream. The timeouts go to OpenCV from 4.7 (its GStreamer back-end refuses them before);
    cnnedge applies them itself where OpenCV does not (see :class:`LiveSource`)."""
    cv2 = cv2_module()
    if not has_gstreamer():
        raise SourceError("this OpenCV build has no GStreamer support (opencv-python-headless from PyPI has none); "
                          "use an OpenCV built with GStreamer: Debian's or Ubuntu's python3-opencv, JetPack's "
                          "(see docs/deploy.md, \"Beside the system OpenCV\")")
    label = name or "gstreamer"
    if live or is_live_pipeline(pipeline):
        return LiveSource(pipeline, label, cv2.CAP_GSTREAMER, open_timeout_ms=open_timeout_ms,
                          read_timeout_ms=read_timeout_ms, give_up_s=give_up_s)
    return LiveSource(pipeline, label, cv2.CAP_GSTREAMER, open_timeout_ms=open_timeout_ms,
                      read_timeout_ms=read_timeout_ms, reconnect=False, every_frame=True)


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The usual Jetson CSI camera pipeline, ending in an appsink that drops old frames."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width=(int){width}, "
            f"height=(int){height}, framerate=(fraction){fps}/1 ! nvvidconv flip-method={flip} ! "
            "video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
            "appsink drop=true max-buffers=1 sync=false")
