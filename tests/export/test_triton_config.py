"""Triton entries from hostile names (issue 33): config.pbtxt parsed by Triton's own model-config protobuf."""
from __future__ import annotations

from pathlib import Path

import pytest


def _card(classes=("cat", "dog")):
    from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess

    return ModelCard(name="net", classes=tuple(classes), input=InputSpec(32, 32, 3, "NHWC", "uint8", "RGB"),
                     preprocess=Preprocess(scale=1 / 255))


def _parse(text: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("name", ['in"put', "in\nput", "back\\slash", 'x"\ninput [ { name: "evil" } ]'])
def test_an_input_name_with_quotes_or_line_breaks_stays_one_name(name):
    from cnnedge.export.triton import TritonModel, cnnedge_config_text, config_text

    m = TritonModel("net_onnxruntime", Path('a"b\n.onnx'), "onnxruntime", name, 'out"\n')
    cfg = _parse(config_text(m, _card(), 32))
    assert [i.name for i in cfg.input] == [name] and [o.name for o in cfg.output] == ['out"\n']
    assert cfg.max_batch_size == 32 and list(cfg.input[0].dims) == [32, 32, 3]
    cnn = _parse(cnnedge_config_text(TritonModel("net_cnnedge", Path('a"b\n.onnx'), "cnnedge", name, "o"), _card(),
                                     32))
    assert cnn.parameters["artifact"].string_value == 'a"b\n.onnx'
    assert cnn.parameters["backend"].string_value == "auto"  # cnnedge's backend choice, edited by hand to force one


def test_a_fixed_batch_graph_is_declared_unbatched_with_its_batch_in_the_dims():
    from cnnedge.export.triton import TritonModel, config_text

    cfg = _parse(config_text(TritonModel("net_onnxruntime", Path("m.onnx"), "onnxruntime", "x", "y"), _card(), 32,
                             fixed_batch=11))
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [11, 32, 32, 3] and list(cfg.output[0].dims) == [11, 2]


def test_a_class_name_with_a_line_break_is_refused_before_anything_is_written(tmp_path):
    from cnnedge.errors import UsageError
    from cnnedge.export.triton import TritonModel, write_model

    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not used")
    with pytest.raises(UsageError, match="line break"):
        write_model(tmp_path / "repo", TritonModel("net", onnx_file, "onnxruntime", "x", "y"),
                    _card(("cat", "dog\nbird")), 8, False)
    assert not (tmp_path / "repo").exists()


def test_a_labels_file_with_a_utf8_bom_keeps_no_bom_in_the_first_name(tmp_path):
    from cnnedge.runtime.labels import read_labels

    f = tmp_path / "labels.txt"
    f.write_bytes("\ufeffcat\ndog\n".encode("utf-8"))
    assert read_labels(f) == ("cat", "dog")


def test_an_unknown_backend_parameter_is_refused_at_load_in_one_line(tmp_path):
    """What Triton's Python backend hands the entry's initialize(): the config as JSON, the repository and version."""
    import json

    from cnnedge.errors import CnnEdgeError
    from cnnedge.serve.triton_python import load_entry

    params = {"artifact": {"string_value": "model.onnx"}, "backend": {"string_value": "tensorflow"}}
    args = {"model_config": json.dumps({"parameters": params}), "model_name": "net_cnnedge",
            "model_repository": str(tmp_path), "model_version": "1"}
    with pytest.raises(CnnEdgeError) as err:
        load_entry(args)
    text = str(err.value)
    assert "\n" not in text and text.startswith("net_cnnedge: config.pbtxt's parameter backend is 'tensorflow'")
    assert "openvino" in text and "ort-cpu" in text
