"""Read the seed table (csv, jsonl/json, parquet; `seed_readers`) and its optional inner join, with one-line errors.

Reads block; the caller runs them in a thread. Every problem is a `Problem` whose place starts with a
file name: the data file for what is wrong inside it (`questions.jsonl: line 7`), the pipeline's key
for what is wrong with the reference to it (`pipeline.yaml: seed.join.on`).

Column names present in both joined files (other than the key) keep the seed file's name; the join
file's copy is renamed `<name>_<join file stem>` (`text` from `labels.jsonl` becomes `text_labels`),
and the report lists every rename. Refusing would leave a user no way out but editing a data file.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from treadle.engine.errors import ConfigError, Problem
from treadle.engine.pipeline import SeedConfig
from treadle.engine.seed_readers import SUFFIXES, load_rows, load_table
from treadle.engine.seed_rows import SeedRows

__all__ = ["SUFFIXES", "JoinReport", "SeedTable", "load_seed", "load_table"]

_EXAMPLES = 3


@dataclass(frozen=True)
class JoinReport:
    """How the inner join of the seed file with the join file went."""

    left: str
    """The seed file, as the pipeline names it."""
    right: str
    """The join file, as the pipeline names it."""
    key: str
    matched: int
    """Rows in both files: the seed's rows."""
    left_only: int
    """Seed file rows with no partner (dropped)."""
    right_only: int
    """Join file rows with no partner (unused)."""
    left_only_examples: tuple[str, ...] = ()
    right_only_examples: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()
    """(join file column, its name in the seed) for names both files have."""


@dataclass
class SeedTable:
    """The rows a run works on: one per seed row (after the join), index 0..n-1: a frame, or for a large
    parquet seed without a join, its rows read as they are asked for (`seed_readers.ParquetRows`)."""

    frame: SeedRows
    fields: list[str]
    join: JoinReport | None = None

    def __len__(self) -> int:
        return len(self.frame)


def load_seed(seed: SeedConfig, base_dir: Path, file: str) -> SeedTable:
    """Read the seed table (and its join) relative to `base_dir`.

    `file` names the pipeline file, whose `seed.*` keys are where a bad reference is reported. Raises
    `ConfigError` with every problem found in both files.
    """
    base_dir = Path(base_dir)
    problems: list[Problem] = []
    if seed.join is None:
        rows = _load_one(seed.path, base_dir, file, "seed.path", problems, lazy=True)
        if problems or rows is None:
            raise ConfigError(problems)
        return SeedTable(frame=rows, fields=list(rows.columns))
    left = _load_one(seed.path, base_dir, file, "seed.path", problems)
    right = _load_one(seed.join.path, base_dir, file, "seed.join.path", problems)
    key = seed.join.on
    for frame, shown in ((left, seed.path), (right, seed.join.path)):
        if frame is not None and key not in frame.columns:
            problems.append(Problem(file, _missing_key(key, shown, list(frame.columns)), key="seed.join.on"))
    if left is None or right is None or problems:
        raise ConfigError(problems)
    frame, report = _inner_join(left, right, seed.path, seed.join.path, key, file, problems)
    if problems:
        raise ConfigError(problems)
    return SeedTable(frame=frame, fields=list(frame.columns), join=report)


def _load_one(typed: str, base_dir: Path, file: str, key: str, problems: list[Problem], *, lazy: bool = False) -> Any:
    """The table the pipeline's `key` names `typed` (with `lazy`, maybe `ParquetRows`), or None with its
    problems added."""
    path = base_dir / typed
    if Path(typed).suffix.lower() not in SUFFIXES:
        suffix = Path(typed).suffix or "(none)"
        message = f"'{typed}' has unknown file type '{suffix}' (expected {', '.join(SUFFIXES)})"
        problems.append(Problem(file, message, key=key))
        return None
    if not path.exists():
        problems.append(Problem(file, f"file '{typed}' not found (looked in {base_dir})", key=key))
        return None
    try:
        return load_rows(path, name=typed, lazy=lazy)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


def _missing_key(key: str, shown: str, columns: list[str]) -> str:
    close = [c for c in columns if c.lower() == key.lower()] or difflib.get_close_matches(key, columns, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    listed = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    return f"join key '{key}' is not a column of {shown} (its columns: {listed}){hint}"


def _comparable(left: pd.Series, right: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Key values that compare across files: numbers with numbers, else both as text (1 and "1" match)."""
    numeric = pd.api.types.is_numeric_dtype
    if numeric(left) == numeric(right):
        return left, right
    return left.map(_key_text, na_action="ignore"), right.map(_key_text, na_action="ignore")


def _key_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _duplicates(keys: pd.Series, shown: str, key: str) -> Problem | None:
    counts = keys.dropna().value_counts()
    dups = counts[counts > 1]
    if dups.empty:
        return None
    listed = ", ".join(f"{_show(v)} ({n} rows)" for v, n in list(dups.items())[:_EXAMPLES])
    more = f" and {len(dups) - _EXAMPLES} more" if len(dups) > _EXAMPLES else ""
    return Problem(shown, f"join key '{key}' is not unique: {listed}{more}")


def _inner_join(
    left: pd.DataFrame,
    right: pd.DataFrame,
    left_name: str,
    right_name: str,
    key: str,
    file: str,
    problems: list[Problem],
) -> tuple[pd.DataFrame, JoinReport]:
    lkeys, rkeys = _comparable(left[key], right[key])
    for keys, shown in ((lkeys, left_name), (rkeys, right_name)):
        if problem := _duplicates(keys, shown, key):
            problems.append(problem)
    partner = _partners(lkeys, rkeys) if not problems else np.full(len(left), -1)
    lpos = np.flatnonzero(partner >= 0)
    rpos = partner[lpos]
    used = np.zeros(len(right), dtype=bool)
    used[rpos] = True
    renames = _renames(left, right, left_name, right_name, key, file, problems)
    report = JoinReport(
        left=left_name,
        right=right_name,
        key=key,
        matched=len(lpos),
        left_only=len(left) - len(lpos),
        right_only=int((~used).sum()),
        left_only_examples=_examples(left[key], np.flatnonzero(partner < 0)),
        right_only_examples=_examples(right[key], np.flatnonzero(~used)),
        renamed=tuple(renames.items()),
    )
    if not problems and len(lpos) == 0:
        problems.append(_no_match(left[key], right[key], left_name, right_name, key, file))
    if problems:
        return left.iloc[:0], report
    joined_right = right.iloc[rpos].drop(columns=[key]).rename(columns=renames).reset_index(drop=True)
    frame = pd.concat([left.iloc[lpos].reset_index(drop=True), joined_right], axis=1)
    return frame, report


def _partners(lkeys: pd.Series, rkeys: pd.Series) -> np.ndarray:
    """For each left row, the position of the right row with its key, or -1 (missing keys match nothing)."""
    rvalid = np.flatnonzero(~rkeys.isna().to_numpy())
    found = pd.Index(rkeys.to_numpy()[rvalid]).get_indexer(lkeys.to_numpy())
    partner = np.full(len(found), -1)
    hit = found >= 0
    partner[hit] = rvalid[found[hit]]
    return partner


def _renames(
    left: pd.DataFrame,
    right: pd.DataFrame,
    left_name: str,
    right_name: str,
    key: str,
    file: str,
    problems: list[Problem],
) -> dict[str, str]:
    """The join file's columns that the seed file has too, renamed `<name>_<join file stem>`."""
    stem = re.sub(r"\W", "_", Path(right_name).name.split(".")[0]) or "join"
    renames: dict[str, str] = {}
    for column in right.columns:
        if column == key or column not in left.columns:
            continue
        new = renames[column] = f"{column}_{stem}"
        if new in left.columns or new in right.columns:
            problems.append(
                Problem(
                    file,
                    f"column '{column}' is in both {left_name} and {right_name}, and '{new}' "
                    "(the join file's renamed copy) is taken too; rename one of them",
                    key="seed.join",
                )
            )
    return renames


def _no_match(left: pd.Series, right: pd.Series, left_name: str, right_name: str, key: str, file: str) -> Problem:
    lk = ", ".join(_examples(left, np.arange(len(left))))
    rk = ", ".join(_examples(right, np.arange(len(right))))
    return Problem(
        file,
        f"no row of {left_name} matched a row of {right_name} on '{key}' "
        f"(keys look like {lk} in {left_name} and {rk} in {right_name})",
        key="seed.join.on",
    )


def _examples(values: pd.Series, positions: np.ndarray) -> tuple[str, ...]:
    return tuple(_show(values.iloc[int(i)]) for i in positions[:_EXAMPLES])


def _show(value: Any) -> str:
    """A key as a user would write it: 'q1' for text, 7 for 7.0, null for a missing key."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    if isinstance(value, str):
        return repr(value)
    return _key_text(value)
