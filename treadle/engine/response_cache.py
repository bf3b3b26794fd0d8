"""The response cache: LLM answers kept across runs in one SQLite file, so a run never pays twice.

Key: sha256 of a canonical JSON of everything that decides an answer: the endpoint's base URL and the
request body (model, every parameter, the rendered messages, the response format and its schema).
The API key is in no key and no value. Value: the answer (content, usage, reasoning, finish reason)
and when it was made. Only answers a cell accepted are stored (see generators/llm.py).

Lookups run on the engine loop: one indexed SELECT for up to 32 ready cells (bench/cache.py measures it).
Writes (new answers, and "last used" times for LRU eviction) go to a writer thread that commits them
in batches, one transaction each, so the loop never waits for the disk. The file is in WAL mode with
a busy timeout, so several treadle processes can share it. A file that cannot be opened, read or
written (locked, corrupt, unwritable) is reported once, to whoever `report_to` named (the run emits a
`cache_unavailable` event, which displays show as one warning line), and the run goes on without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from treadle.engine.analysis.cost import cost_of
from treadle.engine.events import CacheUnavailable, EventBus
from treadle.engine.pipeline import LLMColumn, ModelConfig, PipelineConfig

CacheMode = Literal["use", "off", "refresh"]
"""`use`: answers are reused and stored; `off` (--no-cache): neither; `refresh` (--refresh-cache):
every request is sent again and its answer overwrites the stored one."""
CACHE_FILE = "responses.sqlite"
DEFAULT_MAX_MB = 2048
_BUSY_TIMEOUT_MS = 5000
_READ_BUSY_TIMEOUT_MS = 50
"""A lookup on the engine loop waits at most this long for a lock; then it is a miss."""
_BATCH = 2000
_MAX_KEYS = 64
"""Keys looked up in one SELECT at most (callers pass fewer: ReadyHeaps looks up 32 cells at a time)."""
_SELECT_MANY = [""] + [
    f"SELECT key, answer FROM responses WHERE key IN ({', '.join('?' * n)})" for n in range(1, _MAX_KEYS + 1)
]
WRITE_INTERVAL_S = 0.25
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    answer TEXT NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_used ON responses(used);
CREATE TABLE IF NOT EXISTS runs (
    at REAL NOT NULL,
    hits INTEGER NOT NULL,
    misses INTEGER NOT NULL
);
"""


def default_cache_path() -> Path:
    """`$XDG_CACHE_HOME/treadle/responses.sqlite`, or under `~/.cache` without XDG_CACHE_HOME."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "treadle" / CACHE_FILE


_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode
"""Canonical JSON: sorted keys, no spaces, text as is (one encoder, built once)."""
_MESSAGES_MARK = "\x00treadle-messages\x00"


def request_key(base_url: str, body: Mapping[str, Any]) -> str:
    """The cache key of a request: what it is sent to and what it says, canonically encoded."""
    return hashlib.sha256(_CANONICAL({"base_url": base_url, "body": body}).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RequestKeys:
    """The keys of one endpoint and body (all but the messages): the canonical JSON around the messages
    is encoded once, so a cell's key costs the encoding of its messages and one sha256."""

    before: str
    after: str

    @classmethod
    def of(cls, base_url: str, body: Mapping[str, Any]) -> RequestKeys:
        mark = _CANONICAL(_MESSAGES_MARK)
        before, after = _CANONICAL({"base_url": base_url, "body": {**body, "messages": _MESSAGES_MARK}}).split(mark)
        return cls(before, after)

    def messages(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """`request_key(base_url, {**body, "messages": messages})`, for a fraction of its cost."""
        return hashlib.sha256((self.before + _CANONICAL(messages) + self.after).encode()).hexdigest()

    def chat(self, prompt: str, system: str | None) -> str:
        """The key of the messages of an llm column's cell: a system message (if any), then the prompt.
        Their canonical JSON is written out here ("content" sorts before "role"): most of the cost of
        a cell answered by the cache is its key."""
        user = f'{{"content":{_CANONICAL(prompt)},"role":"user"}}'
        encoded = user if system is None else f'{{"content":{_CANONICAL(system)},"role":"system"}},{user}'
        return hashlib.sha256(f"{self.before}[{encoded}]{self.after}".encode()).hexdigest()


@dataclass
class CacheStats:
    """What the cache did in one run."""

    hits: int = 0
    misses: int = 0
    stored: int = 0
    tokens_saved: dict[str, list[int]] = field(default_factory=dict)
    """Per model: prompt and completion tokens the hits did not spend again."""

    def saved(self, model: str, usage: Mapping[str, Any] | None) -> None:
        if not usage:
            return
        tokens = self.tokens_saved.setdefault(model, [0, 0])
        tokens[0] += int(usage.get("prompt_tokens") or 0)
        tokens[1] += int(usage.get("completion_tokens") or 0)

    def to_json(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stored": self.stored,
            "hit_rate": round(self.hits / total, 4) if total else 0.0,
            "tokens_saved": {
                model: {"prompt": t[0], "completion": t[1]} for model, t in sorted(self.tokens_saved.items())
            },
        }


def _connect(path: Path, busy_ms: int) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout={busy_ms}")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class ResponseCache:
    """One run's view of the cache file: lookups on the caller's thread, writes on a writer thread."""

    def __init__(
        self,
        path: Path,
        mode: CacheMode = "use",
        max_mb: float = DEFAULT_MAX_MB,
    ) -> None:
        self.path = path
        self.mode = mode
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.stats = CacheStats()
        self.problem: str | None = None
        """Why the cache is not usable (it stays unused for the rest of the run); None while it is."""
        self._report: Callable[[str], object] | None = None
        self._report_lock = threading.Lock()
        """`_fail` runs on the engine loop or the writer thread; the problem is reported exactly once."""
        self._reader: sqlite3.Connection | None = None
        self._puts: deque[tuple[str, str]] = deque()
        """New answers (key, JSON); appending wakes no thread (the writer looks every WRITE_INTERVAL_S),
        so the loop pays only the append."""
        self._used: deque[str] = deque()
        """Keys of answers used again: their "last used" time (for LRU eviction) is when the writer commits."""
        self._closing = threading.Event()
        self._writer: threading.Thread | None = None
        self._failed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = _connect(path, _BUSY_TIMEOUT_MS)
            with writer:
                writer.executescript(_SCHEMA)
            self._reader = _connect(path, _READ_BUSY_TIMEOUT_MS)
            self._select = self._reader.execute  # bound once: lookups run for every cell
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return
        self._writer = threading.Thread(target=self._write_loop, args=(writer,), name="treadle-cache", daemon=True)
        self._writer.start()

    @property
    def usable(self) -> bool:
        return not self._failed

    def report_to(self, report: Callable[[str], object]) -> None:
        """Tell `report` why the cache is not usable, once: now if it already failed (when opened),
        else when it fails (on the caller's thread or the writer thread)."""
        with self._report_lock:
            self._report = report
            problem = self.problem
        if problem is not None:
            report(problem)

    def _fail(self, exc: BaseException) -> None:
        """Go on without the cache; the first failure is reported."""
        with self._report_lock:
            if self._failed:
                return
            self._failed = True
            self.problem = str(exc) or type(exc).__name__
            report = self._report
        if report is not None:
            report(self.problem)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer of `key` (content, usage, reasoning), or None (also in refresh mode)."""
        return self.get_many((key,)).get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored answers of those of `keys` that have one, in one SELECT per _MAX_KEYS keys (each
        key counts as a hit or a miss); nothing in refresh or off mode."""
        stats = self.stats
        if self._failed or self.mode != "use" or not keys:
            stats.misses += len(keys)
            return {}
        try:
            rows: list[tuple[str, str]] = []
            for start in range(0, len(keys), _MAX_KEYS):
                chunk = keys[start : start + _MAX_KEYS]
                rows += self._select(_SELECT_MANY[len(chunk)], chunk).fetchall()
        except sqlite3.OperationalError:  # locked for longer than a lookup may wait: ask the endpoint
            rows = []
        except sqlite3.Error as exc:  # corrupt
            self._fail(exc)
            rows = []
        found = {key: json.loads(answer) for key, answer in rows}
        hits = sum(key in found for key in keys) if len(found) != len(keys) else len(keys)
        stats.hits += hits
        stats.misses += len(keys) - hits
        self._used.extend(found)
        return found

    def put(self, key: str, answer: Mapping[str, Any]) -> None:
        """Store an accepted answer (written by the writer thread, in a batch)."""
        if self._failed or self.mode == "off":
            return
        self.stats.stored += 1
        self._puts.append((key, json.dumps(answer, ensure_ascii=False, separators=(",", ":"))))

    def _write_loop(self, connection: sqlite3.Connection) -> None:
        puts, used = self._puts, self._used
        while True:
            closing = self._closing.wait(WRITE_INTERVAL_S)
            while puts or used:
                new = [puts.popleft() for _ in range(min(len(puts), _BATCH))]
                again = [used.popleft() for _ in range(min(len(used), _BATCH))]
                if not self._failed:
                    try:
                        self._commit(connection, new, again)
                    except (sqlite3.Error, OSError) as exc:
                        self._fail(exc)
            if closing:
                break
        self._finish(connection)

    def _commit(self, connection: sqlite3.Connection, puts: list[tuple[str, str]], used: list[str]) -> None:
        now = time.time()
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                [(key, text, now, now, len(text)) for key, text in puts],
            )
            connection.executemany("UPDATE responses SET used = ? WHERE key = ?", [(now, key) for key in used])

    def _finish(self, connection: sqlite3.Connection) -> None:
        """At the end of the run: this run's hit counts, and eviction down to the size cap."""
        try:
            if not self._failed:
                with connection:
                    connection.execute("BEGIN IMMEDIATE")
                    connection.execute(
                        "INSERT INTO runs VALUES (?, ?, ?)", (time.time(), self.stats.hits, self.stats.misses)
                    )
                evict(connection, self.max_bytes)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
        finally:
            connection.close()

    def close(self) -> None:
        """Write what is queued, evict past the cap, close (blocks: call it off the engine loop)."""
        if self._writer is not None:
            self._closing.set()
            self._writer.join()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def evict(connection: sqlite3.Connection, max_bytes: int) -> int:
    """Delete the least recently used answers until the stored answers take at most `max_bytes`."""
    (total,) = connection.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()
    if total <= max_bytes:
        return 0
    excess = total - max_bytes
    oldest: list[tuple[str]] = []
    for key, size in connection.execute("SELECT key, size FROM responses ORDER BY used"):  # the index, lazily
        if excess <= 0:
            break
        oldest.append((key,))
        excess -= size
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("DELETE FROM responses WHERE key = ?", oldest)
    return len(oldest)


# ---- `treadle cache info | clear` ---------------------------------------------------------------------


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    entries: int
    size_bytes: int
    recent_runs: list[tuple[float, int, int]]
    """(time, hits, misses) of the last runs, newest first."""


def cache_info(path: Path, last_runs: int = 5) -> CacheInfo:
    """What the cache file holds (raises sqlite3.Error for a file that is not a cache)."""
    if not path.exists():
        return CacheInfo(path, 0, 0, [])
    connection = _connect(path, _BUSY_TIMEOUT_MS)
    try:
        connection.executescript(_SCHEMA)
        (entries,) = connection.execute("SELECT COUNT(*) FROM responses").fetchone()
        runs = connection.execute("SELECT at, hits, misses FROM runs ORDER BY at DESC LIMIT ?", (last_runs,)).fetchall()
    finally:
        connection.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    return CacheInfo(path, entries, size, [tuple(r) for r in runs])


def clear_cache(path: Path, older_than_days: float | None = None) -> int:
    """Delete every answer (or those made more than `older_than_days` ago); returns how many."""
    if not path.exists():
        return 0
    connection = _connect(path, _BUSY_TIMEOUT_MS)
    try:
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            if older_than_days is None:
                deleted = connection.execute("DELETE FROM responses").rowcount
                connection.execute("DELETE FROM runs")
            else:
                cutoff = time.time() - older_than_days * 86400
                deleted = connection.execute("DELETE FROM responses WHERE created < ?", (cutoff,)).rowcount
        if older_than_days is None:
            connection.execute("VACUUM")
    finally:
        connection.close()
    return deleted


# ---- a run's cache ------------------------------------------------------------------------------------


def open_run_cache(config: PipelineConfig, base_dir: Path, mode: CacheMode) -> ResponseCache | None:
    """The cache a run of `config` uses: None with `--no-cache`, or when no model or column reuses answers."""
    columns = [c for c in config.columns if isinstance(c, LLMColumn)]
    if mode == "off" or not (any(m.cache for m in config.models.values()) or any(c.cache for c in columns)):
        return None
    path = base_dir / config.run.cache if config.run.cache else default_cache_path()
    return ResponseCache(path, mode, config.run.cache_max_mb)


def attach_cache(generators: Sequence[object], config: PipelineConfig, cache: ResponseCache | None) -> None:
    """Give each llm column whose answers are reused (its `cache`, else its model's) the run's cache."""
    if cache is None or not cache.usable:
        return
    by_name = {c.name: c for c in config.columns}
    for generator in generators:
        column = by_name.get(getattr(generator, "name", ""))
        if isinstance(column, LLMColumn) and _column_cached(column, config):
            generator.cache = cache  # type: ignore[attr-defined]


def _column_cached(column: LLMColumn, config: PipelineConfig) -> bool:
    model = config.models.get(column.model)
    return column.cache if column.cache is not None else model is not None and model.cache


def emit_cache_problems(cache: ResponseCache | None, bus: EventBus, loop: asyncio.AbstractEventLoop) -> None:
    """The run's cache, if it fails (on `loop` or on its writer thread), is one `cache_unavailable`
    event, emitted on `loop` in order with the others (called when the run starts, after run_started)."""
    if cache is not None:
        path = str(cache.path)
        cache.report_to(lambda reason: loop.call_soon_threadsafe(bus.emit, CacheUnavailable(path=path, reason=reason)))


def cache_summary(cache: ResponseCache | None, models: Mapping[str, ModelConfig]) -> dict[str, Any]:
    """summary.json's `cache`: hits, misses, tokens saved and, for models with prices, the cost saved."""
    if cache is None:
        return {"enabled": False}
    summary = {"enabled": cache.usable, "path": str(cache.path), "mode": cache.mode, **cache.stats.to_json()}
    if cache.problem is not None:
        summary["problem"] = cache.problem
    cost = 0.0
    priced = False
    for model, (prompt, completion) in cache.stats.tokens_saved.items():
        prices = models[model].prices if model in models else None
        if prices is not None:
            priced = True
            cost += cost_of(prompt, completion, (prices.input_per_1m, prices.output_per_1m))
    summary["cost_saved"] = round(cost, 6) if priced else None
    return summary
