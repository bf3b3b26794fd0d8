"""Default keys for each action id (plain data), and the Bindings built from them.

Users remap by id: `TreadleApp(controller, keymap={"pause": "p"})` (Textual's `App.set_keymap`).
"""

from __future__ import annotations

from textual.binding import Binding, BindingType

from treadle.tui.actions import ACTIONS, Scope

DEFAULT_KEYS: dict[str, str] = {
    "pause": "p,space",
    "quit": "q",
    "summary": "s",
    "retry_cell": "r",
    "retry_row": "R",
    "retry_all": "A",
    "drop_row": "d",
    "edit_column": "e",
    "reload_function": "f5",
    "retry_column": "c",
    "recompute_column": "C",
    "save_pipeline": "w",
    "next_failed": "n,f",
    "prev_failed": "N",
    "limit_up": "plus,equals_sign",
    "limit_down": "minus",
    "limit_double": "right_square_bracket",
    "limit_halve": "left_square_bracket",
    "next_limit": "l",
    "tab_grid": "1",
    "tab_timeline": "2",
    "tab_failed": "3",
    "tab_log": "4",
    "tab_limits": "5",
    "help": "question_mark,f1",
    "grid.up": "up,k",
    "grid.down": "down,j",
    "grid.left": "left,h",
    "grid.right": "right",
    "grid.page_up": "pageup",
    "grid.page_down": "pagedown",
    "grid.top": "home",
    "grid.bottom": "end",
    "grid.detail": "enter",
    "grid.follow": "full_stop",
    "grid.select": "v",
    "help.close": "escape,question_mark,q,f1",
    "confirm.stop": "y",
    "confirm.abort": "exclamation_mark",
    "confirm.cancel": "n,escape,q",
    "detail.close": "escape,q",
    "detail.retry_cell": "r",
    "detail.retry_row": "R",
    "detail.drop_row": "d",
    "detail.edit_column": "e",
    "detail.reload_function": "f5",
    "editor.save": "ctrl+s",
    "editor.cancel": "escape",
    "recompute.yes": "y",
    "recompute.no": "n,escape,q",
    "save_file.yes": "y",
    "save_file.no": "n,escape,q",
    "summary.back": "escape,enter,s",
    "summary.quit": "q",
    "summary.retry_all": "A",
}

KEY_DISPLAY: dict[str, str] = {
    "plus": "+",
    "equals_sign": "=",
    "minus": "-",
    "right_square_bracket": "]",
    "left_square_bracket": "[",
    "question_mark": "?",
    "full_stop": ".",
    "exclamation_mark": "!",
    "space": "space",
}


def key_text(keys: str) -> str:
    """`plus,equals_sign` -> `+ =` for the help screen."""
    return " ".join(KEY_DISPLAY.get(k, k) for k in keys.split(","))


def bindings(scope: Scope) -> list[BindingType]:
    """The Bindings of one scope, each with the action's stable id."""
    result: list[BindingType] = []
    for spec in ACTIONS:
        if spec.scope != scope:
            continue
        keys = DEFAULT_KEYS[spec.id]
        first = keys.split(",")[0]
        result.append(
            Binding(
                keys,
                spec.action,
                spec.title,
                show=spec.footer,
                key_display=KEY_DISPLAY.get(first),
                id=spec.id,
            )
        )
    return result
