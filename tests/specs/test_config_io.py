"""Config I/O: dump/load round trips (hypothesis), file handling, atomic writes, kinds, overrides."""

from __future__ import annotations

import errno
import json
import os
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specs
from specs import (
    AttentionConfig,
    ConfigError,
    GenerationConfig,
    MLPConfig,
    ModelConfig,
    RoPEConfig,
    apply_overrides,
    config_files,
    config_io,
    dump_config,
    dumps_config,
    from_dict,
    load_config,
    load_preset,
    to_dict,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------------------ strategies

_names = st.text(alphabet=string.ascii_letters + string.digits + " -_.:/#'\"é😀", max_size=20)
_unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
_pos_float = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def rope_configs(draw: st.DrawFn) -> RoPEConfig:
    scaling = draw(st.sampled_from(["none", "linear", "ntk"]))
    factor = 1.0 if scaling == "none" else draw(st.floats(min_value=1.0, max_value=64.0, allow_nan=False))
    return RoPEConfig(theta=draw(_pos_float), scaling=scaling, factor=factor)


@st.composite
def model_configs(draw: st.DrawFn) -> ModelConfig:
    n_heads = draw(st.integers(1, 12))
    n_kv_heads = draw(st.one_of(st.none(), st.sampled_from([d for d in range(1, n_heads + 1) if n_heads % d == 0])))
    positions = draw(st.sampled_from(["rope", "learned", "sinusoidal", "none"]))
    rope = draw(rope_configs()) if positions == "rope" else None
    least = 2 if rope is not None and rope.scaling == "ntk" else 1  # NTK's exponent d / (d - 2) needs d > 2
    if draw(st.booleans()):  # head dim implied by d_model
        head_dim = None
        per_head = draw(st.integers(least, 16)) * (2 if positions == "rope" else 1)
        d_model = n_heads * per_head
    else:  # explicit head dim, any width
        head_dim = draw(st.integers(least, 32)) * (2 if positions == "rope" else 1)
        d_model = draw(st.integers(1, 256))
    max_seq_len = draw(st.integers(1, 4096))
    attention = AttentionConfig(
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        bias=draw(st.booleans()),
        qk_norm=draw(st.booleans()),
        softcap=draw(st.one_of(st.none(), _pos_float)),
        window=draw(st.one_of(st.none(), st.integers(1, max_seq_len))),
        dropout=draw(_unit),
        kernel=draw(st.sampled_from(["auto", "manual", "sdpa"])),
    )
    mlp = MLPConfig(
        kind=draw(st.sampled_from(["gelu", "swiglu"])),
        hidden=draw(st.one_of(st.none(), st.integers(1, 4096))),
        bias=draw(st.booleans()),
        gelu_approximate=draw(st.sampled_from(["none", "tanh"])),
    )
    norm = draw(st.sampled_from(["rmsnorm", "layernorm"]))
    return ModelConfig(
        name=draw(_names),
        vocab_size=draw(st.integers(1, 300_000)),
        d_model=d_model,
        n_layers=draw(st.integers(1, 96)),
        max_seq_len=max_seq_len,
        attention=attention,
        mlp=mlp,
        positions=positions,
        rope=rope,
        norm=norm,
        norm_eps=draw(st.floats(min_value=1e-12, max_value=0.1, allow_nan=False)),
        norm_bias=norm == "layernorm" and draw(st.booleans()),
        residual=draw(st.sampled_from(["pre", "post"])),
        final_norm=draw(st.booleans()),
        tie_embeddings=draw(st.booleans()),
        dropout=draw(_unit),
        drop_path=draw(_unit),
        init_std=draw(st.floats(min_value=0.0, max_value=1.0, allow_nan=False)),
        dtype=draw(st.sampled_from(["float32", "bfloat16", "float16"])),
    )


@st.composite
def generation_configs(draw: st.DrawFn) -> GenerationConfig:
    sampling = draw(st.booleans())
    return GenerationConfig(
        max_new_tokens=draw(st.integers(1, 1 << 20)),
        do_sample=sampling,
        temperature=draw(st.floats(min_value=1e-6, max_value=10.0, allow_nan=False)),
        min_p=draw(st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, allow_nan=False))) if sampling else None,
        stop=tuple(draw(st.lists(st.text(min_size=1, max_size=5), max_size=3))),
        top_k=draw(st.one_of(st.none(), st.integers(1, 1000))) if sampling else None,
        top_p=draw(st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)))
        if sampling
        else None,
        repetition_penalty=draw(st.floats(min_value=1e-3, max_value=10.0, allow_nan=False)),
        eos_token_ids=tuple(draw(st.lists(st.integers(0, 1 << 31), max_size=4))),
        seed=draw(st.one_of(st.none(), st.integers(0, (1 << 64) - 1))),  # what torch seeds take (n is 1)
    )


any_config = st.one_of(model_configs(), generation_configs())

# ------------------------------------------------------------------------------------------------ round trips


@SETTINGS
@given(cfg=any_config, fmt=st.sampled_from(["json", "yaml"]))
def test_dumps_then_from_dict_round_trips(cfg, fmt):
    text = dumps_config(cfg, fmt)
    data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    assert data["kind"] == type(cfg).KIND and data["version"] == type(cfg).VERSION
    assert list(data)[:2] == ["kind", "version"]
    back = from_dict(data)
    assert type(back) is type(cfg)
    assert back == cfg
    assert to_dict(back) == to_dict(cfg)


@SETTINGS
@given(cfg=any_config, suffix=st.sampled_from([".json", ".yaml", ".yml"]))
def test_dump_config_then_load_config_round_trips(tmp_path, cfg, suffix):
    path = tmp_path / "sub" / f"cfg{suffix}"
    path.parent.mkdir(exist_ok=True)  # atomic writes never create folders
    assert dump_config(cfg, path) == path
    assert load_config(path) == cfg
    assert load_config(str(path), kind=type(cfg).KIND) == cfg
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp files left


@SETTINGS
@given(cfg=model_configs())
def test_to_dict_is_plain_data(cfg):
    data = to_dict(cfg)
    assert json.loads(json.dumps(data)) == data  # only JSON types (tuples became lists)
    assert data["attention"]["n_heads"] == cfg.attention.n_heads
    assert (data["rope"] is None) == (cfg.positions != "rope")


def test_int_accepted_for_float_field_and_stays_float():
    data = to_dict(load_preset("llama-tiny"))
    data["rope"]["theta"] = 500000
    cfg = from_dict(data)
    assert cfg.rope.theta == 500000.0 and isinstance(cfg.rope.theta, float)


def test_json_dump_is_indented_and_newline_terminated(tmp_path):
    cfg = load_preset("llama-tiny")
    text = dumps_config(cfg, "json")
    assert text.endswith("\n") and '\n  "kind": "model"' in text


def test_dumps_config_unknown_format():
    with pytest.raises(ValueError, match="unknown config format 'toml'"):
        dumps_config(load_preset("llama-tiny"), "toml")


def test_to_dict_rejects_unregistered_objects():
    with pytest.raises(TypeError, match="not a registered config kind"):
        to_dict(AttentionConfig(n_heads=2))


def test_config_kinds_lists_the_registered_kinds():
    kinds = specs.config_kinds()
    assert kinds["model"] is ModelConfig and kinds["generation"] is GenerationConfig
    assert kinds["modelcard"] is specs.ModelCard
    kinds.pop("model")
    assert "model" in specs.config_kinds()  # a copy, not the registry


# ------------------------------------------------------------------------------------------------ atomic writes


def _existing(tmp_path):
    target = tmp_path / "model.yaml"
    target.write_text("original\n", encoding="utf-8")
    return target


def test_dump_config_failing_serialiser_leaves_target_untouched(tmp_path, monkeypatch):
    target = _existing(tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("serialiser died")

    monkeypatch.setattr(config_files, "dumps_config", boom)
    with pytest.raises(RuntimeError, match="serialiser died"):
        dump_config(load_preset("llama-tiny"), target)
    assert target.read_text(encoding="utf-8") == "original\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model.yaml"]


@pytest.mark.parametrize("victim", ["fsync", "replace"])
def test_dump_config_failing_midway_leaves_target_untouched_and_no_temp(tmp_path, monkeypatch, victim):
    target = _existing(tmp_path)
    seen = []

    def boom(*args, **kwargs):
        seen.append(args)
        raise OSError(f"{victim} died")

    monkeypatch.setattr(config_files.os, victim, boom)
    with pytest.raises(OSError, match=f"{victim} died"):
        dump_config(load_preset("llama-tiny"), target)
    monkeypatch.undo()
    assert seen, "the failure was never reached"
    assert target.read_text(encoding="utf-8") == "original\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model.yaml"]


def test_dump_config_replaces_existing_file(tmp_path):
    target = _existing(tmp_path)
    cfg = load_preset("llama-tiny")
    dump_config(cfg, target)
    assert load_config(target) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["model.yaml"]


@pytest.mark.parametrize("name", ["cfg.toml", "cfg", "cfg.JSON.bak"])
def test_dump_config_unknown_suffix(tmp_path, name):
    with pytest.raises(ValueError, match="cannot tell the config format"):
        dump_config(load_preset("llama-tiny"), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ loading files


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: model\nattention: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"kind": "model", ', encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["", "- 1\n- 2\n", "just a string\n"])
def test_non_mapping_file(tmp_path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["missing.yaml", "missing.json", "missing.yml"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(ConfigError, match="no such config file") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)


def test_a_directory_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llama-tiny").mkdir()  # e.g. a checkpoint directory written by the example
    assert load_config("llama-tiny") == load_preset("llama-tiny")


def test_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = dump_config(load_preset("llama-tiny"), tmp_path / "cfg.yaml")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_validation_error_in_file_names_the_file(tmp_path):
    data = to_dict(load_preset("llama-tiny"))
    data["attention"]["n_kv_heads"] = 3
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"invalid config in {path}: attention.n_kv_heads:")


def test_load_config_by_preset_name_and_path_agree(tmp_path):
    by_name = load_config("llama-tiny")
    path = dump_config(by_name, tmp_path / "t.yaml")
    assert load_config(path) == by_name == load_preset("llama-tiny")


def test_unknown_preset_lists_close_names_but_does_not_resolve():
    with pytest.raises(ConfigError) as info:
        load_config("llama-5m")
    msg = str(info.value)
    assert "unknown preset 'llama-5m'" in msg and "did you mean" in msg and "'llama-55m'" in msg


def test_unknown_preset_far_from_everything_lists_all():
    with pytest.raises(ConfigError) as info:
        load_preset("zzzzzzzzzz")
    msg = str(info.value)
    assert "available:" in msg
    for name in specs.preset_names():
        assert name in msg


def test_preset_with_wrong_kind():
    with pytest.raises(ConfigError, match="'llama-tiny' is a model preset, not a generation preset"):
        load_config("llama-tiny", kind="generation")


# ------------------------------------------------------------------------------------------------ kind / version


def _tiny_dict():
    return to_dict(load_preset("llama-tiny"))


def test_missing_kind_fails_unless_given():
    data = _tiny_dict()
    del data["kind"]
    with pytest.raises(ConfigError, match="kind: missing") as info:
        from_dict(data)
    assert info.value.problems[0][0] == "kind"
    assert from_dict(data, kind="model") == load_preset("llama-tiny")


def test_unknown_and_wrong_kind():
    data = _tiny_dict()
    with pytest.raises(ConfigError, match="expected a 'generation' config, got 'model'"):
        from_dict(data, kind="generation")
    data["kind"] = "modle"
    with pytest.raises(ConfigError, match="unknown config kind 'modle'"):
        from_dict(data)


def test_missing_version_fails():
    data = _tiny_dict()
    del data["version"]
    with pytest.raises(ConfigError, match="version: missing; the current 'model' version is 4"):
        from_dict(data)


@pytest.mark.parametrize("version", [0, -1, "2", 2.0, True, [2]])
def test_bad_version_values(version):
    data = _tiny_dict()
    data["version"] = version
    with pytest.raises(ConfigError, match="version: must be a positive integer"):
        from_dict(data)


def test_newer_version_fails_clearly(tmp_path):
    data = _tiny_dict()
    data["version"] = 5
    path = tmp_path / "future.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="5 is newer than this lmplanes understands \\(4\\); upgrade lmplanes"):
        load_config(path)


@pytest.mark.parametrize("data", [[1, 2], "model", None, 3])
def test_from_dict_needs_a_mapping(data):
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(data)


def test_from_dict_does_not_mutate_its_input():
    data = _tiny_dict()
    snapshot = json.loads(json.dumps(data))
    from_dict(data)
    assert data == snapshot


# ------------------------------------------------------------------------------------------------ overrides


def test_apply_overrides_valid():
    cfg = load_preset("llama-tiny")
    new = apply_overrides(
        cfg,
        [
            "attention.n_kv_heads=1",
            "n_layers=3",
            "name=tweaked",
            "rope.theta=500000.0",
            "attention.window=null",
            "tie_embeddings=true",
        ],
    )
    assert new.attention.n_kv_heads == 1 and new.n_layers == 3 and new.name == "tweaked"
    assert new.rope.theta == 500000.0 and new.tie_embeddings is True
    assert cfg.n_layers == 2  # the original is untouched
    assert apply_overrides(cfg, []) == cfg


def test_apply_overrides_value_with_equals_sign():
    assert apply_overrides(load_preset("llama-tiny"), ["name=a=b"]).name == "a=b"


def test_apply_overrides_can_replace_a_whole_section():
    cfg = apply_overrides(load_preset("llama-tiny"), ["positions=learned", "rope=null"])
    assert cfg.positions == "learned" and cfg.rope is None


def test_apply_overrides_typo_suggests():
    with pytest.raises(ConfigError, match="attention.n_kv_head: unknown key; did you mean 'n_kv_heads'"):
        apply_overrides(load_preset("llama-tiny"), ["attention.n_kv_head=1"])
    with pytest.raises(ConfigError, match="n_layer: unknown key; did you mean 'n_layers'"):
        apply_overrides(load_preset("llama-tiny"), ["n_layer=1"])


@pytest.mark.parametrize("item", ["n_layers", "=3", "", "n_layers 3"])
def test_apply_overrides_bad_form(item):
    with pytest.raises(ConfigError, match="is not of the form dotted.key=value"):
        apply_overrides(load_preset("llama-tiny"), [item])


@pytest.mark.parametrize(
    "item, path",
    [("n_layers.x=1", "n_layers"), ("rope.theta.x=1", "rope.theta"), ("nope.x=1", "nope")],
)
def test_apply_overrides_through_a_non_section(item, path):
    with pytest.raises(ConfigError, match="does not name a nested config") as info:
        apply_overrides(load_preset("llama-tiny"), [item])
    assert info.value.problems[0][0] == path


def test_apply_overrides_into_absent_section():
    cfg = load_preset("gpt-shakespeare-char")  # learned positions: rope is None
    with pytest.raises(ConfigError, match="does not name a nested config"):
        apply_overrides(cfg, ["rope.theta=1.0"])


@pytest.mark.parametrize(
    "items, path",
    [
        (["attention.n_kv_heads=3"], "attention.n_kv_heads"),
        (["positions=learned"], "rope"),
        (["norm_bias=true"], "norm_bias"),
        (["attention.window=4096"], "attention.window"),
        (["n_layers=two"], "n_layers"),
        (["attention.head_dim=15"], "attention.head_dim"),
    ],
)
def test_apply_overrides_revalidates(items, path):
    with pytest.raises(ConfigError) as info:
        apply_overrides(load_preset("llama-tiny"), items)
    assert info.value.problems[0][0] == path


def test_apply_overrides_on_generation_config():
    cfg = apply_overrides(GenerationConfig(), ["do_sample=true", "temperature=0.7", "top_k=50", "eos_token_ids=[2, 3]"])
    assert cfg == GenerationConfig(do_sample=True, temperature=0.7, top_k=50, eos_token_ids=(2, 3))
    with pytest.raises(ConfigError, match="top_k: only applies when sampling"):
        apply_overrides(GenerationConfig(), ["top_k=50"])


# ------------------------------------------------------------------------------------------------ migrations API


def test_register_migration_chain_and_gap(monkeypatch):
    from dataclasses import dataclass

    monkeypatch.setattr(config_io, "_KINDS", dict(config_io._KINDS))
    monkeypatch.setattr(config_io, "_MIGRATIONS", dict(config_io._MIGRATIONS))

    @config_io.config_kind("test-widget", version=3)
    @dataclass(frozen=True, kw_only=True)
    class Widget:
        size: int
        label: str = ""

    @config_io.register_migration("test-widget", from_version=2)
    def _v2_to_v3(old):
        new = dict(old)
        new["size"] = new.pop("width")
        return new

    # v1 -> v2 is not registered yet: a clear error names the missing step
    with pytest.raises(ConfigError, match="no migration registered from test-widget v1 to v2"):
        from_dict({"kind": "test-widget", "version": 1, "w": 3})

    @config_io.register_migration("test-widget", from_version=1)
    def _v1_to_v2(old):
        return {"width": old["w"], "label": old.get("name", "")}

    assert from_dict({"kind": "test-widget", "version": 1, "w": 3, "name": "a"}) == Widget(size=3, label="a")
    assert from_dict({"kind": "test-widget", "version": 2, "width": 4}) == Widget(size=4)
    assert from_dict({"kind": "test-widget", "version": 3, "size": 5}) == Widget(size=5)
    with pytest.raises(ValueError, match="already registered"):
        config_io.config_kind("test-widget", version=1)(Widget)


@pytest.mark.parametrize("blocker", ["missing", "file"])
def test_atomic_write_text_never_creates_folders(tmp_path, blocker):
    folder = tmp_path / "a"
    if blocker == "file":
        folder.write_text("not a folder", encoding="utf-8")
    target = folder / "c.txt"
    with pytest.raises(OSError) as err:
        config_files.atomic_write_text(target, "hi")
    problem = f"folder {folder} does not exist" if blocker == "missing" else f"{folder} is not a folder"
    assert err.value.strerror == f"could not write {target}: {problem}"
    assert isinstance(err.value, FileNotFoundError if blocker == "missing" else NotADirectoryError)
    assert [p.name for p in tmp_path.iterdir()] == ([] if blocker == "missing" else ["a"])


def test_atomic_write_text_errors_name_the_target_not_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.yaml"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(config_files.os, "fsync", full)
    with pytest.raises(OSError) as err:
        config_files.atomic_write_text(target, "hi")
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.strerror == f"could not write {target}: No space left on device"
    assert ".tmp" not in str(err.value) and isinstance(err.value.__cause__, OSError)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text_permission_error_names_the_target(tmp_path, monkeypatch):
    def denied(*args, **kwargs):  # what mkstemp raises in a read-only folder (tests may run as root)
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".x.yaml.abcdefgh.tmp"))

    monkeypatch.setattr(config_files.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError) as err:
        config_files.atomic_write_text(tmp_path / "x.yaml", "hi")
    assert str(err.value) == f"[Errno 13] could not write {tmp_path / 'x.yaml'}: Permission denied"


# ------------------------------------------------------------------------------------------------ known gaps


@pytest.mark.parametrize("how", ["file", "override"])
def test_exponent_floats_without_a_dot_are_floats(tmp_path, how):
    cfg = load_preset("llama-tiny")
    if how == "override":
        assert apply_overrides(cfg, ["norm_eps=1e-6"]).norm_eps == 1e-6
    else:
        path = tmp_path / "c.yaml"
        path.write_text(dumps_config(cfg).replace("norm_eps: 1.0e-05", "norm_eps: 1e-6"), encoding="utf-8")
        assert "norm_eps: 1e-6" in path.read_text(encoding="utf-8")
        assert load_config(path).norm_eps == 1e-6


def test_yaml_quotes_strings_that_would_read_back_as_floats(tmp_path):
    # Our loader reads ``1e3`` as a float (YAML 1.1 would not), so the dumper must quote such strings.
    cfg = GenerationConfig(stop=("1e3", "0e0", "-2E+5"))
    assert load_config(dump_config(cfg, tmp_path / "gen.yaml")) == cfg
