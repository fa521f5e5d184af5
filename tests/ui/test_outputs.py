"""Gradio handlers return named results; the events' outputs lists are built from the same field names."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from ui.landuse import Analysis, RunOutputs
from ui.outputs import outputs
from ui.web import ChatOutputs, EditOutputs, OpenOutputs


class Pair(NamedTuple):
    chatbot: Any
    notice: str


def test_outputs_follow_the_field_order_whatever_the_keyword_order():
    assert outputs(Pair, notice="N", chatbot="C") == ["C", "N"]
    assert Pair(notice="n", chatbot=[]) == ([], "n")  # Gradio receives a plain tuple in that order


def test_a_missing_or_unknown_output_is_refused_by_name():
    with pytest.raises(TypeError, match=r"missing \['notice'\]"):
        outputs(Pair, chatbot="C")
    with pytest.raises(TypeError, match=r"unknown \['title'\]"):
        outputs(Pair, chatbot="C", notice="N", title="T")


def test_the_web_chat_results_are_named():
    assert ChatOutputs._fields == ("chatbot", "textbox", "conversation", "editing", "sidebar", "id_box")
    assert OpenOutputs._fields[:4] == ("chatbot", "conversation", "editing", "title")
    assert EditOutputs._fields == ("textbox", "editing", "notice")
    assert Analysis._fields == ("conversation", "overlay", "files", "notice")
    assert RunOutputs._fields == ("chatbot", "conversation", "overlay", "files", "notice")


def test_handlers_results_are_read_by_name(handlers):
    edit = handlers.start_edit(None, "zh")
    assert isinstance(edit, EditOutputs) and edit.editing is False and edit.notice
    opened = handlers.new("zh")
    assert isinstance(opened, OpenOutputs) and opened.chatbot == [] and opened.conversation is None
    turn = list(handlers.submit({"text": "", "files": []}, None, False, "zh", 0.0, 0.4, 8))[-1]
    assert isinstance(turn, ChatOutputs) and turn.conversation is None and "请输入问题" in str(turn.chatbot)
