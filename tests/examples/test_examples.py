"""The examples in examples/, run as a user runs them: subprocesses on generated videos and folders.

One digits-cnn, trained once for the session with the trainer's library API (a few
epochs: conftest.py's demo_trained), is exported here with the exporter's API, with a
Triton model repository.
Videos are made of real digit scans (the held-out test split), each digit
shown for a run of frames, so every printed label can be checked against the
digit on the frame the example says it classified.

The Triton test here checks the request the client builds for an entry on Triton's
ONNX Runtime backend (tritonclient's own objects against the repository's config.pbtxt,
parsed with tritonclient's model_config_pb2): the test machines' Triton server has the
Python backend only, so the round trip runs with the cnnedge entries, in
tests/serve/test_triton_server.py. The ROS 2 node runs with a real rclpy (PyPI's ROS 2 Kilted wheels) in
tests/examples/test_ros2_node.py; here, the guard that runs when rclpy is absent and the message conversion, which
need no ROS.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from _examples import load_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FPS = 20
RUN = 8  # frames per digit in the generated videos
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def run_example(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model(demo_trained, tmp_path_factory):
    """digits-cnn trained briefly (cnnedge.trainer, the session's) and exported (cnnedge.export) with a Triton
    repository."""
    from cnnedge.export import export

    base, result = tmp_path_factory.mktemp("model"), demo_trained.result
    assert result.test_accuracy > 0.8, result.summary()
    report = export(demo_trained.run / "model.keras", base / "out", triton=base / "repo", verify_size=200)
    return SimpleNamespace(onnx=base / "out" / "model.onnx", repo=base / "repo", name=Path(report.triton[0]).name,
                           card=result.card)


@pytest.fixture(scope="module")
def digits(model):
    """For each digit 0..9, the held-out scan (upscaled to a 96x96 frame) the model is surest of."""
    from cnnedge.runtime import Classifier
    from cnnedge.datasets import split_images

    images, labels, _ = split_images(model.card.provenance.dataset_spec, "test")
    frames = [cv2.resize(im, (96, 96), interpolation=cv2.INTER_LINEAR) for im in images]
    with Classifier(model.onnx) as clf:
        preds = clf.predict_batch(frames)
    best = {}
    for frame, label, p in zip(frames, labels, preds):
        d = int(label)
        if p.label == str(d) and p.score >= 0.9 and (d not in best or p.score > best[d][1]):
            best[d] = (frame, p.score)
    assert len(best) >= 6, f"the model is confidently right on only {sorted(best)}"
    return {d: f for d, (f, _) in best.items()}


def write_video(path: Path, order: list[int], digits: dict[int, np.ndarray], size: int = 96) -> list[int]:
    """A lossless-looking MJPG video showing each digit of ``order`` for RUN frames; returns the digit per frame."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (size, size))
    assert w.isOpened()
    w.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    truth = []
    for d in order:
        frame = cv2.resize(digits[d], (size, size), interpolation=cv2.INTER_LINEAR)
        for _ in range(RUN):
            w.write(frame)
            truth.append(d)
    w.release()
    return truth


def write_folder(folder: Path, model, n: int) -> list[Path]:
    """``n`` held-out digit scans as 64x64 PNGs in class folders, plus one corrupt file; returns all paths."""
    from cnnedge.datasets import split_images

    images, labels, _ = split_images(model.card.provenance.dataset_spec, "test", n)
    paths = []
    for i, (im, label) in enumerate(zip(images, labels)):
        p = folder / str(label) / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), cv2.resize(im, (64, 64)))
        paths.append(p)
    bad = folder / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    return paths + [bad]


TICK = re.compile(r"^tick (\d+) frame (\d+) label (\S+) score ([\d.]+) infer ([\d.]+) ms age ([\d.]+) ms -> (.+)$")


@pytest.mark.slow
def test_robot_loop_classifies_the_newest_frame_at_a_fixed_rate(model, digits, tmp_path):
    order = sorted(digits)
    truth = write_video(tmp_path / "cam.avi", order, digits)  # 20 fps, RUN frames per digit
    target = str(order[len(order) // 2])
    res = run_example("robot_loop", model.onnx, "--video", tmp_path / "cam.avi", "--rate", 10, "--seconds", 2.5,
                      "--act-on", target, "--threshold", 0.5)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    ticks = [TICK.match(line) for line in res.stdout.splitlines() if line.startswith("tick ")]
    classified = [m for m in ticks if m]
    assert len(ticks) >= 15 and len(classified) >= 15, res.stdout
    frames = [int(m[2]) for m in classified]
    assert frames == sorted(set(frames)), "a frame was classified twice or out of order"
    assert max(b - a for a, b in zip(frames, frames[1:])) >= 2, "a 10 Hz loop on a 20 fps camera must skip frames"
    for m in classified:
        frame, label, score, action = int(m[2]), m[3], float(m[4]), m[7]
        assert label == str(truth[frame]), f"frame {frame} shows {truth[frame]}, the loop said {label}"
        assert float(m[5]) >= 0 and float(m[6]) >= float(m[5])  # age (capture to result) includes inference
        expected = "UNSURE" if score < 0.5 else (f"ACT {label}" if label == target else "IGNORE")
        assert action == expected
    assert any(m[7] == f"ACT {target}" for m in classified)
    summary = res.stdout.strip().splitlines()[-1]
    m = re.search(r"summary: (\d+) ticks in ([\d.]+) s .* (\d+) dropped \(newest-frame-only\)", summary)
    assert m, summary
    assert int(m[1]) == len(ticks) and int(m[3]) > 0
    assert 7.0 <= int(m[1]) / float(m[2]) <= 10.5, summary  # the loop keeps its rate


@pytest.mark.slow
def test_multi_camera_batches_cameras_together_and_routes_results(model, digits, tmp_path):
    order = sorted(digits)
    orders = [order, order[::-1], order[len(order) // 2:] + order[:len(order) // 2]]
    truths = [write_video(tmp_path / f"v{i}.avi", o, digits, size) for i, (o, size) in
              enumerate(zip(orders, (96, 128, 80)))]
    videos = [a for i in range(3) for a in ("--video", tmp_path / f"v{i}.avi")]
    res = run_example("multi_camera", model.onnx, *videos, "--seconds", 2.5, "--max-wait-ms", 30)
    assert res.returncode == 0, res.stderr
    lines = re.findall(r"^\[cam(\d)\] frame (\d+) label (\S+) score [\d.]+ latency [\d.]+ ms \(call (\d+): (\S+)\)$",
                       res.stdout, re.M)
    per_cam = {c: [(int(f), lab) for cam, f, lab, _, _ in lines if int(cam) == c] for c in range(3)}
    for c, results in per_cam.items():
        assert len(results) >= 10, f"cam{c}: {len(results)} results"
        for frame, label in results:
            assert label == str(truths[c][frame]), f"cam{c} frame {frame} shows {truths[c][frame]}, got {label}"
        assert [f for f, _ in results] == sorted({f for f, _ in results})
        assert re.search(rf"^  cam{c}: {len(results)} results, last label \d", res.stdout, re.M)
    calls: dict[str, set[str]] = {}
    for cam, _, _, call, _ in lines:
        calls.setdefault(call, set()).add(f"cam{cam}")
    for _, _, _, call, cams in lines:  # each line names exactly the cameras whose frames were in its call
        assert set(cams.split("+")) == calls[call]
    assert sum(len(c) > 1 for c in calls.values()) >= len(calls) // 2, "cameras rarely shared an inference call"
    assert len(calls) < len(lines)


def test_ros2_node_without_rclpy_explains_what_to_install(tmp_path):
    code = ("import sys, runpy; sys.modules['rclpy'] = None; sys.argv = ['ros2_node.py', 'model.onnx']; "
            f"runpy.run_path({str(EXAMPLES / 'ros2_node.py')!r}, run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "rclpy" in res.stderr
    assert "apt install ros-" in res.stderr and "source /opt/ros/" in res.stderr
    assert "pip install 'ros-kilted-rclpy[fastrtps]' ros-kilted-sensor-msgs ros-kilted-std-msgs" in res.stderr
    # importing the module needs no ROS at all
    ros2 = load_example("ros2_node")
    assert callable(ros2.image_to_bgr) and "rclpy" not in sys.modules


def _msg(img: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> SimpleNamespace:
    """The fields of a sensor_msgs/Image carrying ``img`` (rows padded by ``pad`` bytes)."""
    h, w = img.shape[:2]
    raw = img.astype(img.dtype.newbyteorder(">" if bigendian else "<")).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([raw, np.zeros((h, pad), np.uint8)], axis=1)
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1],
                           data=rows.tobytes())


def test_ros2_image_conversion_without_cv_bridge():
    ros2 = load_example("ros2_node")
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (5, 7, 3), np.uint8)
    assert np.array_equal(ros2.image_to_bgr(_msg(bgr, "bgr8", pad=3)), bgr)
    assert np.array_equal(ros2.image_to_bgr(_msg(bgr[:, :, ::-1].copy(), "rgb8", pad=1)), bgr)
    rgba = np.dstack([bgr[:, :, ::-1], np.full((5, 7), 9, np.uint8)])
    assert np.array_equal(ros2.image_to_bgr(_msg(rgba, "rgba8")), bgr)
    mono16 = (rng.integers(0, 256, (4, 6)) * 257).astype(np.uint16)
    for big in (False, True):
        assert np.array_equal(ros2.image_to_bgr(_msg(mono16, "mono16", pad=2, bigendian=big)),
                              (mono16 // 257).astype(np.uint8))
    with pytest.raises(ValueError, match="yuv422"):
        ros2.image_to_bgr(_msg(bgr, "yuv422"))
    short = _msg(bgr, "bgr8")
    short.data = short.data[:-1]
    with pytest.raises(ValueError, match="too small"):
        ros2.image_to_bgr(short)
    pred = SimpleNamespace(label="7", score=np.float32(0.5), topk=[("7", np.float32(0.5)), ("1", 0.25)])
    assert json.loads(ros2.result_json(pred, 1.5, "cam", 0.25)) == {
        "label": "7", "score": 0.5, "topk": [["7", 0.5], ["1", 0.25]], "stamp": 1.5, "frame_id": "cam",
        "latency_ms": 0.25}


@pytest.mark.slow
def test_folder_report_writes_a_csv_row_per_image_and_a_contact_sheet(model, tmp_path):
    from cnnedge.runtime import Classifier

    paths = write_folder(tmp_path / "photos", model, 30)
    res = run_example("folder_report", model.onnx, tmp_path / "photos", "--out", tmp_path / "report",
                      "--worst", 6)
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "report" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in paths)
    with Classifier(model.onnx) as clf:
        for r in rows:
            if r["path"].endswith("broken.jpg"):
                assert r["error"] and not r["label"]
                continue
            p = clf.predict(r["path"], topk=2)
            assert not r["error"] and r["label"] == p.label and float(r["score"]) == pytest.approx(p.score, abs=1e-5)
            assert r["second"] == p.topk[1][0] and r["truth"] == Path(r["path"]).parent.name
    sheet = cv2.imread(str(tmp_path / "report" / "least_confident.png"))
    assert sheet is not None and sheet.shape == (2 * (160 + 24), 4 * 160, 3)
    assert sheet.std() > 10  # images were drawn, not a blank page


@pytest.mark.slow
def test_triton_client_request_matches_the_repository_config(model, tmp_path):
    import tritonclient.http as httpclient
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from cnnedge.errors import UsageError
    from cnnedge.runtime import Classifier

    tc = load_example("triton_client")
    d = model.repo / model.name
    config = text_format.Parse((d / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "onnxruntime_onnx" and (d / "1" / "model.onnx").is_file()
    assert (d / "labels.txt").read_text().split() == list(model.card.classes)
    paths = write_folder(tmp_path / "photos", model, 12)[:12]
    with Classifier(d / "1" / "model.onnx") as clf:
        tensor = tc.prepare(clf, paths)
        inputs, outputs = tc.build_request(tensor, tc.read_config(model.repo, model.name))
        (inp,), (out,) = inputs, outputs
        cin, cout = config.input[0], config.output[0]
        assert inp.name() == cin.name and out.name() == cout.name
        assert "TYPE_" + inp.datatype() == model_config_pb2.DataType.Name(cin.data_type) == "TYPE_UINT8"
        assert inp.shape() == [12, *cin.dims] and 12 <= config.max_batch_size
        # the HTTP body tritonclient would send: a JSON header, then the raw tensor bytes
        body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
        header = json.loads(body[:json_size])
        assert header["inputs"] == [{"name": cin.name, "shape": [12, *cin.dims], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": tensor.nbytes}}]
        assert header["outputs"] == [{"name": cout.name, "parameters": {"binary_data": True}}]
        assert body[json_size:] == tensor.tobytes()
        # what the server answers is compared label by label with the local Classifier
        local = clf.infer(tensor)
        assert tc.compare(clf, tensor, local)[0] == [p.label for p in clf.predict_batch(paths)]
        swapped = local[[1, 0, *range(2, 12)]]
        rl, ll, diff = tc.compare(clf, tensor, swapped)
        assert ll == [p.label for p in clf.postprocess(local)]
        assert rl == [ll[1], ll[0], *ll[2:]]  # the swapped rows' labels, swapped back exactly
        assert diff == pytest.approx(float(np.abs(local[0].astype(np.float32) - local[1].astype(np.float32)).max()))
        # requests the server would refuse are refused here
        for bad, msg in ((tensor.astype(np.float32), "takes UINT8"), (tensor[:, :16], "takes \\[batch, 32, 32, 3\\]"),
                         (np.repeat(tensor, 3, axis=0), "allows 1..32")):
            with pytest.raises(UsageError, match=msg):
                tc.build_request(bad, config)
    # no server here: one line, no traceback
    res = run_example("triton_client", model.repo, model.name, tmp_path / "photos", "--url", "127.0.0.1:9")
    assert res.returncode == 1 and "cannot reach Triton at 127.0.0.1:9" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_ray_batch_one_result_per_file_equal_to_cnn_infer(model, tmp_path):
    pytest.importorskip("ray")
    from cnnedge.cli import run_cli
    from cnnedge.cli.infer import main as infer_main

    paths = write_folder(tmp_path / "photos", model, 120)
    out = tmp_path / "preds.jsonl"
    res = run_example("ray_batch", model.onnx, tmp_path / "photos", "--out", out, "--num-cpus", 2, "--actors", 2,
                      "--batch-size", 16, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in paths)  # every file exactly once
    assert all(r["model_loads"] == 1 for r in rows)  # the model was loaded once per actor
    workers = {}
    for r in rows:
        workers[r["worker"]] = workers.get(r["worker"], 0) + 1
    assert 1 <= len(workers) <= 2 and max(workers.values()) > 16  # an actor served several batches
    # the single-process run
    ref = tmp_path / "ref.jsonl"
    err = io.StringIO()
    code = run_cli("cnn-infer", lambda a: infer_main(a, io.StringIO(), err),
                   [str(model.onnx), "--source", str(tmp_path / "photos"), "--json", str(ref), "--quiet"], stderr=err)
    assert code == 0, err.getvalue()
    expected = {}
    for line in ref.read_text().splitlines():
        r = json.loads(line)
        expected[r["path"]] = r.get("label")
    got = {r["path"]: r["label"] for r in rows}
    assert got == expected
    broken = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert broken[0]["label"] is None and broken[0]["error"]
    assert sum(r["label"] is not None for r in rows) == len(paths) - 1
