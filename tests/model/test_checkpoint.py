"""Checkpoint directories: round trips, sharding, the card, tamper detection and atomic writes."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

import model.checkpoint as checkpoint
from model import build, count_parameters
from model.card_writer import make_card
from model.checkpoint import load_checkpoint, save_checkpoint
from specs import ModelCard, dump_config, load_config, load_preset, to_dict
from specs.errors import CheckpointError
from specs.manifest import verify_manifest, write_manifest

MODEL_DIR = Path(checkpoint.__file__).parent
SHARD = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")


def _model(preset: str, seed: int = 0, dtype: torch.dtype | None = None):
    torch.manual_seed(seed)
    m = build(load_preset(preset), dtype=dtype).eval()
    assert (m.lm_head.weight is m.tok_embeddings.weight) == m.config.tie_embeddings
    return m


def _ids(cfg, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(seed))


def _assert_same(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    ids = _ids(a.config)
    with torch.no_grad():
        assert torch.equal(a(ids), b(ids))


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def llama():
    return _model("llama-tiny")


@pytest.fixture(scope="module")
def shakespeare():
    return _model("gpt-shakespeare-char")


@pytest.fixture
def sharded(tmp_path, llama):
    total = sum(t.numel() * t.element_size() for t in llama.state_dict().values())
    return save_checkpoint(llama, tmp_path / "ckpt", max_shard_bytes=total // 4)


# ---------------------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt-shakespeare-char"])
def test_round_trip_is_exact(tmp_path, preset):
    m = _model(preset)
    out = save_checkpoint(m, tmp_path / "ckpt")
    assert out == tmp_path / "ckpt"
    assert sorted(p.name for p in out.iterdir()) == [
        "MANIFEST.json",
        "config.json",
        "model.safetensors",
        "modelcard.json",
    ]
    assert load_config(out / "config.json", kind="model") == m.config
    loaded = load_checkpoint(out)
    assert not loaded.training and type(loaded) is type(m) and loaded.config == m.config
    _assert_same(m, loaded)
    assert _leftovers(tmp_path) == []


def test_tied_weights_stored_once_and_retied(tmp_path, shakespeare):
    assert shakespeare.config.tie_embeddings
    out = save_checkpoint(shakespeare, tmp_path / "ckpt")
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        keys = set(fh.keys())
        assert fh.metadata() == {"format": "pt"}
    assert "lm_head.weight" not in keys and "tok_embeddings.weight" in keys
    loaded = load_checkpoint(out)
    assert loaded.lm_head.weight is loaded.tok_embeddings.weight
    assert sum(p.numel() for p in loaded.parameters()) == count_parameters(shakespeare.config)


def test_untied_model_keeps_both_matrices(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert set(fh.keys()) == set(llama.state_dict())
    loaded = load_checkpoint(out)
    assert loaded.lm_head.weight is not loaded.tok_embeddings.weight


def test_memory_shared_outside_the_architecture_is_copied(tmp_path):
    m = _model("llama-tiny")
    m.lm_head.weight = m.tok_embeddings.weight  # tied by hand; the config does not tie them
    out = save_checkpoint(m, tmp_path / "ckpt")
    loaded = load_checkpoint(out)
    assert loaded.lm_head.weight is not loaded.tok_embeddings.weight
    _assert_same(m, loaded)


def test_tied_config_with_diverged_head_refuses_to_save(tmp_path):
    m = _model("gpt-shakespeare-char")
    m.lm_head.weight = torch.nn.Parameter(m.tok_embeddings.weight.detach() + 1)
    with pytest.raises(ValueError, match="lm_head.weight is not tied to tok_embeddings.weight"):
        save_checkpoint(m, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt-shakespeare-char"])
def test_bfloat16_round_trip(tmp_path, preset):
    m = _model(preset, dtype=torch.bfloat16)
    out = save_checkpoint(m, tmp_path / "ckpt")
    loaded = load_checkpoint(out)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    _assert_same(m, loaded)
    assert json.loads((out / "modelcard.json").read_text())["dtype"] == "bfloat16"
    as_float = load_checkpoint(out, dtype=torch.float32)
    _assert_same(m.float(), as_float)
    if m.config.tie_embeddings:
        assert as_float.lm_head.weight is as_float.tok_embeddings.weight


def test_load_on_an_explicit_device(tmp_path, llama):
    loaded = load_checkpoint(save_checkpoint(llama, tmp_path / "ckpt"), device=torch.device("cpu"))
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}


# ------------------------------------------------------------------------------------------------------- sharding


def test_sharded_save_writes_hf_layout_and_loads_back(sharded, llama):
    shards = sorted(p.name for p in sharded.iterdir() if SHARD.fullmatch(p.name))
    assert len(shards) > 1
    assert all(SHARD.fullmatch(s).group(2) == f"{len(shards):05d}" for s in shards)
    assert [int(SHARD.fullmatch(s).group(1)) for s in shards] == list(range(1, len(shards) + 1))
    assert not (sharded / "model.safetensors").exists()
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert set(index) == {"metadata", "weight_map"}
    state = llama.state_dict()
    assert index["metadata"] == {"total_size": sum(t.numel() * t.element_size() for t in state.values())}
    assert set(index["weight_map"]) == set(state)
    assert set(index["weight_map"].values()) == set(shards)
    for shard in shards:
        with safe_open(str(sharded / shard), framework="pt") as fh:
            assert fh.metadata() == {"format": "pt"}
            assert {k for k, v in index["weight_map"].items() if v == shard} == set(fh.keys())
    _assert_same(llama, load_checkpoint(sharded))


def test_sharding_is_greedy_in_state_dict_order(tmp_path, llama):
    state = llama.state_dict()
    limit = sum(t.numel() * t.element_size() for t in state.values()) // 3
    out = save_checkpoint(llama, tmp_path / "ckpt", max_shard_bytes=limit)
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    order = [weight_map[k] for k in state]
    assert order == sorted(order)  # shards fill in state-dict order
    for shard in set(order):
        members = [k for k in state if weight_map[k] == shard]
        size = sum(state[k].numel() * state[k].element_size() for k in members)
        assert size <= limit or len(members) == 1


def test_no_sharding_when_everything_fits(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt", max_shard_bytes=10**12)
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()


def test_tied_sharded_round_trip(tmp_path, shakespeare):
    out = save_checkpoint(shakespeare, tmp_path / "ckpt", max_shard_bytes=200_000)
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert "lm_head.weight" not in weight_map
    loaded = load_checkpoint(out)
    assert loaded.lm_head.weight is loaded.tok_embeddings.weight
    _assert_same(shakespeare, loaded)


@settings(max_examples=8, deadline=None)
@given(max_shard_bytes=st.one_of(st.none(), st.integers(min_value=1, max_value=500_000)))
def test_round_trip_property(llama, max_shard_bytes):
    with tempfile.TemporaryDirectory() as tmp:
        out = save_checkpoint(llama, Path(tmp) / "ckpt", max_shard_bytes=max_shard_bytes)
        assert verify_manifest(out) == []
        _assert_same(llama, load_checkpoint(out))


def test_invalid_max_shard_bytes(tmp_path, llama):
    with pytest.raises(ValueError, match="max_shard_bytes"):
        save_checkpoint(llama, tmp_path / "ckpt", max_shard_bytes=0)


# ----------------------------------------------------------------------------------------------------------- card


def test_card_lists_files_with_their_sha256(sharded, llama):
    card = load_config(sharded / "modelcard.json", kind="modelcard")
    assert isinstance(card, ModelCard)
    weights = sorted(p.name for p in sharded.iterdir() if p.name.startswith("model") and p.name != "modelcard.json")
    assert sorted(f.path for f in card.files) == sorted([*weights, "config.json"])
    for ref in card.files:
        data = (sharded / ref.path).read_bytes()
        assert ref.size == len(data) and ref.sha256 == hashlib.sha256(data).hexdigest()
    assert card.parameters == count_parameters(llama.config)
    assert card.config == to_dict(llama.config) and card.architecture == "decoder"
    assert card.name == "llama-tiny" and card.dtype == "float32"
    assert datetime.strptime(card.created_at, "%Y-%m-%dT%H:%M:%SZ")


def test_tied_card_counts_parameters_once(tmp_path, shakespeare):
    card = load_config(save_checkpoint(shakespeare, tmp_path / "c") / "modelcard.json", kind="modelcard")
    assert card.parameters == count_parameters(shakespeare.config)
    assert card.parameters < sum(t.numel() for t in shakespeare.state_dict().values())


def test_given_card_is_kept_with_files_replaced(tmp_path, llama):
    mine = make_card(
        llama, [], name="my-model", license="apache-2.0", metrics={"val_loss": 1.5}, parents=("sha256:" + "a" * 64,)
    )
    out = save_checkpoint(llama, tmp_path / "ckpt", card=mine)
    card = load_config(out / "modelcard.json", kind="modelcard")
    assert (card.name, card.license, card.metrics, card.parents) == (
        "my-model",
        "apache-2.0",
        {"val_loss": 1.5},
        ("sha256:" + "a" * 64,),
    )
    assert sorted(f.path for f in card.files) == ["config.json", "model.safetensors"]


def test_card_for_another_config_is_refused(tmp_path, llama, shakespeare):
    with pytest.raises(ValueError, match="card.config"):
        save_checkpoint(llama, tmp_path / "ckpt", card=make_card(shakespeare, []))
    assert not (tmp_path / "ckpt").exists()


# ----------------------------------------------------------------------------------------------- tamper detection


def _problems(path: Path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    return str(info.value)


def test_flipped_byte_in_a_shard_is_named(sharded):
    shard = sorted(sharded.glob("model-00002-*.safetensors"))[0]
    _flip(shard, shard.stat().st_size - 5)  # in the tensor data: the header stays valid
    message = _problems(sharded)
    assert f"{shard.name}: sha256" in message
    assert message.count("\n") == 0  # exactly one problem


def test_truncated_shard(sharded):
    shard = sorted(sharded.glob("model-00001-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    assert f"{shard.name}: size" in _problems(sharded)
    assert "truncated or extended" in _problems(sharded)


def test_missing_shard(sharded):
    shard = sorted(sharded.glob("model-00001-*.safetensors"))[0]
    shard.unlink()
    assert f"{shard.name}: listed in MANIFEST.json but missing" in _problems(sharded)
    assert f"{shard.name}: missing (named by model.safetensors.index.json" in _problems(sharded, verify=False)


def test_deleted_config(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    (out / "config.json").unlink()
    assert "config.json: listed in MANIFEST.json but missing" in _problems(out)
    assert "config.json: missing" in _problems(out, verify=False)


def test_edited_config_caught_by_sha(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    text = (out / "config.json").read_text()
    edited = text.replace('"n_layers": 2', '"n_layers": 3')
    assert edited != text and len(edited) == len(text)
    (out / "config.json").write_text(edited)
    load_config(out / "config.json", kind="model")  # still a valid config
    assert "config.json: sha256" in _problems(out)


def test_edited_manifest_caught_by_content_id(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    manifest = json.loads((out / "MANIFEST.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    (out / "MANIFEST.json").write_text(json.dumps(manifest))
    message = _problems(out)
    assert "MANIFEST.json: content_id" in message and f"{manifest['files'][0]['path']}: sha256" in message


def test_missing_manifest(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    (out / "MANIFEST.json").unlink()
    assert "MANIFEST.json: missing" in _problems(out)
    _assert_same(llama, load_checkpoint(out, verify=False))


def test_extra_unlisted_file(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    (out / "notes.txt").write_text("hello")
    assert "notes.txt: present but not listed" in _problems(out)


def test_train_state_is_covered_by_the_manifest(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    (out / "train_state").mkdir()
    (out / "train_state" / "rng.json").write_text("{}")
    assert "train_state/rng.json: present but not listed" in _problems(out)
    write_manifest(out)
    load_checkpoint(out)
    (out / "train_state" / "rng.json").write_text("[]")
    assert "train_state/rng.json: sha256" in _problems(out)


def test_all_problems_reported_before_any_tensor_is_read(sharded, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a tensor was read before the manifest was verified")

    import model.loading

    monkeypatch.setattr(model.loading, "safe_open", forbidden)
    shards = sorted(sharded.glob("model-*.safetensors"))
    _flip(shards[0], shards[0].stat().st_size - 1)
    shards[1].unlink()
    (sharded / "extra").write_text("x")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(sharded)
    assert len(info.value.problems) == 3
    assert str(info.value).count("\n") == 3  # header line + one line per problem


def test_not_a_checkpoint(tmp_path):
    assert "no such checkpoint directory" in _problems(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    assert "not a directory" in _problems(tmp_path / "file")


def test_garbage_header_with_verify_off(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    (out / "model.safetensors").write_bytes(b"\xff" * 64)
    assert "model.safetensors: not a readable safetensors file" in _problems(out, verify=False)


def _reconfigure(out: Path, **changes) -> None:
    """Replace config.json and re-sign the manifest, so only the loader's own checks can object."""
    from dataclasses import replace

    cfg = load_config(out / "config.json", kind="model")
    (out / "config.json").unlink()
    dump_config(replace(cfg, **changes), out / "config.json")
    write_manifest(out)


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    _reconfigure(out, vocab_size=300)
    message = _problems(out)
    assert "'tok_embeddings.weight' has shape [256, 64]" in message and "expects [300, 64]" in message
    assert "'lm_head.weight' has shape [256, 64]" in message


def test_missing_tensors_are_named(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    _reconfigure(out, n_layers=3)
    message = _problems(out)
    assert "missing tensor 'layers.2.attn.wq.weight' (shape [64, 64]): not in model.safetensors" in message
    assert "layers.1." not in message


def test_unexpected_tensors_are_named(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    _reconfigure(out, n_layers=1)
    message = _problems(out)
    assert "model.safetensors: unexpected tensor 'layers.1." in message


def test_untied_weights_under_a_tied_config_are_unexpected(tmp_path, llama):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    _reconfigure(out, tie_embeddings=True)
    assert "unexpected tensor 'lm_head.weight'; the config ties it to 'tok_embeddings.weight'" in _problems(out)


# ------------------------------------------------------------------------------------------------------- atomicity


def _failing_save_file(monkeypatch, fail_on_call: int) -> None:
    real = checkpoint.save_file
    calls = {"n": 0}

    def save_file(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            raise RuntimeError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)


def test_failure_midway_leaves_nothing(tmp_path, llama, monkeypatch):
    _failing_save_file(monkeypatch, fail_on_call=2)
    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(llama, tmp_path / "ckpt", max_shard_bytes=100_000)
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_is_not_overwritten_by_default(tmp_path, llama, shakespeare):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError):
        save_checkpoint(shakespeare, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces(tmp_path, llama, shakespeare):
    out = save_checkpoint(llama, tmp_path / "ckpt", max_shard_bytes=100_000)
    save_checkpoint(shakespeare, out, overwrite=True)
    assert not list(out.glob("model-*"))  # nothing of the old checkpoint survives
    _assert_same(shakespeare, load_checkpoint(out))
    assert _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_old_checkpoint(tmp_path, llama, shakespeare, monkeypatch):
    out = save_checkpoint(llama, tmp_path / "ckpt")
    _failing_save_file(monkeypatch, fail_on_call=1)
    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(shakespeare, out, overwrite=True)
    assert verify_manifest(out) == []
    _assert_same(llama, load_checkpoint(out))
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------- no pickle


def test_model_plane_never_unpickles():
    offenders = []
    for file in sorted(MODEL_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute) and node.attr == "load":
                names = [ast.unparse(node)]
            else:
                continue
            for name in names:
                if name.split(".")[0] in ("pickle", "cPickle", "dill", "_pickle") or name == "torch.load":
                    offenders.append(f"{file.name}:{node.lineno}: {name}")
    assert offenders == []


def test_compiled_model_saves_as_the_module_it_wraps(tmp_path):
    m = _model("llama-tiny")
    compiled = torch.compile(m, backend="eager")
    path = save_checkpoint(compiled, tmp_path / "ckpt")
    ids = _ids(m.config)
    assert torch.equal(load_checkpoint(path)(ids), m(ids))


def test_tensors_the_config_does_not_describe_are_refused_before_writing(tmp_path):
    m = _model("llama-tiny")
    m.register_buffer("extra", torch.zeros(3))
    with pytest.raises(ValueError, match="unexpected extra"):
        save_checkpoint(m, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_checkpoint_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(_model("llama-tiny"), tmp_path / "ckpt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in path.iterdir()} == {0o644}


# ------------------------------------------------------------------------------- every listed file is checked


@pytest.mark.parametrize(
    "victim", ["config.json", "modelcard.json", "model.safetensors.index.json", "model-00002-of-0000", "MANIFEST.json"]
)
def test_each_kind_of_file_is_covered_by_the_manifest(sharded, victim):
    """Change one byte of any file (a value, not the JSON structure): loading refuses and names that file."""
    path = next(p for p in sorted(sharded.iterdir()) if p.name.startswith(victim))
    text = path.read_bytes()
    if path.suffix == ".json":
        # Same length and still valid JSON, so only the hash can tell: swap two digits in a value.
        index = next(i for i, b in enumerate(text) if chr(b).isdigit() and chr(text[i + 1]).isdigit() and text[i] != text[i + 1])
        changed = text[:index] + text[index + 1 : index + 2] + text[index : index + 1] + text[index + 2 :]
        path.write_bytes(changed)
    else:
        _flip(path, len(text) - 3)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(sharded)
    if victim == "MANIFEST.json":
        assert "content_id" in str(info.value) or "does not match" in str(info.value)
    else:
        assert any(p.startswith(path.name) for p in info.value.problems), info.value.problems


def test_verify_checkpoint_reports_shapes_without_reading_tensors(sharded, monkeypatch):
    """A config edited to another width (and the manifest rewritten to match) passes the hashes but not the
    shapes: verify_checkpoint says which tensors, from the headers alone."""
    import model

    config = json.loads((sharded / "config.json").read_text())
    config["mlp"]["hidden"] = 128
    (sharded / "config.json").write_text(json.dumps(config))
    write_manifest(sharded)
    problems = model.verify_checkpoint(sharded)
    assert problems and all("mlp.w" in p and "expects" in p for p in problems), problems
    assert model.verify_checkpoint(sharded.parent / "nothing-here") == [f"{sharded.parent / 'nothing-here'}: no such checkpoint directory"]
