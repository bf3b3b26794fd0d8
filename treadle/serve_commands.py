"""Commands over `--serve`: fix a column and rerun cells while the run goes on (the controller's API).

```
POST /columns/{name}            {"prompt": "...", "system": "...", "temperature": 0.2, "max_tokens": 200}
                                or {"template": "..."}          -> {"version": N | null}
POST /columns/{name}/reload                                     -> {"version": N}
POST /columns/{name}/recompute  {"rows": [..], "dry_run": true} -> {"cells": N, "calls": M} (dry run)
                                                                   {"cells": N}
POST /retry                     {"columns": [..], "rows": [..], "cells": [[row, "col"], ..], "all_failed": true}
                                                                -> {"retried": N}
GET  /versions                                                  -> [{version, at, column, kind, changes}, ..]
POST /pipeline-file             {"save": true}                  -> {"diff": "<unified diff>"} (written with save)
```
A refused command answers 400 with `{"error": "<one line>"}`. Every POST must say `Content-Type:
application/json`: a web page cannot send that to another origin without the browser asking first
(CORS), and this server never says yes, so a page the user visits cannot command a loopback run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from treadle.engine.controller import RunController


def add_command_routes(app: web.Application, controller: RunController) -> None:
    commands = _Commands(controller)
    app.router.add_post("/columns/{name}", commands.update_column)
    app.router.add_post("/columns/{name}/reload", commands.reload_function)
    app.router.add_post("/columns/{name}/recompute", commands.recompute)
    app.router.add_post("/retry", commands.retry)
    app.router.add_get("/versions", commands.versions)
    app.router.add_post("/pipeline-file", commands.pipeline_file)


class _BadRequest(Exception):
    pass


class _Commands:
    def __init__(self, controller: RunController) -> None:
        self.controller = controller

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise _BadRequest("send the command as JSON (Content-Type: application/json)")
        if not request.can_read_body:
            return {}
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError as exc:
            raise _BadRequest(f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest("the body must be a JSON object")
        return body

    async def _answer(self, request: web.Request, command: Callable[[dict[str, Any]], Any]) -> web.Response:
        """Run `command(body)` off the server's loop (the controller waits for the engine loop)."""
        try:
            body = await self._body(request)
            result = await asyncio.get_running_loop().run_in_executor(None, command, body)
        except (_BadRequest, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    async def update_column(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return await self._answer(request, lambda body: {"version": self.controller.update_column(name, **body)})

    async def reload_function(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return await self._answer(request, lambda body: {"version": self.controller.reload_function(name)})

    async def recompute(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def recompute(body: dict[str, Any]) -> dict[str, int]:
            rows = _rows(body.get("rows"))
            if body.get("dry_run"):
                plan = self.controller.recompute_plan(name, rows)
                return {"cells": plan.cells, "calls": plan.calls}
            return {"cells": self.controller.recompute(name, rows)}

        return await self._answer(request, recompute)

    async def retry(self, request: web.Request) -> web.Response:
        def retry(body: dict[str, Any]) -> dict[str, int]:
            cells = [(int(row), str(column)) for row, column in body.get("cells") or ()]
            columns = body.get("columns")
            retried = self.controller.retry(
                cells=cells,
                rows=_rows(body.get("rows")) or (),
                all_failed=bool(body.get("all_failed")),
                columns=None if columns is None else [str(c) for c in columns],
            )
            return {"retried": retried}

        return await self._answer(request, retry)

    async def pipeline_file(self, request: web.Request) -> web.Response:
        def edit(body: dict[str, Any]) -> dict[str, str]:
            return {"diff": self.controller.pipeline_file_edit(save=bool(body.get("save")))}

        return await self._answer(request, edit)

    async def versions(self, request: web.Request) -> web.Response:
        history = await asyncio.get_running_loop().run_in_executor(None, self.controller.versions)
        return web.json_response(history)


def _rows(value: Any) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(row, int) and not isinstance(row, bool) for row in value):
        raise _BadRequest("rows must be a list of row numbers")
    return value
