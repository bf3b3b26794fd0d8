"""Fixing a column from the app, driven by Pilot over real runs: the editor refuses a bad template with
its message and applies a good one, F5 reloads a python column's function (a broken module keeps the
old one), c retries a column's failed cells, C recomputes a column after asking; llm columns over HTTP
to the simulator, whose answers echo the prompt they were sent."""

from __future__ import annotations

import pandas as pd
import yaml
from textual.widgets import Static, TextArea
from tui_helpers import pipeline, plain, until

from treadle.sim import SimulatorThread
from treadle.tui.app import TreadleApp
from treadle.tui.column_editor import ColumnEditorScreen, ConfirmRecomputeScreen, PipelineDiffScreen
from treadle.tui.screens import HelpScreen

BROKEN = 'def double(row):\n    if row["id"] % 2:\n        raise ValueError("odd")\n    return row["id"] * 2\n'
FIXED = 'def double(row):\n    return row["id"] * 2\n'


def columns(module: str, second: dict) -> list[dict]:
    return [{"name": "a", "kind": "python", "function": f"{module}:double"}, second]


async def idle(pilot, app: TreadleApp) -> None:
    await until(pilot, lambda: app.status == "idle", what="the run to be idle")


async def quit_and_read(pilot, app: TreadleApp, controller) -> pd.DataFrame:
    await pilot.press("q")
    await until(pilot, lambda: app.leaving, what="the app to close the run and leave")
    return pd.read_parquet(controller.wait(30).output_path)


def check_line(app: TreadleApp) -> str:
    return plain(app.screen.query_one("#editor-check", Static)).strip()


async def test_the_editor_refuses_a_bad_template_and_applies_a_good_one(tmp_path, make_controller):
    (tmp_path / "tui_edit.py").write_text(BROKEN)
    template = {"name": "b", "kind": "template", "template": "{{ a }}!"}
    controller = make_controller(pipeline(tmp_path, 6, columns("tui_edit", template), retries=0), base_dir=tmp_path)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await idle(pilot, app)
        app.grid.move_cursor(1, 1)
        await pilot.press("e")
        assert isinstance(app.screen, ColumnEditorScreen)
        assert "fields it may read: id, a" in plain(app.screen.query_one("#editor-fields", Static))
        editor = app.screen.query_one("#edit-template", TextArea)
        editor.load_text("{{ aa }}?")
        await until(pilot, lambda: check_line(app).startswith("✗"), what="the check as typed")
        assert check_line(app) == "✗ b.template: unknown column or seed field 'aa' (did you mean 'a'?)"
        editor.load_text("{{ a }")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, ColumnEditorScreen)  # refused: nothing applied
        assert check_line(app) == "✗ b.template: template syntax error at line 1: unexpected '}'"
        assert controller.versions() == []
        editor.load_text("{{ a }}?")
        await pilot.press("ctrl+s")
        assert not isinstance(app.screen, ColumnEditorScreen)
        assert [v["changes"] for v in controller.versions()] == [{"template": {"old": "{{ a }}!", "new": "{{ a }}?"}}]

        (tmp_path / "tui_edit.py").write_text(FIXED)
        app.grid.move_cursor(1, 0)
        await pilot.press("f5", "c")
        await idle(pilot, app)
        out = await quit_and_read(pilot, app, controller)
    assert out["b"].tolist() == ["0!", "2?", "4!", "6?", "8!", "10?"]


async def test_f5_with_a_broken_module_keeps_the_old_function(tmp_path, make_controller):
    (tmp_path / "tui_reload.py").write_text(BROKEN)
    template = {"name": "b", "kind": "template", "template": "{{ a }}!"}
    controller = make_controller(pipeline(tmp_path, 4, columns("tui_reload", template), retries=0), base_dir=tmp_path)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await idle(pilot, app)
        (tmp_path / "tui_reload.py").write_text("def double(row)\n")
        app.grid.move_cursor(1, 0)
        await pilot.press("f5")
        assert controller.versions() == []
        await pilot.press("e")  # a python column: nothing to edit, the app says F5 reloads it
        assert not isinstance(app.screen, ColumnEditorScreen)
        await pilot.press("c")
        await idle(pilot, app)
        assert sorted(f["row"] for f in controller.failures()) == [1, 3]
        out = await quit_and_read(pilot, app, controller)
    assert out["a"].tolist()[::2] == [0, 4]


async def test_llm_prompt_edited_in_the_app_reaches_the_next_requests_and_c_and_C_rerun(tmp_path, make_controller):
    (tmp_path / "tui_llm.py").write_text(BROKEN)
    llm = {"name": "l", "kind": "llm", "model": "m", "prompt": "Say {{ a }}"}
    with SimulatorThread() as url:
        config = pipeline(tmp_path, 4, columns("tui_llm", llm), retries=0)
        config["models"] = {"m": {"model": "sim-model", "base_url": url}}
        controller = make_controller(config, base_dir=tmp_path)
        app = TreadleApp(controller, summary_on_idle=False)
        async with app.run_test(size=(160, 48)) as pilot:
            await idle(pilot, app)
            app.grid.move_cursor(1, 1)
            await pilot.press("e")
            app.screen.query_one("#edit-prompt", TextArea).load_text("Shout {{ a }}")
            app.screen.query_one("#edit-max_tokens").value = "0"
            await pilot.press("ctrl+s")
            assert check_line(app) == "✗ l.max_tokens: Input should be greater than or equal to 1"
            app.screen.query_one("#edit-max_tokens").value = ""
            await pilot.press("ctrl+s")
            assert not isinstance(app.screen, ColumnEditorScreen)

            (tmp_path / "tui_llm.py").write_text(FIXED)
            app.grid.move_cursor(1, 0)
            await pilot.press("f5", "c")
            await idle(pilot, app)
            await pilot.press("C")  # recompute a: four rows, and l after it makes four calls
            assert isinstance(app.screen, ConfirmRecomputeScreen)
            assert (app.screen.cells, app.screen.calls) == (4, 4)
            await pilot.press("y")
            await idle(pilot, app)
            # F5, and maybe the watch on the file before it: a's latest version made every cell of a.
            latest = max(v["version"] for v in controller.versions() if v["column"] == "a")
            out = await quit_and_read(pilot, app, controller)
    assert out["l"].tolist() == [f"Simulated answer to: Shout {2 * i}" for i in range(4)]
    assert out["a__version"].tolist() == [latest] * 4


async def test_the_help_lists_the_fixing_keys(tmp_path, make_controller):
    (tmp_path / "tui_help.py").write_text(FIXED)
    template = {"name": "b", "kind": "template", "template": "{{ a }}!"}
    controller = make_controller(pipeline(tmp_path, 2, columns("tui_help", template)), base_dir=tmp_path)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = plain(app.screen.query_one(".help-body", Static))
        for line in ("e  ", "f5  ", "c  ", "C  "):
            assert any(row.strip().startswith(line.strip()) for row in text.splitlines()), line
        assert "Reload a python column's function" in text and "Run the column again" in text
        await pilot.press("escape")
        await idle(pilot, app)
        await quit_and_read(pilot, app, controller)


async def test_a_function_file_rewritten_during_the_run_is_reloaded_and_its_failed_rows_retried(
    tmp_path, make_controller
):
    (tmp_path / "tui_watch.py").write_text(BROKEN)
    template = {"name": "b", "kind": "template", "template": "{{ a }}!"}
    controller = make_controller(pipeline(tmp_path, 4, columns("tui_watch", template), retries=0), base_dir=tmp_path)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await idle(pilot, app)
        (tmp_path / "tui_watch.py").write_text(FIXED + "# fixed\n")
        await until(pilot, lambda: controller.versions(), what="the changed file to be reloaded")
        assert [(v["column"], v["kind"]) for v in controller.versions()] == [("a", "reload")]
        app.grid.move_cursor(1, 0)
        await pilot.press("c")
        await idle(pilot, app)
        out = await quit_and_read(pilot, app, controller)
    assert out["b"].tolist() == ["0!", "2!", "4!", "6!"]


async def test_w_shows_the_diff_and_writes_the_pipeline_file(tmp_path, make_controller):
    (tmp_path / "tui_save.py").write_text(FIXED)
    config = pipeline(tmp_path, 2, columns("tui_save", {"name": "b", "kind": "template", "template": "{{ a }}!"}))
    path = tmp_path / "pipeline.yaml"
    path.write_text("# my pipeline\n" + yaml.safe_dump(config, sort_keys=False))
    controller = make_controller(path, base_dir=tmp_path)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await idle(pilot, app)
        controller.update_column("b", template="{{ a }}?")
        await pilot.press("w")
        assert isinstance(app.screen, PipelineDiffScreen)
        assert '+  template: "{{ a }}?"' in app.screen.diff
        await pilot.press("n")
        assert "{{ a }}!" in path.read_text()
        await pilot.press("w", "y")
        assert not isinstance(app.screen, PipelineDiffScreen)
        assert path.read_text().startswith("# my pipeline\n")
        assert yaml.safe_load(path.read_text())["columns"][1]["template"] == "{{ a }}?"
        await quit_and_read(pilot, app, controller)
