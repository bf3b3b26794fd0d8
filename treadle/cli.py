"""The `treadle` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from treadle.engine.errors import TreadleError
from treadle.engine.limits import LIMIT_MAX, WORKERS_MAX

if TYPE_CHECKING:
    from treadle.engine.response_cache import CacheMode

EXIT_USAGE = 2
T = TypeVar("T")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _workers(text: str) -> int:
    value = _positive_int(text)
    if value > WORKERS_MAX:
        raise argparse.ArgumentTypeError(f"expected at most {WORKERS_MAX} worker processes, got {value:,}")
    return value


def _limit(text: str) -> int:
    value = _positive_int(text)
    if value > LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"expected a number of at most {LIMIT_MAX:,}, got {value:,}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"treadle: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from treadle.sim import cli as sim_cli

    parser = _Parser(prog="treadle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a pipeline")
    run.add_argument("pipeline", type=Path, help="the pipeline YAML file")
    _add_run_arguments(run, "runs/<name>-<timestamp>")
    _add_display_arguments(run)

    demo = commands.add_parser("demo", help="the bundled table-QA example, offline, on the simulator")
    _add_run_arguments(demo, "runs/tableqa-<timestamp>")
    _add_display_arguments(demo)

    resume = commands.add_parser("resume", help="finish an interrupted or failed run in its directory")
    resume.add_argument("run_dir", type=Path, help="the run directory (holds run.json)")
    resume.add_argument(
        "--recompute", metavar="COLS", default="", help="comma-separated columns to redo (and their dependents)"
    )
    _add_workers_arguments(resume)
    _add_cache_arguments(resume)
    _add_display_arguments(resume)

    cache = commands.add_parser("cache", help="the response cache: what it holds, or clear it")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    info = cache_commands.add_parser("info", help="path, entries, size and hit rate of the last runs")
    clear = cache_commands.add_parser("clear", help="delete cached answers")
    for sub in (info, clear):
        sub.add_argument("--path", type=Path, metavar="FILE", help="a cache file (a pipeline's run.cache)")
    clear.add_argument("--older-than", type=float, metavar="DAYS", help="only answers made more than DAYS ago")

    trace = commands.add_parser("trace", help="export a run's task traces")
    trace.add_argument("run_dir", type=Path)
    export = trace.add_mutually_exclusive_group(required=True)
    export.add_argument("--chrome", type=Path, metavar="FILE", help="Chrome/Perfetto trace (.json or .gz)")
    export.add_argument("--jsonl", type=Path, metavar="FILE", help="JSON lines, one object per attempt")
    trace.add_argument("--no-queue", action="store_true", help="leave out the queue-wait spans")
    trace.add_argument("--events", type=Path, metavar="FILE", help="the run's --events file, for limit changes")

    report = commands.add_parser("report", help="metrics of a run: time, concurrency, cost, errors")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained HTML report")
    report.add_argument("--prices", type=Path, metavar="FILE", help="per-model prices (JSON/YAML) for the cost")
    report.add_argument("--events", type=Path, metavar="FILE", help="the run's --events file, for limit changes")

    validate = commands.add_parser("validate", help="check a pipeline, its seed files and references")
    validate.add_argument("pipeline", type=Path)

    sim = commands.add_parser("sim", help="run the OpenAI-compatible simulator")
    sim_cli.add_arguments(sim)
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    from treadle.engine.pipeline_loading import load_pipeline
    from treadle.engine.pipeline_validation import describe

    loaded = load_pipeline(args.pipeline)
    for line in describe(loaded):
        print(line)
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", type=Path, help=f"run directory (default {default_out})")
    parser.add_argument("--rows", type=_positive_int, help="run only the first N seed rows")
    parser.add_argument("--max-parallel", type=_limit, help="execution slots (overrides run.max_parallel)")
    _add_workers_arguments(parser)
    _add_cache_arguments(parser)


def _add_workers_arguments(parser: argparse.ArgumentParser) -> None:
    """How many workers and where (a run, or a resume: it may go on with others than it began with)."""
    parser.add_argument(
        "--workers", type=_workers, help="engine processes sharing the run's row groups (overrides run.workers)"
    )
    parser.add_argument(
        "--executor", choices=["local", "ray"], help="where the workers run (overrides run.executor; ray: Ray actors)"
    )
    parser.add_argument(
        "--ray-address", metavar="ADDR", help="the Ray cluster for --executor ray (overrides run.ray_address)"
    )


def _add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--no-cache", action="store_true", help="neither reuse nor store answers (response cache)")
    cache.add_argument("--refresh-cache", action="store_true", help="ask every request again, overwrite its answer")


def _cache_mode(args: argparse.Namespace) -> CacheMode:
    return "off" if args.no_cache else "refresh" if args.refresh_cache else "use"


def _add_display_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-ui", action="store_true", help="plain progress and a summary, no terminal app")
    parser.add_argument("--events", metavar="FILE|-", help="write run events as JSON lines to FILE or stdout")
    parser.add_argument("--serve", type=int, metavar="PORT", help="serve /snapshot and /events (SSE) while it runs")
    parser.add_argument("--serve-host", default="127.0.0.1", metavar="HOST", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--serve-token-env",
        metavar="VAR",
        help="variable holding the token clients must send (required beyond loopback)",
    )


def _wants_ui(args: argparse.Namespace) -> bool:
    """The terminal app, unless --no-ui, events go to stdout, or there is no terminal to draw on (CI)."""
    return not args.no_ui and args.events != "-" and sys.stdin.isatty() and sys.stdout.isatty()


def _start_up(build: Callable[[], T]) -> T:
    """`build()` (load a pipeline and its seed, build the run) on a thread while the main thread waits,
    so Ctrl-C or SIGTERM end the start-up at once (exit 130), however long a seed read blocks in C."""
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append((True, build()))
        except BaseException as exc:
            outcome.append((False, exc))
        finally:
            done.set()

    with _signals_interrupt():
        threading.Thread(target=target, name="treadle-start-up", daemon=True).start()
        done.wait()  # a signal's KeyboardInterrupt interrupts this wait
    built, value = outcome[0]
    if not built:
        raise value
    return value


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (even when SIGINT was inherited as ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _new_run(load: Callable[[], Any], args: argparse.Namespace, after=None, resumable: bool = True):
    """Start-up (`load()` gives the pipeline), then the run with the app or headless."""
    _start_fork_server(args)
    from treadle.engine.run import RunOptions
    from treadle.engine.workers import open_controller

    options = RunOptions(
        out=args.out,
        rows=args.rows,
        max_parallel=args.max_parallel,
        hold_open=_wants_ui(args),
        cache=_cache_mode(args),
        workers=args.workers,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    return _drive(_start_up(lambda: open_controller(load(), options)), args, after, resumable)


def _start_fork_server(args: argparse.Namespace) -> None:
    """`--workers N`: the server the workers are forked from starts its imports now, while this process
    loads the pipeline (a run.workers from the file starts it when the run opens)."""
    if (args.workers or 1) > 1 and args.executor != "ray":
        from treadle.engine.workers.forkserver import FORK_SERVER

        FORK_SERVER.start()


def _drive(controller, args: argparse.Namespace, after=None, resumable: bool = True):
    """Run with the terminal app or headless; `after(result)` returns lines to print at the end;
    `resumable`: whether `treadle resume` can go on with the run, and the end says how."""
    if _wants_ui(args):
        from treadle.headless import write_events_in_background
        from treadle.tui import run_tui

        with _serving(controller, args):
            write_events_in_background(controller, args.events)
            result = run_tui(controller)
        _print_after_the_app(result, after, resumable)
        return result

    from rich.console import Console

    from treadle.headless import Interrupts, run_headless

    console = Console(stderr=args.events == "-")
    interrupts = Interrupts()
    # Taken before the progress server gives out its address: whoever watches may stop the run at once.
    with interrupts.installed(), _serving(controller, args):
        result = run_headless(controller, console, interrupts, events=args.events, resumable=resumable)
    if after is not None:
        for line in after(result):
            console.print(line, highlight=False, soft_wrap=True)
    return result


def _print_after_the_app(result, after, resumable: bool) -> None:
    """Once the app has left the screen: how the run ended and where its files are (the person saw the
    rest in the app), then what `after` adds."""
    from rich.console import Console

    from treadle.headless import print_headline, print_where

    console = Console()
    print_headline(console, result)
    print_where(console, result, resumable)
    for line in after(result) if after is not None else []:
        console.print(line, highlight=False, soft_wrap=True)


@contextmanager
def _serving(controller, args: argparse.Namespace) -> Iterator[None]:
    """`--serve PORT`: /snapshot and /events while the run goes on."""
    if args.serve is None:
        yield
        return
    from treadle.serve import ProgressServer

    server = ProgressServer(controller, host=args.serve_host, port=args.serve, token=args.serve_token)
    print(f"live progress: {server.start()}/", file=sys.stderr)
    try:
        yield
    finally:
        server.stop()


def _serve_token(args: argparse.Namespace) -> str | None:
    from treadle.engine.errors import ConfigError, Problem
    from treadle.serve import is_loopback

    token = os.environ.get(args.serve_token_env) if args.serve_token_env else None
    if args.serve_token_env and not token:
        raise ConfigError([Problem("--serve-token-env", f"environment variable {args.serve_token_env} is not set")])
    if not is_loopback(args.serve_host) and not token:
        raise ConfigError([Problem("--serve-host", f"serving on {args.serve_host} needs --serve-token-env")])
    return token


def _cmd_run(args: argparse.Namespace) -> int:
    from treadle.engine.pipeline_loading import load_pipeline

    return _new_run(lambda: load_pipeline(args.pipeline), args).exit_code


def _cmd_resume(args: argparse.Namespace) -> int:
    from treadle.engine.controller import RunController
    from treadle.engine.run import RunOptions

    _start_fork_server(args)
    recompute = [name.strip() for name in args.recompute.split(",") if name.strip()]
    options = RunOptions(
        hold_open=_wants_ui(args),
        cache=_cache_mode(args),
        workers=args.workers,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    controller = _start_up(lambda: RunController.from_run_dir(args.run_dir, recompute=recompute, options=options))
    return _drive(controller, args).exit_code


def _write_jsonl(run_dir: Path, out: Path) -> int:
    """A run's trace as JSON lines, one object per attempt with the trace's fields (times from its
    session's start, as recorded); returns the number of lines."""
    import json

    from treadle.engine.errors import ConfigError, Problem
    from treadle.engine.trace_reader import read_table, trace_path

    if not trace_path(run_dir).exists():
        raise ConfigError([Problem(str(run_dir), "no trace here (not a run directory, or run.trace was false)")])
    table, _, _ = read_table(run_dir)
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    with open(out, "w", encoding="utf-8") as handle:
        for batch in table.to_batches(50_000):
            handle.writelines(dumps(record) + "\n" for record in batch.to_pylist())
    return table.num_rows


def _cmd_trace(args: argparse.Namespace) -> int:
    from treadle.engine.analysis.chrome_trace import export_chrome

    if args.jsonl is not None:
        print(f"wrote {_write_jsonl(args.run_dir, args.jsonl)} attempts to {args.jsonl}")
        return 0
    written = export_chrome(args.run_dir, args.chrome, queue_spans=not args.no_queue, events=args.events)
    print(f"wrote {written} events to {args.chrome} (open it in ui.perfetto.dev or chrome://tracing)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from treadle.engine.errors import ConfigError, Problem
    from treadle.report import load_prices, print_report, write_html_report

    try:
        prices = load_prices(args.prices) if args.prices else None
    except (OSError, ValueError) as exc:
        raise ConfigError([Problem(str(args.prices), str(exc))]) from None
    print_report(args.run_dir, Console(), prices, events=args.events)
    if args.html:
        write_html_report(args.run_dir, args.html, prices, events=args.events)
        print(f"wrote {args.html}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from treadle import demo

    def accuracy_line(result) -> list[str]:
        accuracy = demo.record_accuracy(result)
        return [
            f"accuracy: {accuracy['correct']}/{accuracy['rows']} = {accuracy['rate']:.1%} "
            f"({accuracy['wrong']} wrong, {accuracy['not_answered']} not answered)"
        ]

    with demo.demo_endpoint() as base_url:
        # Not resumable: its pipeline asks the simulator started here, on a port of its own for this run.
        result = _new_run(lambda: demo.load_demo(base_url), args, after=accuracy_line, resumable=False)
    return demo.exit_code(result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "serve", None) is not None:  # checked before anything is created
            args.serve_token = _serve_token(args)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "trace":
            return _cmd_trace(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "resume":
            return _cmd_resume(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "cache":
            from treadle.cache_cli import cmd_cache

            return cmd_cache(args)
        if args.command == "sim":
            from treadle.sim import cli as sim_cli

            return sim_cli.main_from_args(args)
    except TreadleError as exc:
        for line in str(exc).splitlines():
            print(f"treadle: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
