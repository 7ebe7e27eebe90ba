"""Hugging Face BART interop, checked against ``transformers``' ``BartForConditionalGeneration`` itself on the
same (random, perturbed) weights, fp32, on a batch of right-padded sources: full forward, cached decoding one
token at a time (the encoder run once), and export back to a directory transformers loads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers

import model
from model.encoder_decoder import EncoderDecoderLM
from model.hf import from_hf, to_hf
from specs.errors import CheckpointError

TOL = 1e-5
TINY = dict(
    vocab_size=97,
    d_model=32,
    encoder_layers=2,
    decoder_layers=3,  # unequal, so the two depths cannot be swapped unnoticed
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=24,
    dropout=0.0,
)
LENGTHS = [11, 6, 9]  # source tokens per row; the rest is right padding
SOURCE, TARGET = 11, 7


@torch.no_grad()
def _perturb_(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere, biases, norms and final_logits_bias included (transformers zeroes some)."""
    gen = torch.Generator().manual_seed(seed)
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            tensor.add_(torch.randn(tensor.shape, generator=gen) * 0.05)


def _hf_model(**overrides) -> transformers.BartForConditionalGeneration:
    cfg = transformers.BartConfig(**{**TINY, **overrides}, attn_implementation="eager")
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(cfg).to(torch.float32)
    _perturb_(hf, seed=1)
    return hf.eval()


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, TINY["vocab_size"], (len(LENGTHS), SOURCE), generator=gen)
    attention_mask = (torch.arange(SOURCE)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    decoder_input_ids = torch.randint(3, TINY["vocab_size"], (len(LENGTHS), TARGET), generator=gen)
    return {"input_ids": ids.masked_fill(attention_mask == 0, 1), "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids}


def _ours_full(m: EncoderDecoderLM, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        logits = m(inputs["decoder_input_ids"], input_ids=inputs["input_ids"],
                   memory_padding_mask=inputs["attention_mask"] == 0)
    assert isinstance(logits, torch.Tensor)
    return logits


def _hf_logits(hf: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return hf(**inputs, use_cache=False).logits


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[EncoderDecoderLM, torch.nn.Module]:
    hf = _hf_model(scale_embedding=True)
    path = tmp_path_factory.mktemp("bart")
    hf.save_pretrained(path)
    ours = from_hf(path)
    assert isinstance(ours, EncoderDecoderLM)
    return ours, hf


def test_config_maps_bart(imported: tuple[EncoderDecoderLM, torch.nn.Module]) -> None:
    cfg = imported[0].config
    assert (cfg.architecture, cfg.n_encoder_layers, cfg.n_layers) == ("encoder_decoder", 2, 3)
    assert (cfg.residual, cfg.position_offset, cfg.logits_bias, cfg.embedding_norm) == ("post", 2, True, True)
    assert cfg.embedding_scale == pytest.approx(32**0.5)


def test_logits_match_transformers_on_padded_sources(imported: tuple[EncoderDecoderLM, torch.nn.Module]) -> None:
    ours, hf = imported
    inputs = _inputs()
    diff = (_ours_full(ours, inputs) - _hf_logits(hf, inputs)).abs().max().item()
    print(f"BART full forward: max abs logit diff {diff:.2e}")
    assert diff <= TOL


def test_encoder_output_matches_transformers(imported: tuple[EncoderDecoderLM, torch.nn.Module]) -> None:
    ours, hf = imported
    inputs = _inputs()
    pad = inputs["attention_mask"] == 0
    with torch.no_grad():
        memory = ours.encode(inputs["input_ids"], key_padding_mask=pad)
        reference = hf.model.encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    real = ~pad  # padded positions are never read by the decoder (masked in cross-attention)
    assert (memory - reference.last_hidden_state)[real].abs().max().item() <= TOL


def test_cached_decoding_matches_full_forward_and_transformers(
    imported: tuple[EncoderDecoderLM, torch.nn.Module],
) -> None:
    """The encoder runs once; the decoder takes a 2-token prompt, then one token per step through the cache.
    Each step's logits equal the full forward's and transformers' at that position."""
    ours, hf = imported
    inputs = _inputs()
    pad, target = inputs["attention_mask"] == 0, inputs["decoder_input_ids"]
    full, reference = _ours_full(ours, inputs), _hf_logits(hf, inputs)
    calls = 0

    def counting_encode(*args, **kwargs):
        nonlocal calls
        calls += 1
        return EncoderDecoderLM.encode(ours, *args, **kwargs)

    with torch.no_grad():
        cache = ours.new_cache(len(LENGTHS), TARGET)
        memory = counting_encode(inputs["input_ids"], key_padding_mask=pad)
        steps = [ours(target[:, :2], memory=memory, memory_padding_mask=pad, cache=cache)]
        assert cache.memory(0) is not None
        for t in range(2, TARGET):
            steps.append(ours(target[:, t : t + 1], memory_padding_mask=pad, cache=cache))  # memory from the cache
    incremental = torch.cat(steps, dim=1)
    assert calls == 1
    vs_full = (incremental - full).abs().max().item()
    vs_hf = (incremental - reference).abs().max().item()
    print(f"BART cached decoding: max abs diff vs full forward {vs_full:.2e}, vs transformers {vs_hf:.2e}")
    assert vs_full <= TOL and vs_hf <= TOL
    assert cache.seq_lens.tolist() == [TARGET] * len(LENGTHS)


def test_export_loads_in_transformers_with_equal_logits(
    imported: tuple[EncoderDecoderLM, torch.nn.Module], tmp_path: Path
) -> None:
    ours, _ = imported
    to_hf(ours, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["model_type"] == "bart" and written["scale_embedding"] is True
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out", attn_implementation="eager")
    assert isinstance(reloaded, transformers.BartForConditionalGeneration)
    inputs = _inputs()
    diff = (_hf_logits(reloaded.eval(), inputs) - _ours_full(ours, inputs)).abs().max().item()
    assert diff <= TOL
    again = from_hf(tmp_path / "out")  # and back: the same tensors
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))


def test_built_model_exports_and_matches(tmp_path: Path) -> None:
    """A model built here from a BART-shaped config (unscaled embeddings), exported, run by transformers."""
    hf_cfg = _hf_model().config.to_dict()
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(hf_cfg))
    cfg = model.hf.HF_FAMILIES["bart"].config_from_hf(hf_cfg, name="bart-tiny", dtype="float32")
    torch.manual_seed(5)
    ours = model.build(cfg).eval()
    _perturb_(ours, seed=6)
    to_hf(ours, tmp_path / "out")
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out", attn_implementation="eager")
    inputs = _inputs()
    assert (_hf_logits(reloaded.eval(), inputs) - _ours_full(ours, inputs)).abs().max().item() <= TOL


def test_bart_model_checkpoint_imports_as_the_generation_model(tmp_path: Path) -> None:
    """A BartModel checkpoint (facebook/bart-base's layout: no head, no final_logits_bias, no ``model.`` prefix)
    gives the logits BartForConditionalGeneration.from_pretrained gives on it, and exports without the bias."""
    torch.manual_seed(0)
    body = transformers.BartModel(transformers.BartConfig(**TINY, attn_implementation="eager"))
    _perturb_(body, seed=2)
    body.save_pretrained(tmp_path / "in")
    ours = from_hf(tmp_path / "in")
    assert not ours.config.logits_bias
    reference = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "in", attn_implementation="eager")
    inputs = _inputs()
    assert (_ours_full(ours, inputs) - _hf_logits(reference.eval(), inputs)).abs().max().item() <= TOL
    to_hf(ours, tmp_path / "out")
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out", attn_implementation="eager")
    assert (_ours_full(ours, inputs) - _hf_logits(reloaded.eval(), inputs)).abs().max().item() <= TOL


def test_activation_dropout_is_the_mlp_dropout(tmp_path: Path) -> None:
    """BART's activation_dropout (inside the MLP, training only) is mlp.dropout, both ways."""
    _hf_model(activation_dropout=0.25).save_pretrained(tmp_path / "in")
    ours = from_hf(tmp_path / "in")
    assert ours.config.mlp.dropout == 0.25
    mlp, x = ours.decoder.layers[0].mlp, torch.randn(2, 3, 32)
    with torch.no_grad():
        evaluated = mlp(x)
        mlp.train()
        assert not torch.allclose(mlp(x), evaluated)
    to_hf(ours, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["activation_dropout"] == 0.25


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"tie_word_embeddings": False}, "tie_word_embeddings is false"),
        ({"decoder_ffn_dim": 48}, "encoder_ffn_dim (64) differs from decoder_ffn_dim (48)"),
        ({"activation_function": "relu"}, "activation_function 'relu' is not supported"),
        ({"decoder_layerdrop": 0.1}, "decoder_layerdrop is 0.1 (LayerDrop"),
    ],
)
def test_unsupported_configs_are_refused(tmp_path: Path, override: dict, reason: str) -> None:
    config = {**_hf_model().config.to_dict(), **override}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        from_hf(tmp_path)


def test_export_refuses_a_pre_norm_encoder_decoder(tmp_path: Path) -> None:
    cfg = model.hf.HF_FAMILIES["bart"].config_from_hf(_hf_model().config.to_dict(), name="x", dtype="float32")
    pre = model.build(dataclasses.replace(cfg, residual="pre"))
    with pytest.raises(ValueError, match="bart: residual is 'pre'; BART is post-norm"):
        to_hf(pre, tmp_path / "out")
