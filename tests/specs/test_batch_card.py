"""Batch field checks and ModelCard validation / round trip."""

from __future__ import annotations

import json

import pytest
import torch

from specs import (
    IGNORE_INDEX,
    Batch,
    ConfigError,
    DataRef,
    FieldProblem,
    FileRef,
    ModelCard,
    ShapeError,
    dump_config,
    dumps_config,
    from_dict,
    load_config,
    load_preset,
    to_dict,
)

# ------------------------------------------------------------------------------------------------ Batch

B, T = 2, 5


def _ids(shape=(B, T), dtype=torch.int64):
    return torch.zeros(shape, dtype=dtype)


def test_full_batch_is_valid():
    labels = _ids()
    labels[:, -1] = IGNORE_INDEX
    batch = Batch(
        input_ids=_ids(),
        labels=labels,
        key_padding_mask=torch.zeros(B, T, dtype=torch.bool),
        positions=torch.arange(T).expand(B, T),
        document_ids=_ids(dtype=torch.int32),
    )
    assert batch.labels is labels and IGNORE_INDEX == -100


def test_minimal_batch():
    batch = Batch(input_ids=_ids())
    assert batch.labels is None and batch.key_padding_mask is None and batch.positions is None
    assert batch.document_ids is None


@pytest.mark.parametrize("dtype", [torch.int32, torch.float32, torch.bool])
def test_input_ids_dtype(dtype):
    with pytest.raises(ShapeError, match=r"input_ids: dtype \w+ not in \['int64'\]"):
        Batch(input_ids=_ids(dtype=dtype))


def test_input_ids_rank():
    with pytest.raises(ShapeError, match="input_ids: expected 2 dims \\(B, T\\), got shape \\[5\\]"):
        Batch(input_ids=torch.zeros(T, dtype=torch.int64))


@pytest.mark.parametrize(
    "field, good, bad_dtype",
    [
        ("labels", _ids(), torch.int32),
        ("key_padding_mask", torch.zeros(B, T, dtype=torch.bool), torch.int64),
        ("positions", _ids(dtype=torch.int32), torch.float32),
        ("document_ids", _ids(), torch.float32),
    ],
)
def test_optional_field_checks(field, good, bad_dtype):
    Batch(input_ids=_ids(), **{field: good})
    with pytest.raises(ShapeError, match=f"{field}: dim 'T' \\(axis 1\\) is {T + 1} but T = {T}"):
        Batch(input_ids=_ids(), **{field: torch.zeros(B, T + 1, dtype=good.dtype)})
    with pytest.raises(ShapeError, match=f"{field}: dim 'B' \\(axis 0\\) is {B + 1} but B = {B}"):
        Batch(input_ids=_ids(), **{field: torch.zeros(B + 1, T, dtype=good.dtype)})
    with pytest.raises(ShapeError, match=f"{field}: expected 2 dims"):
        Batch(input_ids=_ids(), **{field: torch.zeros(B, T, 1, dtype=good.dtype)})
    with pytest.raises(ShapeError, match=f"{field}: dtype {str(bad_dtype)[6:]} not in"):
        Batch(input_ids=_ids(), **{field: torch.zeros(B, T, dtype=bad_dtype)})


def test_positions_accept_int64_and_int32():
    Batch(input_ids=_ids(), positions=_ids(dtype=torch.int64))
    Batch(input_ids=_ids(), positions=_ids(dtype=torch.int32))


# ------------------------------------------------------------------------------------------------ ModelCard

SHA = "0123456789abcdef" * 4


def _card(**over):
    fields = dict(
        name="llama-tiny-run1",
        model_version="1.2.0",
        architecture="decoder",
        config=to_dict(load_preset("llama-tiny")),
        parameters=123_456,
        dtype="float32",
        tokenizer="byte",
        training_data=(DataRef(name="shakespeare", uri="file://data/input.txt", sha256=SHA),),
        metrics={"val_loss": 1.5, "ppl": 4.48},
        intended_use="tests",
        limitations="tiny",
        license="Apache-2.0",
        code_revision="9f38db8",
        parents=(SHA,),
        created_at="2024-01-01T00:00:00Z",
        files=(FileRef(path="model.safetensors", size=1024, sha256=SHA),),
    )
    fields.update(over)
    return ModelCard(**fields)


def test_card_round_trips(tmp_path):
    card = _card()
    data = to_dict(card)
    assert data["kind"] == "modelcard" and data["version"] == 1
    assert data["config"]["kind"] == "model" and data["config"]["version"] == 4
    assert json.loads(json.dumps(data)) == data
    assert from_dict(data) == card
    assert from_dict(json.loads(dumps_config(card, "json")), kind="modelcard") == card
    path = dump_config(card, tmp_path / "modelcard.json")
    back = load_config(path, kind="modelcard")
    assert back == card
    assert from_dict(back.config) == load_preset("llama-tiny")  # the embedded config is loadable


def test_minimal_card_defaults():
    card = from_dict(
        {
            "kind": "modelcard",
            "version": 1,
            "name": "m",
            "architecture": "decoder",
            "config": {"kind": "model", "version": 2},
            "parameters": 0,
            "dtype": "bfloat16",
            "created_at": "2024-01-01T00:00:00Z",
        }
    )
    assert card.training_data == () and card.files == () and card.parents == () and card.metrics == {}
    assert card.license == "unspecified" and card.tokenizer is None


def _card_dict(**over):
    data = to_dict(_card())
    data.update(over)
    return data


@pytest.mark.parametrize(
    "over, path",
    [
        ({"files": [{"path": "model.safetensors", "size": 1, "sha256": "abc"}]}, "files.0.sha256"),
        (
            {"files": [{"path": "a", "size": 1, "sha256": SHA}, {"path": "b", "size": 1, "sha256": SHA.upper()}]},
            "files.1.sha256",
        ),
        ({"training_data": [{"name": "d", "uri": "u", "sha256": "g" * 64}]}, "training_data.0.sha256"),
        ({"training_data": [{"name": "d", "uri": "u", "sha256": SHA + "0"}]}, "training_data.0.sha256"),
    ],
)
def test_bad_sha256_rejected_with_path(over, path):
    with pytest.raises(ConfigError) as info:
        from_dict(_card_dict(**over))
    assert len(info.value.problems) == 1
    got_path, reason = info.value.problems[0]
    assert got_path == path
    assert "not a lowercase hex sha256 digest" in reason


def test_bad_sha256_reason_names_the_file():
    with pytest.raises(ConfigError, match="files.0.sha256: weights.bin: not a lowercase hex sha256 digest: 'nope'"):
        from_dict(_card_dict(files=[{"path": "weights.bin", "size": 1, "sha256": "nope"}]))


@pytest.mark.parametrize("config", [{"version": 2}, {"kind": "model"}, {}])
def test_card_config_needs_kind_and_version(config):
    with pytest.raises(ConfigError) as info:
        from_dict(_card_dict(config=config))
    assert info.value.problems == [("config", "must be a serialised config with its kind and version")]


@pytest.mark.parametrize(
    "over, path",
    [
        ({"parameters": -1}, "parameters"),
        ({"parameters": 1.5}, "parameters"),
        ({"metrics": {"loss": "low"}}, "metrics.loss"),
        ({"files": [{"path": "a", "size": "1", "sha256": SHA}]}, "files.0.size"),
        ({"created_at": None}, "created_at"),
        ({"licence": "MIT"}, "licence"),
    ],
)
def test_card_field_errors(over, path):
    with pytest.raises(ConfigError) as info:
        from_dict(_card_dict(**over))
    assert [p for p, _ in info.value.problems] == [path]


def test_card_unknown_key_in_a_file_entry_is_rejected():
    with pytest.raises(ConfigError) as info:
        from_dict(_card_dict(files=[{"path": "a", "size": 1, "sha256": SHA, "sha265": SHA}]))
    assert info.value.problems[0][0] == "files.0.sha265"
    assert info.value.problems[0][1].startswith("unknown key")


def test_direct_construction_validates_refs():
    with pytest.raises(FieldProblem, match="sha256"):
        DataRef(name="d", uri="u", sha256="x")
    with pytest.raises(FieldProblem, match="sha256"):
        FileRef(path="p", size=1, sha256="x")
    with pytest.raises(FieldProblem, match="config"):
        _card(config={"d_model": 3})


def test_card_typo_in_a_file_entry_suggests_the_key():
    with pytest.raises(ConfigError) as info:
        from_dict(_card_dict(files=[{"path": "a", "size": 1, "sha256": SHA, "sha265": SHA}]))
    assert info.value.problems[0][1] == "unknown key; did you mean 'sha256'?"
