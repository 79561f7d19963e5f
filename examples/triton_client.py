"""Ask a Triton Inference Server for the same answers cnn-infer gives, over HTTP or gRPC, and compare them.

Shows: serving a cnnedge model with Triton. ``cnn-export model.keras --triton
model_repository/`` writes two kinds of entry per artifact (see docs/export.md, "Triton repositories"):

- ``<name>_cnnedge`` (and ``<name>_fp16_engine_cnnedge``...): Triton's Python backend running
  cnnedge's runtime. This client sends each image file's encoded bytes as they are (input
  ``IMAGE``, uint8 [1, bytes]); the server decodes and preprocesses as cnn-infer does and answers
  ``PROBABILITIES``, ``CLASS`` and ``SCORE``. Any Triton with the Python backend serves it (the
  pytriton wheel's server too) when cnnedge is installed in the server's Python.
- ``<name>_onnxruntime`` / ``<name>_tensorrt``: Triton's own backends (the full Triton
  container). This client prepares the images exactly as the local ``Classifier`` does (the card
  inside the artifact says how) and sends the model's own uint8 tensor, built with tritonclient's
  ``InferInput`` checked against the entry's config.pbtxt (:func:`build_request`), in batches of
  at most ``max_batch_size``.

Either way the answers are compared with the local Classifier's: same top-1 label, max abs
difference of the scores. Exit status 0 when every label agrees.

Run:
    cnn-export runs/demo/model.keras --triton model_repository/
    (start a server: see docs/deploy.md, "Online serving with Triton")
    python examples/triton_client.py model_repository/ digits-cnn_cnnedge photos/ --url localhost:8000
    python examples/triton_client.py model_repository/ digits-cnn_cnnedge photos/ --grpc --url localhost:8001
Needs: pip install 'tritonclient[http,grpc]' (the cnnedge[triton] extra).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnedge.cli import run_cli
from cnnedge.errors import CnnEdgeError, UsageError
from cnnedge.runtime import Classifier
from cnnedge.imaging.normalize import to_model_input
from cnnedge.runtime.sources import folder_files


class TritonUnavailable(CnnEdgeError):
    """The server cannot be reached or does not serve the model."""


def read_config(repo: str | os.PathLike, model: str) -> Any:
    """``repo/model/config.pbtxt`` parsed into tritonclient's ``model_config_pb2.ModelConfig``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2  # the message types ship with the grpc flavour

    path = Path(repo) / model / "config.pbtxt"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc}); is {repo} a repository written by "
                         f"cnn-export --triton, and {model} one of its models?") from None
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def triton_dtype(config_type: int) -> str:
    """A config.pbtxt data type (TYPE_UINT8) -> the wire type of the HTTP/gRPC protocol (UINT8)."""
    from tritonclient.grpc import model_config_pb2

    name = model_config_pb2.DataType.Name(config_type)[len("TYPE_"):]
    return "BYTES" if name == "STRING" else name


def build_request(tensor: np.ndarray, config: Any, binary: bool = True) -> tuple[list[Any], list[Any]]:
    """The inputs and requested outputs of one inference request for ``tensor`` (one batch).

    Checks the tensor against the model's config: one input, its type, its dims
    after the batch dimension, and a batch of 1..max_batch_size. Raises UsageError
    when they differ (the server would refuse the request).
    """
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    if len(config.input) != 1 or len(config.output) != 1:
        raise UsageError(f"model {config.name}: expected one input and one output, the config has "
                         f"{len(config.input)} and {len(config.output)}")
    inp, out = config.input[0], config.output[0]
    want_type, got_type = triton_dtype(inp.data_type), np_to_triton_dtype(tensor.dtype)
    if got_type != want_type:
        raise UsageError(f"model {config.name}: input {inp.name!r} takes {want_type}, the images are {got_type}")
    dims = tuple(int(d) for d in inp.dims)
    if tensor.ndim != len(dims) + 1 or tuple(tensor.shape[1:]) != dims:
        raise UsageError(f"model {config.name}: input {inp.name!r} takes [batch, {', '.join(map(str, dims))}], "
                         f"the images are {list(tensor.shape)}")
    if not 1 <= tensor.shape[0] <= max(1, config.max_batch_size):
        raise UsageError(f"model {config.name}: a batch of {tensor.shape[0]} images; the config allows "
                         f"1..{config.max_batch_size}")
    infer_input = httpclient.InferInput(inp.name, list(tensor.shape), want_type)
    infer_input.set_data_from_numpy(np.ascontiguousarray(tensor), binary_data=binary)
    return [infer_input], [httpclient.InferRequestedOutput(out.name, binary_data=binary)]


def prepare(clf: Classifier, paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Image files -> the model-input batch, exactly as the local Classifier prepares them."""
    pixels = np.stack([clf.prepare(clf.load_image(p)) for p in paths])
    return to_model_input(pixels, clf.card.input, clf.card.preprocess)


def compare(clf: Classifier, tensor: np.ndarray, remote: np.ndarray) -> tuple[list[str], list[str], float]:
    """Triton's output vs the local Classifier's on the same batch: (remote labels, local labels, max abs diff)."""
    local = clf.infer(tensor)
    remote_labels = [p.label for p in clf.postprocess(remote)]
    local_labels = [p.label for p in clf.postprocess(local)]
    diff = float(np.max(np.abs(remote.astype(np.float32) - local.astype(np.float32)))) if remote.size else 0.0
    return remote_labels, local_labels, diff


def is_cnnedge_entry(config: Any) -> bool:
    """An entry that runs cnnedge's runtime in Triton's Python backend (encoded images in)."""
    return config.backend == "python" and any(i.name == "IMAGE" for i in config.input)


def local_artifact(repo: str | os.PathLike, model: str, config: Any) -> Path:
    """The artifact the entry serves: ``parameters.artifact`` of a cnnedge entry, else ``1/model.onnx``."""
    name = config.parameters["artifact"].string_value if "artifact" in config.parameters else "model.onnx"
    return Path(repo) / model / "1" / name


def connect(url: str, grpc: bool) -> Any:
    """tritonclient's HTTP or gRPC client (the same calls on both)."""
    if grpc:
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(url)
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url)


def ask_image(client: Any, grpc: bool, model: str, data: bytes) -> tuple[np.ndarray, int, float]:
    """One encoded image file to a cnnedge entry: (probabilities, top class index, its score)."""
    mod = __import__("tritonclient.grpc" if grpc else "tritonclient.http", fromlist=["InferInput"])
    raw = np.frombuffer(data, np.uint8)[None]
    inp = mod.InferInput("IMAGE", list(raw.shape), "UINT8")
    inp.set_data_from_numpy(raw)
    outs = [mod.InferRequestedOutput(n) for n in ("PROBABILITIES", "CLASS", "SCORE")]
    r = client.infer(model, [inp], outputs=outs)
    return r.as_numpy("PROBABILITIES")[0], int(r.as_numpy("CLASS")[0, 0]), float(r.as_numpy("SCORE")[0, 0])


def _compare_images(clf: Classifier, client: Any, grpc: bool, model: str, paths: list[Any]) -> tuple[int, float]:
    agree, worst = 0, 0.0
    for path in paths:
        probs, index, score = ask_image(client, grpc, model, Path(path).read_bytes())
        local = clf.predict(path)
        worst = max(worst, abs(score - local.score))
        agree += index == local.index
        if index != local.index:
            print(f"{path}: Triton says {clf.card.classes[index]}, local says {local.label}")
    return agree, worst


def _compare_tensors(clf: Classifier, client: Any, config: Any, model: str, paths: list[Any]) -> tuple[int, float]:
    agree, worst = 0, 0.0
    step = max(1, config.max_batch_size)
    for i in range(0, len(paths), step):
        chunk = paths[i:i + step]
        tensor = prepare(clf, chunk)
        inputs, outputs = build_request(tensor, config)
        result = client.infer(model, inputs, outputs=outputs)
        rl, ll, diff = compare(clf, tensor, result.as_numpy(config.output[0].name))
        worst = max(worst, diff)
        for path, r, l_ in zip(chunk, rl, ll):
            agree += r == l_
            if r != l_:
                print(f"{path}: Triton says {r}, local says {l_}")
    return agree, worst


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="triton_client.py", description=__doc__.split("\n")[0])
    p.add_argument("repo", help="the model repository written by cnn-export --triton (e.g. model_repository/)")
    p.add_argument("model", help="an entry of it (a folder, e.g. digits-cnn_cnnedge or digits-cnn_onnxruntime)")
    p.add_argument("images", help="a folder of images (e.g. photos/)")
    p.add_argument("--url", default=None, help="Triton's endpoint (default localhost:8000, with --grpc localhost:8001)")
    p.add_argument("--grpc", action="store_true", help="ask over gRPC instead of HTTP")
    p.add_argument("--local", help="the model the local Classifier runs (default: the artifact the entry serves)")
    p.add_argument("--limit", type=int, default=256, help="at most this many images (default 256)")
    args = p.parse_args(argv)
    url = args.url or ("localhost:8001" if args.grpc else "localhost:8000")
    config = read_config(args.repo, args.model)
    local = Path(args.local) if args.local else local_artifact(args.repo, args.model, config)
    paths = folder_files(Path(args.images))[0][:args.limit] if Path(args.images).is_dir() else []
    if not paths:
        raise UsageError(f"{args.images}: no image files")
    client = connect(url, args.grpc)
    try:
        ready = client.is_server_live() and client.is_model_ready(args.model)
    except Exception as exc:  # noqa: BLE001 - connection refused, DNS, timeouts: all mean "no server here"
        raise TritonUnavailable(f"cannot reach Triton at {url} ({type(exc).__name__}: {exc}); start it with "
                                f"tritonserver --model-repository={args.repo}") from None
    if not ready:
        raise TritonUnavailable(f"Triton at {url} is up but model {args.model!r} is not ready; see the "
                                "server's log")
    with Classifier(local) as clf:
        if is_cnnedge_entry(config):
            agree, worst = _compare_images(clf, client, args.grpc, args.model, paths)
        else:
            agree, worst = _compare_tensors(clf, client, config, args.model, paths)
    print(f"{agree}/{len(paths)} labels agree between Triton ({url}, {'gRPC' if args.grpc else 'HTTP'}, "
          f"{args.model}) and the local Classifier ({local.name}); max abs score difference {worst:.2e}")
    return 0 if agree == len(paths) else 1


if __name__ == "__main__":
    sys.exit(run_cli("triton_client.py", main))
