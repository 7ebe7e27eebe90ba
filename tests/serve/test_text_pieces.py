"""The text side of serving, piece by piece: stop strings over streamed text, detokenizing one token at a time,
and chat templates from a model directory."""

from __future__ import annotations

import json

import pytest

import data
from serve.chat_template import ChatTemplate, ChatTemplateError
from serve.detokenize import IncrementalDetokenizer
from serve.stop_strings import StopStrings


def test_a_stop_string_split_over_pieces_is_never_released():
    stops = StopStrings(["END", "stop here"])
    released = [stops.feed(piece) for piece in ("one E", "N", "D two")]
    assert released == [("one ", False), ("", False), ("", True)]


def test_held_back_text_that_was_no_stop_string_is_released():
    stops = StopStrings(["END"])
    assert stops.feed("an E") == ("an ", False)
    assert stops.feed("N") == ("", False)  # "EN" could still become "END"
    assert stops.feed("x") == ("ENx", False)
    assert stops.feed("E") == ("", False)
    assert stops.flush() == "E"  # generation ended: what was held back was text after all


def test_the_earliest_stop_string_wins():
    assert StopStrings(["bc", "ab"]).feed("xabc") == ("x", True)


def test_a_character_split_over_byte_tokens_is_released_whole():
    tokenizer = data.byte_tokenizer()
    detokenizer = IncrementalDetokenizer(tokenizer, tokenizer.encode("Hi "))
    pieces = [detokenizer.push(t) for t in tokenizer.encode("é€!")]
    assert pieces == ["", "é", "", "", "€", "!"]
    cut = IncrementalDetokenizer(tokenizer)
    assert cut.push(tokenizer.encode("€")[0]) == "" and cut.flush() == "\ufffd"  # generation ended mid-character


def test_ids_beyond_the_tokenizer_and_special_tokens_add_no_text():
    tokenizer = data.byte_tokenizer()  # 256 bytes, then <|endoftext|>
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert [detokenizer.push(t) for t in (ord("a"), 256, 300, ord("b"))] == ["a", "", "", "b"]


def _model_dir(tmp_path, config: dict | None = None, jinja: str | None = None):
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    if jinja is not None:
        (tmp_path / "chat_template.jinja").write_text(jinja)
    return tmp_path


def test_the_template_comes_from_the_directory(tmp_path):
    messages = [{"role": "user", "content": "Hi"}]
    assert ChatTemplate.from_directory(tmp_path).is_default
    inline = _model_dir(tmp_path, {"chat_template": "{{ bos_token }}{{ messages[0]['content'] }}|"})
    assert ChatTemplate.from_directory(inline, bos_token="<s>").render(messages) == "<s>Hi|"
    named = _model_dir(tmp_path, {"chat_template": [{"name": "tool_use", "template": "T"},
                                                     {"name": "default", "template": "D{{ add_generation_prompt }}"}]})
    assert ChatTemplate.from_directory(named).render(messages) == "DTrue"
    assert ChatTemplate.from_directory(_model_dir(tmp_path, jinja="file")).render(messages) == "file"  # the file wins


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"chat_template": "{% for %}"}, "not valid Jinja"),
        ({"chat_template": [{"name": "tool_use", "template": "T"}]}, "names no 'default' template"),
        ({"chat_template": 3}, "chat_template is not a string"),
        ({"chat_template": "{{ raise_exception('no system role') }}"}, "rejected the messages: no system role"),
        ({"chat_template": "{{ messages.__class__.__mro__ }}"}, "rejected the messages"),  # the sandbox holds
    ],
)
def test_a_bad_template_is_a_chat_template_error(tmp_path, config, message):
    with pytest.raises(ChatTemplateError, match=message):
        ChatTemplate.from_directory(_model_dir(tmp_path, config)).render([{"role": "user", "content": "Hi"}])
