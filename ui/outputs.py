"""Named handler results for Gradio: a handler returns (or yields) a NamedTuple built by field name, and the event's
`outputs` list is made from the same fields, so no handler and no wiring depends on a position. The web chat's
results are here (`ui/web.py` builds and wires them); the land-use panel's are beside it in `ui/landuse.py`.

    class EditOutputs(NamedTuple):
        textbox: Any
        editing: bool
        notice: str

    btn.click(h.start_edit, inputs, outputs(EditOutputs, textbox=textbox, editing=editing, notice=notice))
    return EditOutputs(textbox=..., editing=True, notice="")      # Gradio receives it as a tuple, in field order
"""

from __future__ import annotations

from typing import Any, NamedTuple


def outputs(result: type[NamedTuple], **components: Any) -> list[Any]:
    """The Gradio components of `result`'s fields, in its field order; every field must be given, and no other."""
    fields = result._fields
    if set(components) != set(fields):
        missing, extra = set(fields) - set(components), set(components) - set(fields)
        raise TypeError(f"{result.__name__} outputs: missing {sorted(missing)}, unknown {sorted(extra)}")
    return [components[name] for name in fields]


class ChatOutputs(NamedTuple):
    """What a turn (submit, regenerate) yields after each new piece of the answer."""

    chatbot: Any  # the whole conversation, as message-format bubbles
    textbox: Any  # the input box: emptied once, the question back after an error, else gr.skip()
    conversation: str | None  # the conversation's id (a first turn creates it)
    editing: bool  # still editing the last question (only after an error while editing)
    sidebar: Any  # the history list, or gr.skip()
    id_box: Any  # the id shown in the sidebar, or gr.skip()


class OpenOutputs(NamedTuple):
    """What opening a conversation (sidebar, new, delete) shows."""

    chatbot: Any
    conversation: str | None
    editing: bool
    title: str  # the rename box
    temperature: float
    top_p: float
    max_new_tokens: int
    confirm: Any  # the delete confirmation, hidden
    sidebar: Any
    id_box: str


class EditOutputs(NamedTuple):
    """Editing the last question: it goes back into the input box."""

    textbox: Any
    editing: bool
    notice: str


class QueueOutputs(NamedTuple):
    """Enter pressed: the box empties at once and the question waits in this tab's queue."""

    textbox: Any
    notice: str


class AfterTurnOutputs(NamedTuple):
    notice: str  # the editing notice, cleared
    title: Any  # the (possibly new) conversation's title into the rename box
