"""A real Triton Inference Server loads the repository ``cnn-export --triton`` writes and answers as
cnn-infer does.

The server is the ``tritonserver`` of the pinned ``nvidia-pytriton`` wheel (tests/triton_server.py;
``make test`` downloads it, sha256-checked; without it these tests skip, saying so). It has the
Python backend only: the ``_cnnedge`` entries load, the ``_onnxruntime`` ones are refused for want
of the backend (their config.pbtxt is checked against Triton's schema in test_export.py). One server
for the module, on 127.0.0.1 with free ports, stopped whatever happens.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import triton_server as TS

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 64


@pytest.fixture(scope="module")
def server_root():
    root = TS.unpacked()
    if root is None:
        pytest.skip(f"{TS.REQ} is not in tests/.wheels with its pinned sha256 (run `make models-for-tests` where "
                    "PyPI is reachable): no Triton server to test against")
    return root


@pytest.fixture(scope="module")
def exported(demo_trained, tmp_path_factory):
    """digits-cnn trained briefly (the session's), exported with FP16, a TensorRT-RTX plan (when tensorrt_rtx
    imports) and a Triton repository; the demo's test images written as PNG files."""
    from cnnedge.datasets import split_images
    from cnnedge.export import export

    base, result = tmp_path_factory.mktemp("triton"), demo_trained.result
    try:
        import tensorrt_rtx  # noqa: F401
        engine = True
    except ImportError:
        engine = False
    report = export(demo_trained.run / "model.keras", base / "out", fp16=True, engine=engine,
                    gpu="sm89" if engine else None, triton=base / "repo", verify_size=100)
    images, _, _ = split_images(result.card.provenance.dataset_spec, "test")
    photos = base / "photos"
    photos.mkdir()
    paths = []
    for i, im in enumerate(images[:N_IMAGES]):
        p = photos / f"{i:03d}.png"
        assert cv2.imwrite(str(p), im)
        paths.append(p)
    written = sorted(Path(w).name for w in report.triton)
    openvino = openvino_entry(base / "repo", f"{result.card.name}_cnnedge")
    return SimpleNamespace(base=base, repo=base / "repo", out=base / "out", card=result.card, engine=engine,
                           paths=paths, written=written, openvino=openvino)


def openvino_entry(repo: Path, name: str) -> str | None:
    """A copy of entry ``name`` whose config's ``backend`` parameter says openvino, as a user would edit it; None
    where OpenVINO is not installed."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return None
    import shutil

    copy = name.replace("_cnnedge", "_openvino_cnnedge")
    shutil.copytree(repo / name, repo / copy)
    cfg = repo / copy / "config.pbtxt"
    text = cfg.read_text()
    assert 'key: "backend", value: { string_value: "auto" }' in text, text
    cfg.write_text(text.replace(f'name: "{name}"', f'name: "{copy}"')
                   .replace('key: "backend", value: { string_value: "auto" }',
                            'key: "backend", value: { string_value: "openvino" }'))
    return copy


@pytest.fixture(scope="module")
def server(exported, server_root):
    with TS.TritonServer(exported.repo, exported.base / "tritonserver.log", server_root) as s:
        yield s


def _get(server, path: str) -> object:
    with urllib.request.urlopen(f"http://{server.http}{path}", timeout=10) as r:
        return json.loads(r.read())


def _index(server) -> dict[str, dict]:
    req = urllib.request.Request(f"http://{server.http}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return {m["name"]: m for m in json.loads(r.read())}


def test_the_repository_loads_its_cnnedge_entries(exported, server):
    index = _index(server)
    name = exported.card.name
    assert {f"{name}_cnnedge", f"{name}_fp16_cnnedge", f"{name}_onnxruntime", f"{name}_fp16_onnxruntime"} <= set(index)
    assert set(index) == set(exported.written) | ({exported.openvino} if exported.openvino else set())
    for n in (f"{name}_cnnedge", f"{name}_fp16_cnnedge"):
        assert index[n]["state"] == "READY", index[n]
    for n in (f"{name}_onnxruntime", f"{name}_fp16_onnxruntime"):  # this server has no ONNX Runtime backend
        assert index[n]["state"] == "UNAVAILABLE" and "onnxruntime" in index[n]["reason"], index[n]
    log = server.log_text()
    for i in (0, 1):  # the instance group's two instances
        assert f"TRITONBACKEND_ModelInstanceInitialize: {name}_cnnedge_0_{i}" in log


def test_engine_entry_is_refused_in_one_line_naming_the_plan_without_a_gpu(exported, server):
    if not exported.engine:
        pytest.skip("tensorrt_rtx does not import here: no plan was built")
    name = f"{exported.card.name}_fp16_engine_cnnedge"
    entry = _index(server)[name]
    if entry["state"] == "READY":  # a GPU that runs the plan: it answers as the FP16 ONNX model does
        tc = _client()
        from cnnedge.runtime import Classifier

        with Classifier(exported.out / "model.fp16.onnx") as clf:
            want = clf.predict(exported.paths[0]).index
        assert tc.ask_image(tc.connect(server.http, False), False, name, exported.paths[0].read_bytes())[1] == want
        return
    first = entry["reason"].splitlines()[0]  # the Python backend appends the raising frames ("At: ...")
    assert entry["state"] == "UNAVAILABLE", entry
    assert "cannot serve model.fp16.engine" in first and "NVIDIA GPU" in first, entry["reason"]


def _local(exported):
    from cnnedge.runtime import Classifier

    with Classifier(exported.out / "model.onnx") as clf:
        return [clf.predict(p) for p in exported.paths], clf.card.classes


def _ask_all(server, name: str, paths: list[Path], clients: int = 4) -> dict[int, tuple]:
    """Every image's bytes to entry ``name`` from ``clients`` threads per protocol (HTTP and gRPC) at once."""
    tc = _client()
    answers: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def work(grpc: bool, start: int, step: int) -> None:
        try:
            client = tc.connect(server.grpc if grpc else server.http, grpc)
            for i in range(start, len(paths), step):
                answers[i] = (*tc.ask_image(client, grpc, name, paths[i].read_bytes()), grpc)
            client.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k % 2 == 1, k, 2 * clients)) for k in range(2 * clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return answers


def _client():
    from _examples import load_example

    return load_example("triton_client")


def test_image_bytes_over_http_and_grpc_match_the_local_classifier_and_batch(exported, server):
    name = f"{exported.card.name}_cnnedge"
    local, classes = _local(exported)
    before = _get(server, f"/v2/models/{name}/stats")["model_stats"][0]
    answers = _ask_all(server, name, exported.paths)
    assert sorted(answers) == list(range(len(exported.paths)))
    assert {a[3] for a in answers.values()} == {False, True}  # both protocols answered
    for i, (probs, index, score, _) in answers.items():
        assert index == local[i].index and classes[index] == local[i].label
        assert abs(score - local[i].score) <= 1e-6 and probs.shape == (len(classes),)
        assert abs(float(probs[index]) - score) <= 1e-7
    after = _get(server, f"/v2/models/{name}/stats")["model_stats"][0]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == len(exported.paths) and executions < inferences  # requests were batched


def test_an_entry_whose_backend_parameter_says_openvino_answers_as_the_local_openvino_classifier(exported, server):
    if exported.openvino is None:
        pytest.skip("OpenVINO is not installed (pip install 'cnnedge[openvino]')")
    from cnnedge.runtime import Classifier

    assert _index(server)[exported.openvino]["state"] == "READY"
    with Classifier(exported.out / "model.onnx", "openvino") as clf:
        local = [clf.predict(p) for p in exported.paths]
    answers = _ask_all(server, exported.openvino, exported.paths, clients=2)
    assert sorted(answers) == list(range(len(exported.paths)))
    for i, (_, index, score, _) in answers.items():
        assert index == local[i].index and abs(score - local[i].score) <= 1e-5, (i, score, local[i])


def test_label_through_the_classification_extension_and_prepared_pixels(exported, server):
    import tritonclient.http as httpclient

    from cnnedge.runtime import Classifier

    name = f"{exported.card.name}_cnnedge"
    client = httpclient.InferenceServerClient(server.http)
    with Classifier(exported.out / "model.onnx") as clf:
        pixels = np.stack([clf.decode_pixels(p.read_bytes()) for p in exported.paths[:8]])
        local = clf.postprocess(clf.infer_pixels(pixels), topk=1)
    inp = httpclient.InferInput("PIXELS", list(pixels.shape), "UINT8")
    inp.set_data_from_numpy(pixels)
    r = client.infer(name, [inp], outputs=[httpclient.InferRequestedOutput("PROBABILITIES", class_count=1),
                                           httpclient.InferRequestedOutput("SCORE")])
    tops = [row[0].decode().split(":") for row in r.as_numpy("PROBABILITIES")]  # score:index:label
    assert [t[2] for t in tops] == [p.label for p in local]
    assert np.abs(r.as_numpy("SCORE")[:, 0] - np.array([p.score for p in local])).max() <= 1e-6
    client.close()


def test_a_bad_image_fails_its_request_only_and_the_server_keeps_serving(exported, server):
    name = f"{exported.card.name}_cnnedge"
    tc = _client()
    bad = [b"not an image at all", exported.paths[0].read_bytes()[:40]]  # garbage, a truncated PNG
    results: dict[int, object] = {}

    def one(i: int, data: bytes) -> None:
        client = tc.connect(server.http, False)
        try:
            results[i] = tc.ask_image(client, False, name, data)
        except Exception as exc:  # noqa: BLE001 - the server's error answer, checked below
            results[i] = exc
        client.close()

    good = [p.read_bytes() for p in exported.paths[:14]]
    threads = [threading.Thread(target=one, args=(i, d)) for i, d in enumerate(bad + good)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i in range(len(bad)):
        assert isinstance(results[i], Exception) and "IMAGE row 0" in str(results[i]), results[i]
    assert all(isinstance(results[i], tuple) for i in range(len(bad), len(bad) + len(good)))
    local, _ = _local(exported)
    assert tc.ask_image(tc.connect(server.grpc, True), True, name, good[3])[1] == local[3].index


def test_a_bad_image_in_a_batch_fails_that_request_and_the_others_answer(exported):
    """The batch logic without the server: one inference for the requests that decoded."""
    from cnnedge.runtime import Classifier
    from cnnedge.serve.batch import answer_batch

    good = [np.frombuffer(p.read_bytes(), np.uint8)[None] for p in exported.paths[:3]]
    garbage = np.frombuffer(b"GIF89a but not really", np.uint8)[None]
    with Classifier(exported.out / "model.onnx") as clf:
        local = [clf.predict(p) for p in exported.paths[:3]]
        pixels = np.stack([clf.decode_pixels(p.read_bytes()) for p in exported.paths[3:5]])
        answers = answer_batch(clf, [(good[0], None), (garbage, None), (good[1], None), (None, pixels),
                                     (good[2], None), (None, None)])
        rest = clf.postprocess(clf.infer_pixels(pixels), topk=1)
    assert [a.error is None for a in answers] == [True, False, True, True, True, False]
    assert "IMAGE row 0" in answers[1].error and "exactly one of" in answers[5].error
    for a, p in zip([answers[0], answers[2], answers[4]], local):
        assert int(a.classes[0, 0]) == p.index and abs(float(a.scores[0, 0]) - p.score) <= 1e-6
    assert [int(c) for c in answers[3].classes[:, 0]] == [p.index for p in rest]


def test_the_client_example_asks_over_http_and_grpc(exported, server):
    name = f"{exported.card.name}_fp16_cnnedge"
    for extra in (["--url", server.http], ["--grpc", "--url", server.grpc]):
        res = subprocess.run([sys.executable, str(ROOT / "examples" / "triton_client.py"), str(exported.repo), name,
                              str(exported.base / "photos"), "--limit", "16", *extra], capture_output=True,
                             text=True, timeout=120, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        assert "16/16 labels agree" in res.stdout and ("gRPC" in res.stdout) == ("--grpc" in extra)
