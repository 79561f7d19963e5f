"""The model card: round trips, strict validation, bounded untrusted reads."""
from __future__ import annotations

import json

import pytest

from cnnedge.artifact.card import (CARD_VERSION, MAX_CARD_BYTES, InputSpec, ModelCard, Preprocess, Provenance,
                          card_path_for)
from cnnedge.errors import CardError


def make_card(**kw) -> ModelCard:
    base = dict(name="digits-cnn", classes=[str(i) for i in range(10)],
                input=InputSpec(height=32, width=32, channels=3, dtype="float32", color="RGB"),
                preprocess=Preprocess(resize="stretch", scale=1 / 255, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]),
                provenance=Provenance(dataset="digits", versions={"keras": "3"}, created="2026-11-23T00:00:00+00:00"))
    base.update(kw)
    return ModelCard(**base)


def test_round_trip_json_and_file(tmp_path):
    card = make_card()
    assert ModelCard.from_json(card.to_json()) == card
    path = card.save(tmp_path / "card.json")
    assert ModelCard.load(path) == card
    assert json.loads(path.read_text())["version"] == 1  # nothing of version 2 used: older readers read it
    newer = make_card(preprocess=Preprocess(resize="shorter", crop_pct=0.875, interpolation="cubic"))
    assert newer.to_dict()["version"] == CARD_VERSION == 2
    assert ModelCard.from_json(newer.to_json()) == newer


def test_version_1_cards_read_with_defaults_and_refuse_version_2_fields():
    d = make_card().to_dict()
    assert d["version"] == 1 and "crop_pct" not in d["preprocess"]
    card = ModelCard.from_dict(d)
    assert card.preprocess.crop_pct == 1.0 and card.preprocess.interpolation == "auto"
    d["preprocess"]["crop_pct"] = 0.9
    with pytest.raises(CardError, match="unknown field"):
        ModelCard.from_dict(d)
    d["preprocess"].pop("crop_pct")
    d["preprocess"]["resize"] = "pad"
    with pytest.raises(CardError, match="needs card version 2"):
        ModelCard.from_dict(d)


def test_replace_nested():
    card = make_card()
    onnx_card = card.replace(input={"dtype": "uint8"}, precision="int8")
    assert onnx_card.input.dtype == "uint8" and onnx_card.input.height == 32
    assert onnx_card.precision == "int8" and card.precision == "fp32"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=99), "version 99 is not supported"),
    (lambda d: d.pop("classes"), "missing field 'classes'"),
    (lambda d: d["input"].pop("height"), "missing field 'input.height'"),
    (lambda d: d["input"].update(height="32"), "input.height must be an integer"),
    (lambda d: d["input"].update(height=True), "input.height must be an integer, found a boolean"),
    (lambda d: d["input"].update(layout="HWC"), "input.layout is 'HWC'"),
    (lambda d: d["preprocess"].update(resize="squash"), "preprocess.resize is 'squash'"),
    (lambda d: d["preprocess"].update(std=[0, 1, 1]), "std must not contain 0"),
    (lambda d: d["preprocess"].update(mean=[0.1, 0.2]), "mean has 2 values for 3 channel(s)"),
    (lambda d: d.update(output="softmax"), "output is 'softmax'"),
    (lambda d: d.update(classes=["only"]), "at least 2 classes"),
    (lambda d: d.update(classes=["a", "a", "b"]), "duplicates"),
    (lambda d: d.update(surprise=1), "unknown field(s) surprise"),
    (lambda d: d["provenance"].update(versions={"keras": 3}), "provenance.versions['keras'] must be a string"),
    (lambda d: d["input"].update(channels=1), "does not fit 1 channel"),
    (lambda d: d["input"].update(height=10**9), "input.height must be between 1 and"),
    (lambda d: d["preprocess"].update(scale=float("nan")), "scale must be a finite number other than 0"),
    (lambda d: d["preprocess"].update(scale=0), "scale must be a finite number other than 0"),
    (lambda d: d["preprocess"].update(std=[float("inf")] * 3), "std[0] must be finite"),
    (lambda d: d["preprocess"].update(std=[0.5, 0, 1]), "std must not contain 0"),
    (lambda d: d.update(version=2) or d["preprocess"].update(crop_pct=0, pad_value=0, interpolation="auto"),
     "crop_pct must be above 0"),
    (lambda d: d.update(version=2) or d["preprocess"].update(crop_pct=1, pad_value=300, interpolation="auto"),
     "pad_value must be from 0 to 255"),
    (lambda d: d.update(version=2) or d["preprocess"].update(crop_pct=1, pad_value=0, interpolation="nearest"),
     "preprocess.interpolation is 'nearest'"),
    (lambda d: d.update(version=2) or d["preprocess"].update(resize="pad", crop_pct=0.5, pad_value=0,
                                                              interpolation="auto"),
     "crop_pct applies to stretch"),
    (lambda d: d.update(version=2), "missing field 'preprocess.crop_pct'"),
    (lambda d: d.update(classes=["a", " "]), "classes[1] is an empty name"),
])
def test_invalid_cards_are_refused(mutate, message):
    d = make_card().to_dict()
    mutate(d)
    with pytest.raises(CardError) as exc:
        ModelCard.from_dict(d)
    assert message in str(exc.value)


def test_garbage_and_oversized_files(tmp_path):
    bad = tmp_path / "card.json"
    bad.write_text("{not json")
    with pytest.raises(CardError, match="not valid JSON"):
        ModelCard.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(CardError, match="must be an object"):
        ModelCard.load(bad)
    bad.write_bytes(b" " * (MAX_CARD_BYTES + 1))
    with pytest.raises(CardError, match="larger than"):
        ModelCard.load(bad)
    with pytest.raises(CardError, match="cannot read"):
        ModelCard.load(tmp_path / "missing.json")
    bad.write_text("[" * 200_000 + "]" * 200_000)  # under the size limit, deeper than the parser's stack
    with pytest.raises(CardError, match="nested too deeply"):
        ModelCard.load(bad)


def test_engine_sidecar_garbage_is_a_card_error(tmp_path):
    from cnnedge.artifact.sidecar import EngineSidecar

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "model.engine.json").write_text("{" * 100_000)
    with pytest.raises(CardError, match="not valid JSON"):
        EngineSidecar.load(engine)


def test_card_paths():
    assert card_path_for("run/model.keras").as_posix() == "run/card.json"
    assert card_path_for("run/legacy.h5").as_posix() == "run/card.json"  # export and the runtime agree
    assert card_path_for("run/model.int8.engine").as_posix() == "run/model.int8.engine.json"


def test_cli_turns_file_system_errors_into_one_line(tmp_path):
    import io

    from cnnedge.cli._run import run_cli

    def main(argv):
        (tmp_path / "missing" / "x.txt").write_text("x")

    err = io.StringIO()
    assert run_cli("cnn-test", main, [], stderr=err) == 1
    assert err.getvalue().count("\n") == 1 and "missing/x.txt: No such file or directory" in err.getvalue()

    def bug(argv):
        raise OSError("no file involved: a bug keeps its traceback")

    with pytest.raises(OSError):
        run_cli("cnn-test", bug, [], stderr=io.StringIO())
