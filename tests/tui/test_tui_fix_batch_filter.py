"""Fixing a batch python column and a filter from the app, driven by Pilot over a real run: F5 reloads a
batch column's function, `e` edits a filter's expression (a bad one refused with its message), and c
retries the batch column's failed cells as one batch call, whose rows the edited filter then tests;
rows marked with v are what c retries and C recomputes."""

from __future__ import annotations

import pandas as pd
from textual.widgets import Static, TextArea
from tui_helpers import pipeline, plain, until

from treadle.tui.app import TreadleApp
from treadle.tui.column_editor import ColumnEditorScreen, ConfirmRecomputeScreen

# Each call's values say how many rows it had (id * 100 + rows in the call).
BATCH_BROKEN = (
    "def double(frame):\n"
    "    if (frame['id'] >= 4).any():\n"
    "        raise ValueError('no rows past 3')\n"
    "    return frame['id'] * 100 + len(frame)\n"
)
BATCH_FIXED = "def double(frame):\n    return frame['id'] * 100 + len(frame)\n"


async def test_f5_reloads_a_batch_column_and_e_edits_a_filter_expression(tmp_path, make_controller):
    (tmp_path / "tui_batch_fix.py").write_text(BATCH_BROKEN)
    columns = [
        {"name": "a", "kind": "python", "function": "tui_batch_fix:double", "batch": True},
        {"name": "f", "kind": "filter", "expression": "{{ a < 10000 }}"},
        {"name": "b", "kind": "template", "template": "{{ a }}!"},
    ]
    config = pipeline(tmp_path, 6, columns, retries=0, row_group_size=4)
    controller = make_controller(config, base_dir=tmp_path)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle", what="the run to be idle")
        assert sorted(f["row"] for f in controller.failures()) == [4, 5]

        (tmp_path / "tui_batch_fix.py").write_text(BATCH_FIXED)
        app.grid.move_cursor(4, 0)
        await pilot.press("f5")
        assert ("a", "reload") in [(v["column"], v["kind"]) for v in controller.versions()]

        app.grid.move_cursor(4, 1)
        await pilot.press("e")
        assert isinstance(app.screen, ColumnEditorScreen)
        editor = app.screen.query_one("#edit-expression", TextArea)
        editor.load_text("{{ aa != 402 }}")
        await pilot.press("ctrl+s")
        check = plain(app.screen.query_one("#editor-check", Static)).strip()
        assert check == "✗ f.expression: unknown column or seed field 'aa' (did you mean 'a'?)"
        editor.load_text("{{ a != 402 }}")
        await pilot.press("ctrl+s")
        assert not isinstance(app.screen, ColumnEditorScreen)

        app.grid.move_cursor(4, 0)
        await pilot.press("c")
        await until(pilot, lambda: app.status == "idle", what="the retried rows to settle")
        versions = controller.versions()
        await pilot.press("q")
        await until(pilot, lambda: app.leaving, what="the app to close the run and leave")
    out = pd.read_parquet(controller.wait(30).output_path)
    assert out["id"].tolist() == [0, 1, 2, 3, 5]  # row 4 (a = 402) turned away by the edited filter
    assert out["a"].tolist() == [4, 104, 204, 304, 502]  # rows 4 and 5 rerun as one batch call
    assert out["b"].tolist() == [f"{a}!" for a in out["a"]]
    latest = {v["column"]: v["version"] for v in versions}  # F5, and maybe the file watch before it
    assert out["a__version"].tolist() == [1, 1, 1, 1, latest["a"]]
    assert out["f__version"].tolist() == [1, 1, 1, 1, latest["f"]]


async def test_rows_marked_with_v_are_what_c_retries_and_C_recomputes(tmp_path, make_controller):
    (tmp_path / "tui_marked.py").write_text(
        "def double(row):\n    if row['id'] % 2:\n        raise ValueError('odd')\n    return row['id'] * 2\n"
    )
    columns = [
        {"name": "a", "kind": "python", "function": "tui_marked:double"},
        {"name": "b", "kind": "template", "template": "{{ a }}!"},
    ]
    controller = make_controller(pipeline(tmp_path, 6, columns, retries=0), base_dir=tmp_path)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle", what="the run to be idle")
        (tmp_path / "tui_marked.py").write_text("def double(row):\n    return row['id'] * 3\n")
        app.grid.focus()
        app.grid.move_cursor(1, 0)
        await pilot.press("f5", "v")
        app.grid.move_cursor(3, 0)
        await pilot.press("v")
        assert app.grid.selected == {1, 3}
        await pilot.press("c")  # the marked rows' failed cells of a, not row 5's
        await until(pilot, lambda: app.status == "idle", what="the retried rows to settle")
        assert [f["row"] for f in controller.failures()] == [5]
        assert app.grid.selected == set()

        app.grid.move_cursor(0, 0)
        await pilot.press("v")
        app.grid.move_cursor(2, 0)
        await pilot.press("v", "C")
        assert isinstance(app.screen, ConfirmRecomputeScreen)
        assert (app.screen.cells, app.screen.calls) == (2, 0)
        await pilot.press("y")
        await until(pilot, lambda: app.status == "idle", what="the recomputed rows to settle")
        await pilot.press("q")
        await until(pilot, lambda: app.leaving, what="the app to close the run and leave")
    out = pd.read_parquet(controller.wait(30).output_path)
    assert out["a"].tolist()[:5] == [0, 3, 6, 9, 8]  # rows 0 to 3 by the new function, row 4 by the old
    assert out["b"].tolist()[:4] == ["0!", "3!", "6!", "9!"]
