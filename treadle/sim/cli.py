"""Command line: `treadle sim ...` / `python -m treadle.sim ...` flags, and running until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .book import BookError
from .config import LATENCY_DISTS, RETRY_AFTER_FORMATS, SimConfig
from .runner import serve

URL_LINE_PREFIX = "treadle sim listening on "
_KEY_ENV_FOR_CHILD = "TREADLE_SIM_API_KEY"  # how SimulatorProcess hands a key over without argv
_GC_THRESHOLDS = (20_000, 50, 100)
"""A served request makes many short-lived objects and few cycles: with Python's default thresholds (700,
10, 10) the collector took a quarter of the simulator's CPU at 1,000 requests in flight (bench/scale.py)."""


AddArgument = Callable[..., argparse.Action]
"""An argument group's `add_argument`."""

ENDPOINTS_HELP = (
    "Besides /v1/models and /v1/chat/completions it serves GET /stats (counters), GET /requests[?since=N]"
    " (each chat request: arrival time, model, status, retry hint sent) and POST /stats/reset (clears both)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's flags, in groups (--help shows each under its title)."""
    if parser.epilog is None:
        parser.epilog = ENDPOINTS_HELP
    _add_server_arguments(parser.add_argument_group("server").add_argument)
    _add_latency_arguments(parser.add_argument_group("latency").add_argument)
    _add_rate_limit_arguments(parser.add_argument_group("rate limits").add_argument)
    _add_fault_arguments(parser.add_argument_group("faults").add_argument)
    _add_answer_arguments(parser.add_argument_group("answers").add_argument)


def _add_server_arguments(add: AddArgument) -> None:
    add("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    add("--port", metavar="N", type=int, default=8000, help="port; 0 picks a free one (default: %(default)s)")
    add("--models", metavar="A,B", default="", help="comma-separated model names to accept (default: any)")
    add("--api-key-env", metavar="NAME", default=None, help="require the key held in this env variable")


def _add_latency_arguments(add: AddArgument) -> None:
    add(
        "--latency-ms",
        metavar="MS",
        type=float,
        default=300.0,
        help="mean latency per request (default: %(default)s)",
    )
    add("--jitter-ms", metavar="MS", type=float, default=0.0, help="uniform +- jitter around the mean latency")
    add("--latency-dist", choices=LATENCY_DISTS, default="uniform", help="latency distribution")
    add("--latency-sigma", metavar="S", type=float, default=0.5, help="shape of the lognormal distribution")
    add(
        "--tokens-per-s",
        metavar="N",
        type=float,
        default=0.0,
        help="completion tokens add time at this rate (0: off)",
    )


def _add_rate_limit_arguments(add: AddArgument) -> None:
    add("--rpm", metavar="N", type=int, default=0, help="requests per minute before 429 (0: unlimited)")
    add(
        "--tpm",
        metavar="N",
        type=int,
        default=0,
        help="prompt + completion tokens per minute before 429 (0: unlimited)",
    )
    add(
        "--limit-window-s",
        metavar="S",
        type=float,
        default=60.0,
        help="burst size of --rpm/--tpm in seconds of their rate: 60 lets a minute's allowance through at once"
        " (as OpenAI), 2 is a short sliding window (--rpm 1200: 40 at once, then 20/s) (default: %(default)s)",
    )
    add(
        "--no-ratelimit-headers",
        dest="ratelimit_headers",
        action="store_false",
        help="send no x-ratelimit-* headers (by default every chat answer has them while --rpm/--tpm is set)",
    )
    add(
        "--limit-per-model",
        action="store_true",
        help="apply --rpm/--tpm to each model apart, as providers do (default: to all requests together)",
    )
    add(
        "--retry-after-format",
        choices=RETRY_AFTER_FORMATS,
        default="seconds",
        help="how 429s, 503s and retryable 500s tell the wait: 'seconds' = Retry-After: <int> plus retry-after-ms,"
        " 'date' = Retry-After: <HTTP-date>, 'ms' = retry-after-ms only (default: %(default)s)",
    )


def _add_fault_arguments(add: AddArgument) -> None:
    add("--fail-rate", metavar="P", type=float, default=0.0, help="probability of a 500 answer")
    add(
        "--fail-retry-after-s",
        metavar="S",
        type=float,
        default=None,
        help="500 answers ask the client to wait this long (default: no retry hint)",
    )
    add(
        "--overload-rate",
        metavar="P",
        type=float,
        default=0.0,
        help="probability of an immediate 503 'overloaded' answer with a retry hint",
    )
    add(
        "--overload-retry-after-s",
        metavar="S",
        type=float,
        default=1.0,
        help="the wait an overload 503 asks for (default: %(default)s)",
    )
    add("--hang-rate", metavar="P", type=float, default=0.0, help="probability of never answering")
    add(
        "--malformed-rate",
        metavar="P",
        type=float,
        default=0.0,
        help="probability of a 200 with a broken JSON body",
    )
    add(
        "--drop-rate",
        metavar="P",
        type=float,
        default=0.0,
        help="probability of closing the connection unanswered",
    )
    add(
        "--hang-max-s",
        metavar="S",
        type=float,
        default=600.0,
        help="a hung request is released after this long",
    )
    add("--seed", metavar="N", type=int, default=None, help="make latency and faults repeatable")


def _add_answer_arguments(add: AddArgument) -> None:
    add("--book", metavar="FILE", default=None, help="YAML response book (regex -> templated reply)")
    add("--reasoning", action="store_true", help="add reasoning_content to every answer")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Raises ValueError with a one-line reason for bad values."""
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env: environment variable {args.api_key_env} is not set")
    return SimConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        latency_dist=args.latency_dist,
        latency_sigma=args.latency_sigma,
        tokens_per_s=args.tokens_per_s,
        rpm=args.rpm,
        tpm=args.tpm,
        limit_window_s=args.limit_window_s,
        ratelimit_headers=args.ratelimit_headers,
        limit_per_model=args.limit_per_model,
        retry_after_format=args.retry_after_format,
        fail_rate=args.fail_rate,
        hang_rate=args.hang_rate,
        malformed_rate=args.malformed_rate,
        drop_rate=args.drop_rate,
        overload_rate=args.overload_rate,
        overload_retry_after_s=args.overload_retry_after_s,
        fail_retry_after_s=args.fail_retry_after_s,
        hang_max_s=args.hang_max_s,
        seed=args.seed,
        book=args.book,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        api_key=api_key,
        reasoning=args.reasoning,
    )


def config_to_argv(config: SimConfig) -> tuple[list[str], dict[str, str]]:
    """The flags (and extra environment, for the key) that rebuild `config` in a child process."""
    argv = [
        *("--latency-ms", str(config.latency_ms), "--jitter-ms", str(config.jitter_ms)),
        *("--latency-dist", config.latency_dist, "--latency-sigma", str(config.latency_sigma)),
        *("--tokens-per-s", str(config.tokens_per_s), "--rpm", str(config.rpm), "--tpm", str(config.tpm)),
        *("--fail-rate", str(config.fail_rate), "--hang-rate", str(config.hang_rate)),
        *("--malformed-rate", str(config.malformed_rate), "--drop-rate", str(config.drop_rate)),
        *("--hang-max-s", str(config.hang_max_s), "--limit-window-s", str(config.limit_window_s)),
        *("--retry-after-format", config.retry_after_format, "--overload-rate", str(config.overload_rate)),
        *("--overload-retry-after-s", str(config.overload_retry_after_s)),
    ]
    env: dict[str, str] = {}
    if not config.ratelimit_headers:
        argv.append("--no-ratelimit-headers")
    if config.limit_per_model:
        argv.append("--limit-per-model")
    if config.fail_retry_after_s is not None:
        argv += ["--fail-retry-after-s", str(config.fail_retry_after_s)]
    if config.seed is not None:
        argv += ["--seed", str(config.seed)]
    if config.book:
        argv += ["--book", str(Path(config.book).resolve())]
    if config.models:
        argv += ["--models", ",".join(config.models)]
    if config.api_key:
        argv += ["--api-key-env", _KEY_ENV_FOR_CHILD]
        env[_KEY_ENV_FOR_CHILD] = config.api_key
    if config.reasoning:
        argv.append("--reasoning")
    return argv, env


def main_from_args(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM (exit 0). Bad flags or book: one line on stderr, exit 2."""
    try:
        config = config_from_args(args)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_serve_until_stopped(config, args.host, args.port))
    except (BookError, ValueError) as exc:
        print(f"treadle sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"treadle sim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency, except on Windows): its loop and sockets,
    written in C, take ~17% off this process's instructions per request (bench/RESULTS.md). None: asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve_until_stopped(config: SimConfig, host: str, port: int) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)

    def announce(url: str) -> None:
        # This process only serves: what exists now (modules, the app) lives as long as it and is never
        # traversed again, and young collections run less often.
        gc.freeze()
        gc.set_threshold(*_GC_THRESHOLDS)
        print(f"{URL_LINE_PREFIX}{url}", flush=True)

    # SIGTERM or Ctrl-C cancels serve(), which shuts the server down cleanly on its way out.
    with contextlib.suppress(asyncio.CancelledError):
        await serve(config, host=host, port=port, on_ready=announce)
