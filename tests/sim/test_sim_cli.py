"""`python -m treadle.sim`: prints its URL first, serves, stops cleanly; bad input is one line + exit 2."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from treadle.sim import SimConfig
from treadle.sim import __main__ as sim_main
from treadle.sim.cli import (
    URL_LINE_PREFIX,
    add_arguments,
    config_from_args,
    config_to_argv,
    event_loop_factory,
    main_from_args,
)


def post(url: str, body: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def start(*flags: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle.sim", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(URL_LINE_PREFIX), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.removeprefix(URL_LINE_PREFIX).strip()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_module_serves_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    key = "cli-secret-value"
    proc, url = start(
        "--latency-ms", "0", "--models", "a,b", "--api-key-env", "SIM_TEST_KEY", env={"SIM_TEST_KEY": key}
    )
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
        assert post(f"{url}/chat/completions", body)[0] == 401
        status, answer = post(f"{url}/chat/completions", body, key)
        assert status == 200 and answer["choices"][0]["message"]["content"] == "Simulated answer to: hi"
        assert post(f"{url}/chat/completions", {**body, "model": "c"}, key)[0] == 404
    finally:
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert key not in out + err


def test_the_process_serves_on_uvloop_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert event_loop_factory() is uvloop.new_event_loop


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--fail-rate", "2"], "fail_rate must be between 0 and 1"),
        (["--fail-rate", "0.6", "--drop-rate", "0.6"], "add up to more than 1"),
        (["--latency-ms", "-5"], "latency_ms must be"),
        (["--api-key-env", "TREADLE_SIM_SURELY_UNSET_VAR"], "TREADLE_SIM_SURELY_UNSET_VAR is not set"),
        (["--book", "/nonexistent/book.yaml"], "cannot read response book /nonexistent/book.yaml"),
        (["--limit-window-s", "0"], "limit_window_s must be a finite number > 0, got 0.0"),
        (["--limit-window-s", "inf"], "limit_window_s must be a finite number > 0, got inf"),
        (["--overload-rate", "1.5"], "overload_rate must be between 0 and 1"),
        (["--fail-rate", "0.5", "--overload-rate", "0.6"], "add up to more than 1"),
        (["--overload-retry-after-s", "-1"], "overload_retry_after_s must be a finite number >= 0"),
        (["--fail-retry-after-s", "nan"], "fail_retry_after_s must be a finite number >= 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert complaint in err
    assert err.count("\n") == 1 and err.startswith("treadle sim: ")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--rpm", "lots"], "--rpm: invalid int value: 'lots'"),
        (["--retry-after-format", "hours"], "--retry-after-format: invalid choice: 'hours'"),
        (["--limit-window-s", "soon"], "--limit-window-s: invalid float value: 'soon'"),
    ],
)
def test_bad_flag_is_one_line_and_exit_2(
    argv: list[str], complaint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m treadle.sim", *argv])
    with pytest.raises(SystemExit) as caught:
        sim_main.main()
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"limit_window_s": -2.0}, "limit_window_s must be a finite number > 0"),
        ({"retry_after_format": "hours"}, "retry_after_format must be one of seconds, date, ms, got 'hours'"),
        ({"overload_rate": -0.1}, "overload_rate must be between 0 and 1"),
        ({"overload_retry_after_s": float("inf")}, "overload_retry_after_s must be a finite number >= 0"),
        ({"fail_retry_after_s": -0.5}, "fail_retry_after_s must be a finite number >= 0"),
    ],
)
def test_config_rejects_bad_new_values_in_one_line(changes: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        SimConfig(**changes)
    assert complaint in str(caught.value) and "\n" not in str(caught.value)


def test_invalid_book_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    book = tmp_path / "book.yaml"
    book.write_text("rules: [{match: '(', reply: x}]")
    assert run_cli(["--port", "0", "--book", str(book)]) == 2
    err = capsys.readouterr().err
    assert "bad regex" in err and err.count("\n") == 1


def test_flags_map_onto_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        shlex.split(
            "--latency-ms 5 --jitter-ms 2 --latency-dist lognormal --tokens-per-s 40 --rpm 10 --tpm 900"
            " --fail-rate 0.1 --hang-rate 0.1 --malformed-rate 0.1 --drop-rate 0.1 --seed 3 --models x,y"
            " --reasoning --limit-window-s 2 --no-ratelimit-headers --retry-after-format date"
            " --overload-rate 0.1 --overload-retry-after-s 4 --fail-retry-after-s 0.5"
        )
    )
    config = config_from_args(args)
    assert (config.latency_ms, config.jitter_ms, config.latency_dist) == (5, 2, "lognormal")
    assert (config.tokens_per_s, config.rpm, config.tpm, config.seed) == (40, 10, 900, 3)
    assert config.fault_rates() == {"fail": 0.1, "hang": 0.1, "malformed": 0.1, "drop": 0.1, "overload": 0.1}
    assert config.models == ("x", "y") and config.reasoning and config.api_key is None
    assert (config.limit_window_s, config.ratelimit_headers, config.retry_after_format) == (2, False, "date")
    assert (config.overload_retry_after_s, config.fail_retry_after_s) == (4, 0.5)


def test_defaults_of_the_new_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args([]))
    assert (config.limit_window_s, config.ratelimit_headers, config.retry_after_format) == (60, True, "seconds")
    assert (config.overload_rate, config.overload_retry_after_s, config.fail_retry_after_s) == (0, 1, None)


@pytest.mark.parametrize(
    "config",
    [
        SimConfig(),
        SimConfig(
            rpm=1200,
            tpm=5000,
            limit_window_s=2.5,
            ratelimit_headers=False,
            limit_per_model=True,
            retry_after_format="ms",
            overload_rate=0.2,
            overload_retry_after_s=0.75,
            fail_rate=0.1,
            fail_retry_after_s=3.0,
            seed=4,
            models=("a",),
            reasoning=True,
            api_key="child-key",
        ),
    ],
)
def test_config_to_argv_rebuilds_the_config(config: SimConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    argv, env = config_to_argv(config)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(argv)) == config
