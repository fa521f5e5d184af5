"""Named handler results for Gradio: a handler returns (or yields) a NamedTuple built by field name, and the event's
`outputs` list is made from the same fields, so no handler and no wiring depends on a position.

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
