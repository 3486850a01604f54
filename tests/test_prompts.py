"""engine.prompts: the one prompt parser (text box, CLI, --data PATH=prompts)."""

from __future__ import annotations

import pytest

import engine.data
from engine.prompts import as_prompt_list, parse_data_arg, parse_prompts


@pytest.mark.parametrize("text", [
    "segment crack, segment taping area",
    "segment crack\nsegment taping area",
    "segment crack; segment taping area",
    "  segment crack ,\n\n;segment taping area;  ",
])
def test_commas_newlines_and_semicolons_separate_prompts(text):
    assert parse_prompts(text) == ["segment crack", "segment taping area"]


def test_repeats_are_dropped_keeping_the_first_order():
    assert parse_prompts("b, a, b , a\nc") == ["b", "a", "c"]
    assert parse_prompts(["b", "a"], extra=["a", " c "]) == ["b", "a", "c"]


def test_list_items_are_never_split():
    assert parse_prompts(["segment joint, tape", "segment crack"]) == ["segment joint, tape", "segment crack"]
    assert as_prompt_list("segment joint, tape") == ["segment joint, tape"]
    assert as_prompt_list([" a ", "a", "b"]) == ["a", "b"]


@pytest.mark.parametrize("empty", ["", "  ", ",;\n", [], ["", "  "], None])
def test_nothing_left_is_a_value_error_saying_what_to_type(empty):
    with pytest.raises(ValueError, match=r"No prompt given: type what to find .*'segment crack'"):
        parse_prompts(empty)


def test_non_text_items_are_refused():
    with pytest.raises(ValueError, match="must be text"):
        parse_prompts(["segment crack", 3])


@pytest.mark.parametrize("text,parsed", [
    ('cracks="segment crack,segment wall crack"', ("cracks", ("segment crack", "segment wall crack"))),
    ("data/joints=segment taping area, segment joint/tape", ("data/joints", ("segment taping area",
                                                                             "segment joint/tape"))),
    ("data/cracks", ("data/cracks", ())),
    ("a=b=c", ("a", ("b=c",))),
])
def test_parse_data_arg(text, parsed):
    assert parse_data_arg(text) == parsed


@pytest.mark.parametrize("text", ["", "=crack", "cracks=", "cracks= , "])
def test_parse_data_arg_errors(text):
    with pytest.raises(ValueError):
        parse_data_arg(text)


def test_parse_data_arg_error_messages_say_how_to_write_it():
    with pytest.raises(ValueError, match="write PATH or PATH=prompt1,prompt2"):
        parse_data_arg("=crack")
    with pytest.raises(ValueError, match="No prompts after '='"):
        parse_data_arg("cracks= , ")


def test_engine_data_re_exports_the_one_parse_data_arg():
    assert engine.data.parse_data_arg is parse_data_arg


def test_prompt_list_rejects_empty():
    assert as_prompt_list(" segment crack ") == ["segment crack"]
    assert as_prompt_list(["a", "a", " b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="No prompt"):
        as_prompt_list(["", "  "])
