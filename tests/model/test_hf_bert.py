"""Hugging Face BERT interop, checked against ``transformers`` itself on the same (random) weights, fp32, on
padded batches with token types. Real weights: test_bert_minilm.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import model
import specs
from model.hf import HF_FAMILIES, from_hf, to_hf
from model.hf_bert import BertFamily
from specs.errors import CheckpointError

TOL = 1e-5
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=99,
    max_position_embeddings=40,
)
LENGTHS = [13, 6, 9]
SEQ = 13


@torch.no_grad()
def _perturb_(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def _inputs() -> dict[str, torch.Tensor]:
    """A right-padded batch with two segments per row, the way a BERT tokenizer pads a sentence pair."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, TINY["vocab_size"], (len(LENGTHS), SEQ), generator=gen)
    positions = torch.arange(SEQ)[None, :]
    attention_mask = (positions < torch.tensor(LENGTHS)[:, None]).long()
    token_type_ids = ((positions >= 4) & attention_mask.bool()).long()
    return {"input_ids": ids.masked_fill(attention_mask == 0, 0), "attention_mask": attention_mask,
            "token_type_ids": token_type_ids}


def _ours(m: model.EncoderLM, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return m(inputs["input_ids"], key_padding_mask=inputs["attention_mask"] == 0,
                 token_type_ids=inputs["token_type_ids"])


def _hf_model(cls: type, **overrides) -> torch.nn.Module:
    cfg = transformers.BertConfig(**{**TINY, **overrides}, attn_implementation="eager")
    torch.manual_seed(0)
    hf = cls(cfg).to(torch.float32)
    _perturb_(hf, seed=1)
    return hf.eval()


def _compare(ours: model.EncoderLM, hf: torch.nn.Module, label: str) -> None:
    """Hidden states (real tokens and padding alike) and, for an MLM model, logits."""
    inputs = _inputs()
    hidden = _ours(ours, inputs)
    with torch.no_grad():
        body = hf if isinstance(hf, transformers.BertModel) else hf.bert
        reference = body(**inputs).last_hidden_state
    diffs = {"hidden": (hidden - reference).abs().max().item()}
    if ours.config.head == "mlm":
        with torch.no_grad():
            out = hf(**inputs)
            logits = out.prediction_logits if isinstance(hf, transformers.BertForPreTraining) else out.logits
            diffs["logits"] = (ours.output_head()(hidden) - logits).abs().max().item()
    print(f"{label}: max abs diffs {({k: f'{v:.2e}' for k, v in diffs.items()})}")
    assert max(diffs.values()) <= TOL, diffs


# ------------------------------------------------------------------------------------------------------- import

IMPORT_CASES = {
    "BertModel": (transformers.BertModel, {}),
    "BertForMaskedLM": (transformers.BertForMaskedLM, {}),
    "BertForMaskedLM-untied-eps": (transformers.BertForMaskedLM, dict(tie_word_embeddings=False, layer_norm_eps=1e-5)),
    "BertForPreTraining-3-types": (transformers.BertForPreTraining, dict(type_vocab_size=3)),
}


@pytest.mark.parametrize("case", IMPORT_CASES)
def test_from_hf_matches_transformers(case: str, tmp_path: Path) -> None:
    cls, overrides = IMPORT_CASES[case]
    hf = _hf_model(cls, **overrides)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_hf(tmp_path)
    assert isinstance(ours, model.EncoderLM) and not ours.training
    cfg = ours.config
    assert (cfg.architecture, cfg.head) == ("encoder", "none" if cls is transformers.BertModel else "mlm")
    assert cfg.type_vocab_size == overrides.get("type_vocab_size", 2)
    assert cfg.norm_eps == overrides.get("layer_norm_eps", 1e-12)
    if cfg.head == "mlm":
        tied = overrides.get("tie_word_embeddings", True)
        assert (ours.mlm_head.decoder.weight is ours.tok_embeddings.weight) == tied
    _compare(ours, hf, case)


def test_from_hf_ignores_what_it_says_it_ignores(tmp_path: Path) -> None:
    """The pooler, the position/token-type id buffers and the decoder's copy of the tied bias and embedding."""
    hf = _hf_model(transformers.BertForMaskedLM)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["bert.pooler.dense.weight"] = torch.zeros(32, 32)
    tensors["bert.pooler.dense.bias"] = torch.zeros(32)
    tensors["bert.embeddings.position_ids"] = torch.arange(40)[None]
    tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"].clone()
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"].clone()
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    _compare(from_hf(tmp_path), hf, "with ignored tensors")


def test_from_hf_names_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    hf = _hf_model(transformers.BertModel)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["encoder.layer.1.output.LayerNorm.bias"]
    tensors["encoder.layer.1.output.extra"] = torch.zeros(3)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        from_hf(tmp_path)
    message = str(err.value)
    assert "missing tensor 'encoder.layer.1.output.LayerNorm.bias'" in message
    assert "unexpected tensor 'encoder.layer.1.output.extra'" in message and "(BertModel)" in message


def test_from_hf_lists_every_unsupported_bert_option(tmp_path: Path) -> None:
    hf = _hf_model(transformers.BertModel)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(hidden_act="gelu_new", position_embedding_type="relative_key", is_decoder=True,
                  architectures=["BertForSequenceClassification"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        from_hf(tmp_path)
    message = str(err.value)
    for reason in (
        "hidden_act 'gelu_new' is not supported: lmplanes' BERT uses the exact (erf) GELU",
        "position_embedding_type 'relative_key' is not implemented",
        "is_decoder is true",
        "'BertForSequenceClassification' is not supported; supported: BertModel, BertForMaskedLM, BertForPreTraining",
    ):
        assert reason in message, message


def test_from_hf_names_the_supported_families(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(CheckpointError, match=f"unsupported Hugging Face model_type 'roberta'; supported: {', '.join(sorted(HF_FAMILIES))}$"):
        from_hf(tmp_path)


# ------------------------------------------------------------------------------------------------------- export


def _our_bert(head: str, *overrides: str) -> model.EncoderLM:
    hf_config = {**transformers.BertConfig(**TINY).to_dict(), "architectures": ["BertForMaskedLM" if head == "mlm" else "BertModel"]}
    cfg = BertFamily().config_from_hf(hf_config, name="bert-export-test", dtype="float32")
    torch.manual_seed(0)
    ours = model.build(specs.apply_overrides(cfg, list(overrides)))
    assert isinstance(ours, model.EncoderLM)
    _perturb_(ours, seed=4)
    return ours.eval()


EXPORT_CASES = {
    "BertModel": ("none", []),
    "BertForMaskedLM": ("mlm", []),
    "BertForMaskedLM-untied": ("mlm", ["tie_embeddings=false", "type_vocab_size=3"]),
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_to_hf_loads_in_transformers(case: str, tmp_path: Path) -> None:
    head, overrides = EXPORT_CASES[case]
    ours = _our_bert(head, *overrides)
    out = to_hf(ours, tmp_path / "hf")
    written = json.loads((out / "config.json").read_text())
    assert written["model_type"] == "bert" and written["architectures"] == [case.split("-")[0]]
    stored = load_file(out / "model.safetensors")
    assert not any("pooler" in name for name in stored)
    if head == "mlm":
        assert ("cls.predictions.decoder.weight" in stored) == (not ours.config.tie_embeddings)
        auto, kwargs = transformers.AutoModelForMaskedLM, {}
    else:
        auto, kwargs = transformers.AutoModel, {"add_pooling_layer": False}  # we keep no pooler (hf_bert.py)
    hf, info = auto.from_pretrained(out, output_loading_info=True, dtype=torch.float32, attn_implementation="eager",
                                    **kwargs)
    # Untied, transformers 5 adds the decoder's own bias and leaves cls.predictions.bias unused (hf_bert.py).
    unused = {"cls.predictions.bias"} if head == "mlm" and not ours.config.tie_embeddings else set()
    assert set(info["missing_keys"]) == unused
    for key in ("unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info[key], (key, info[key])
    assert type(hf).__name__ == case.split("-")[0]
    _compare(ours, hf.eval(), f"to_hf {case}")

    back = from_hf(out)  # and our import of our export restores the config and the weights
    assert specs.to_dict(back.config) == {**specs.to_dict(ours.config), "name": "hf"}  # the folder names it
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_to_hf_lists_every_reason_an_encoder_is_not_bert(tmp_path: Path) -> None:
    ours = _our_bert("none", "residual=pre", "final_norm=true", "mlp.gelu_approximate=tanh", "type_vocab_size=0",
                     "attention.n_kv_heads=2")
    with pytest.raises(ValueError) as err:
        to_hf(ours, tmp_path / "hf")
    message = str(err.value)
    for reason in ("bert: residual is 'pre'", "bert: final_norm is true", "exact GELU", "type_vocab_size is 0",
                   "2 kv heads", "llama: architecture is 'encoder'"):
        assert reason in message, message
    assert not (tmp_path / "hf").exists()
