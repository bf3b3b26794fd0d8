"""Find the Python function a `kind: python` column names (`module:function`) and tell how to call it.

A module is looked up beside the pipeline file first, then on the normal import path. To import it
from the pipeline's folder, that folder is put on `sys.path` (once, and left there): the user's
module may import its siblings (`import helpers`) at import time or later when it runs, and worker
processes re-import functions by module name, so both need the folder on the path for the whole run.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import linecache
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treadle.engine.errors import TreadleError

__all__ = [
    "FunctionLoadError",
    "accepts_context",
    "function_file",
    "is_async_function",
    "local_modules",
    "module_source",
    "reload_function",
    "resolve_function",
    "signature_problem",
]

_SPEC = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")


class FunctionLoadError(TreadleError):
    """A `module:function` that cannot be resolved; the message is one line, without the place."""


def resolve_function(spec: str, base_dir: Path) -> Callable[..., Any]:
    """The callable `spec` (`module:function`, `pkg.mod:func` or `mod:Class.method`) names.

    Raises `FunctionLoadError` for a malformed spec, a module that cannot be found or raises while
    importing, a missing attribute, or an attribute that is not callable.
    """
    match = _SPEC.match(spec.strip())
    if match is None:
        raise FunctionLoadError(
            f"'{spec}' is not of the form module:function (for example tableqa:describe or pkg.mod:func)"
        )
    module_name, attr_path = match["module"], match["attr"]
    return _attribute(_import(module_name, Path(base_dir)), module_name, attr_path, spec)


def module_source(spec: str, base_dir: Path) -> bytes:
    """The text of the module `spec` (`module:function`) names, as its file is now.

    Raises `FunctionLoadError` (one line) as `resolve_function` does, and for a module without a file.
    """
    resolve_function(spec, base_dir)  # the module as first imported: where its file is
    return Path(_source_file(spec)).read_bytes()


def reload_function(spec: str, base_dir: Path, source: bytes | None = None) -> Callable[..., Any]:
    """The callable `spec` names, from its module's file as it is now (or from `source`, that file's text
    as another process read it: a worker on another machine runs what the parent checked); the module is
    executed again as a new module object, left out of `sys.modules`, so what imported it before keeps
    what it has.

    Raises `FunctionLoadError` (one line) as `resolve_function` does, and for a module without a file.
    """
    resolve_function(spec, base_dir)  # the module as first imported: where its file is
    module_name, _, attr_path = spec.strip().partition(":")
    origin = _source_file(spec)
    module_spec = importlib.util.spec_from_file_location(module_name, origin)
    assert module_spec is not None
    module = importlib.util.module_from_spec(module_spec)
    try:
        # Compiled from the source, not through the loader: a file rewritten within the same second at
        # the same size would otherwise come back from its stale bytecode cache.
        code = compile(Path(origin).read_bytes() if source is None else source, origin, "exec")
        linecache.checkcache(origin)
        exec(code, module.__dict__)
    except BaseException as exc:  # the user's module may raise anything on import
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FunctionLoadError(_import_failure(module_name, exc)) from None
    return _attribute(module, module_name, attr_path, spec)


def _source_file(spec: str) -> str:
    """The source file of the (imported) module `spec` names."""
    module_name = spec.strip().partition(":")[0]
    origin = _origin(sys.modules.get(module_name))
    if origin is None or not origin.endswith(".py"):
        raise FunctionLoadError(f"module '{module_name}' has no source file to reload")
    return origin


def local_modules(base_dir: Path) -> list[str]:
    """The modules beside the pipeline, which its functions may import: its folder's `.py` files and
    packages (folders with an `__init__.py`); what a worker on another machine needs sent to it."""
    if not base_dir.is_dir():
        return []
    found = [p for p in base_dir.iterdir() if p.suffix == ".py" and p.is_file()]
    found += [p for p in base_dir.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    return sorted(str(p) for p in found)


def function_file(spec: str) -> Path | None:
    """The source file of the module `spec` (`module:function`) was imported from, once it has been."""
    origin = _origin(sys.modules.get(spec.strip().partition(":")[0]))
    return Path(origin) if origin is not None and origin.endswith(".py") else None


def _attribute(module: Any, module_name: str, attr_path: str, spec: str) -> Callable[..., Any]:
    obj: Any = module
    owner = f"module '{module_name}'"
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise FunctionLoadError(f"{owner} has no attribute '{part}'{hint}")
        obj = getattr(obj, part)
        owner = f"'{module_name}:{part}'"
    if not callable(obj):
        kind = type(obj).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise FunctionLoadError(f"'{spec}' is {article} {kind}, not a function")
    return obj


def _import(module_name: str, base_dir: Path) -> Any:
    top = module_name.partition(".")[0]
    local = importlib.machinery.PathFinder.find_spec(top, [str(base_dir)])
    try:
        if local is not None:
            _import_local_top(top, local, base_dir)
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            where = f"beside the pipeline ({base_dir})" if local is None else f"in {base_dir}"
            raise FunctionLoadError(f"no module named '{missing}' {where} or on the Python path") from None
        raise FunctionLoadError(_import_failure(module_name, exc)) from None
    except FunctionLoadError:
        raise
    except BaseException as exc:  # the user's module may raise anything, even SystemExit, on import
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FunctionLoadError(_import_failure(module_name, exc)) from None


def _import_local_top(top: str, spec: importlib.machinery.ModuleSpec, base_dir: Path) -> None:
    """Import the top-level module found in base_dir under its own name.

    If a module of that name is already loaded from elsewhere (another pipeline's `funcs.py` in the
    same process), it and its submodules are forgotten so this folder's module is the one imported.
    """
    folder = str(base_dir)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if spec.origin is None or spec.loader is None:  # a namespace package: the path entry is enough
        return
    loaded = sys.modules.get(top)
    if loaded is not None:
        if _origin(loaded) == spec.origin:
            return
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(top, None)
        raise


def _origin(module: Any) -> str | None:
    spec = getattr(module, "__spec__", None)
    return getattr(spec, "origin", None) or getattr(module, "__file__", None)


def _import_failure(module_name: str, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        file = Path(exc.filename).name if exc.filename else module_name
        return f"module '{module_name}' has a syntax error at {file} line {exc.lineno}: {exc.msg}"
    message = " ".join(str(exc).split())
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {Path(frames[-1].filename).name} line {frames[-1].lineno}" if frames else ""
    detail = f": {message}" if message else ""
    return f"importing module '{module_name}' raised {type(exc).__name__}{at}{detail}"


def is_async_function(fn: Callable[..., Any]) -> bool:
    """True for a coroutine function, a partial of one, or an object whose `__call__` is one."""
    if inspect.isclass(fn):
        return False
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the method itself, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def _positional(fn: Callable[..., Any]) -> tuple[list[inspect.Parameter], bool] | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    star = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return positional, star


def accepts_context(fn: Callable[..., Any]) -> bool:
    """True when `fn` takes a second positional argument (the run context) after the row."""
    shape = _positional(fn)
    if shape is None:
        return False
    positional, star = shape
    return len(positional) >= 2 or star


def signature_problem(fn: Callable[..., Any]) -> str | None:
    """Why `fn` cannot be called as `fn(row)` or `fn(row, ctx)`, or None when it can."""
    shape = _positional(fn)
    if shape is None:
        return None
    positional, star = shape
    if not positional and not star:
        return "takes no positional argument; it must accept the row (def f(row) or def f(row, ctx))"
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(required) > 2:
        names = ", ".join(p.name for p in required)
        return f"needs {len(required)} arguments ({names}); it is called with the row and, optionally, a context"
    try:
        required_kw = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
        ]
    except (TypeError, ValueError):
        required_kw = []
    if required_kw:
        return f"has required keyword-only argument(s) {', '.join(required_kw)}, which treadle never passes"
    return None
