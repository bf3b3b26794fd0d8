"""The table-QA demo's questions (make_data.py picks from them): template families that each make
candidate questions about a table, with reference code, subtly wrong versions of it, and broken code."""

from __future__ import annotations

import calendar
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from make_data_tables import TableSpec


@dataclass
class Candidate:
    file: str
    family: str
    text: str
    type: str
    code: str
    wrongs: list[str]
    """Subtly wrong versions of `code`; only those giving a valid but different answer are kept."""
    columns: tuple[str, ...]
    """Columns the code uses; broken variants misspell the first."""
    answer: Any = None
    valid_wrongs: list[str] = field(default_factory=list)
    id: str = ""


def _fmt(value: Any) -> str:
    """A number as it appears in a question and in code (repr round-trips floats)."""
    return repr(value)


def _values(series: pd.Series) -> list[Any]:
    values = {v.item() if hasattr(v, "item") else v for v in series.dropna()}
    return sorted(values)


def _threshold(rng: random.Random, series: pd.Series, lo: float, hi: float) -> Any:
    values = _values(series)
    start = int(lo * len(values))
    return values[rng.randrange(start, max(start + 1, int(hi * len(values))))]


def _unique_extreme(series: pd.Series, largest: bool) -> bool:
    extreme = series.max() if largest else series.min()
    return int((series == extreme).sum()) == 1


Family = Callable[[random.Random, TableSpec, pd.DataFrame], list[Candidate]]


def fam_count_eq(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for cat in s.categorical:
        values = _values(df[cat])
        val = rng.choice(values)
        other = rng.choice([v for v in values if v != val])
        wrongs = [
            f"result = int((df[{cat!r}].str.lower() == {val!r}).sum())",
            f"result = int((df[{cat!r}] == {other!r}).sum())",
        ]
        text = f"How many {s.entity} have {cat} equal to {val}?"
        code = f"result = int((df[{cat!r}] == {val!r}).sum())"
        out.append(Candidate(s.file, "count_eq", text, "number", code, wrongs, (cat,)))
    return out


def fam_count_gt(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for num in s.numeric:
        thr = _fmt(_threshold(rng, df[num], 0.3, 0.8))
        text = f"How many {s.entity} have {num} greater than {thr}?"
        code = f"result = int((df[{num!r}] > {thr}).sum())"
        wrongs = [f"result = int((df[{num!r}] >= {thr}).sum())"]
        out.append(Candidate(s.file, "count_gt", text, "number", code, wrongs, (num,)))
    return out


_AGG_WORD = {"mean": "average", "max": "highest", "min": "lowest", "sum": "total"}
_AGG_ALT = {"mean": "median", "max": "min", "min": "max", "sum": "mean"}


def fam_agg_where(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for _ in range(3):
        num, cat = rng.choice(s.numeric), rng.choice(s.categorical)
        val = rng.choice(_values(df[cat]))
        agg = rng.choice(list(_AGG_WORD))
        word = _AGG_WORD[agg]
        text = f"What is the {word} {num} of {s.entity} with {cat} equal to {val}? Round to 2 decimals."
        subset = f"subset = df[df[{cat!r}] == {val!r}]\n"
        code = subset + f"result = round(float(subset[{num!r}].{agg}()), 2)"
        wrongs = [
            f"result = round(float(df[{num!r}].{agg}()), 2)",
            subset + f"result = round(float(subset[{num!r}].{_AGG_ALT[agg]}()), 2)",
        ]
        out.append(Candidate(s.file, "agg_where", text, "number", code, wrongs, (cat, num)))
    return out


def fam_median(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    num = rng.choice(s.numeric)
    text = f"What is the median {num} of all {s.entity}?"
    code = f"result = round(float(df[{num!r}].median()), 2)"
    wrongs = [f"result = round(float(df[{num!r}].mean()), 2)"]
    return [Candidate(s.file, "median", text, "number", code, wrongs, (num,))]


def fam_range(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    num = rng.choice(s.numeric)
    text = f"What is the difference between the largest and smallest {num}? Round to 2 decimals."
    code = f"result = round(float(df[{num!r}].max() - df[{num!r}].min()), 2)"
    wrongs = [f"result = round(float(df[{num!r}].max() - df[{num!r}].mean()), 2)"]
    return [Candidate(s.file, "range", text, "number", code, wrongs, (num,))]


def fam_argmax(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    if s.label is None:
        return []
    out = []
    for num in s.numeric:
        largest = rng.random() < 0.6
        if not _unique_extreme(df[num], largest):
            continue
        word, fn, anti = ("highest", "idxmax", "idxmin") if largest else ("lowest", "idxmin", "idxmax")
        text = f"Which {s.singular} has the {word} {num}?"
        if s.label != s.singular:
            text += f" Answer with its {s.label}."
        code = f"result = df.loc[df[{num!r}].{fn}(), {s.label!r}]"
        wrongs = [
            f"result = df.loc[df[{num!r}].{anti}(), {s.label!r}]",
            f"result = df.sort_values({num!r}, ascending={not largest}).iloc[1][{s.label!r}]",
        ]
        out.append(Candidate(s.file, "argmax", text, "string", code, wrongs, (num, s.label)))
    return out


def fam_group_argmax(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for cat in s.categorical:
        if df[cat].nunique() < 3:
            continue
        num = rng.choice(s.numeric)
        agg, other = rng.choice([("sum", "mean"), ("mean", "sum")])
        grouped = getattr(df.groupby(cat)[num], agg)()
        if int((grouped == grouped.max()).sum()) != 1:
            continue
        word = "total" if agg == "sum" else "average"
        text = f"Which {cat} has the highest {word} {num}?"
        code = f"result = df.groupby({cat!r})[{num!r}].{agg}().idxmax()"
        wrongs = [
            f"result = df.groupby({cat!r})[{num!r}].{other}().idxmax()",
            f"result = df.groupby({cat!r})[{num!r}].count().idxmax()",
        ]
        out.append(Candidate(s.file, "group_argmax", text, "string", code, wrongs, (cat, num)))
    return out


def fam_any_gt(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for num in rng.sample(s.numeric, min(2, len(s.numeric))):
        values = _values(df[num])
        thr = _fmt(values[-1] if rng.random() < 0.5 else _threshold(rng, df[num], 0.85, 0.97))
        text = f"Is there any {s.singular} with {num} greater than {thr}?"
        code = f"result = bool((df[{num!r}] > {thr}).any())"
        wrongs = [
            f"result = bool((df[{num!r}] >= {thr}).any())",
            f"result = bool((df[{num!r}] > {thr}).all())",
        ]
        out.append(Candidate(s.file, "any_gt", text, "boolean", code, wrongs, (num,)))
    return out


def fam_all_gt(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for num in s.numeric:
        if df[num].isna().any():
            continue
        low = _values(df[num])[0]
        thr = _fmt(low if rng.random() < 0.5 else math.floor(low) - 1)
        text = f"Do all {s.entity} have {num} greater than {thr}?"
        code = f"result = bool((df[{num!r}] > {thr}).all())"
        wrongs = [f"result = bool((df[{num!r}] >= {thr}).all())"]
        out.append(Candidate(s.file, "all_gt", text, "boolean", code, wrongs, (num,)))
    return out


def fam_all_where(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for b in s.boolean:
        cat = rng.choice(s.categorical)
        val = rng.choice(_values(df[cat]))
        text = f"Do all {s.entity} with {cat} equal to {val} have {b} set to true?"
        code = f"subset = df[df[{cat!r}] == {val!r}]\nresult = bool(subset[{b!r}].all())"
        wrongs = [f"subset = df[df[{cat!r}] == {val!r}]\nresult = bool(subset[{b!r}].any())"]
        out.append(Candidate(s.file, "all_where", text, "boolean", code, wrongs, (cat, b)))
    return out


def fam_distinct_where(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for cat in s.categorical:
        num = rng.choice(s.numeric)
        thr = _threshold(rng, df[num], 0.75, 0.95)
        chosen = df.loc[df[num] > thr, cat].nunique()
        if not 0 < chosen < df[cat].nunique():
            continue
        thr = _fmt(thr)
        text = f"List the distinct {cat} values of {s.entity} with {num} greater than {thr}."
        code = f"result = sorted(df.loc[df[{num!r}] > {thr}, {cat!r}].unique().tolist())"
        wrongs = [
            f"result = sorted(df.loc[df[{num!r}] >= {thr}, {cat!r}].unique().tolist())",
            f"result = sorted(df[{cat!r}].unique().tolist())",
        ]
        out.append(Candidate(s.file, "distinct_where", text, "list", code, wrongs, (num, cat)))
    return out


def fam_count_bool(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for b in s.boolean:
        text = f"How many {s.entity} have {b} set to true?"
        code = f"result = int(df[{b!r}].sum())"
        wrongs = [f"result = int((~df[{b!r}]).sum())", f"result = int(df[{b!r}].count())"]
        out.append(Candidate(s.file, "count_bool", text, "number", code, wrongs, (b,)))
    return out


def fam_pct_bool(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for b in s.boolean:
        text = f"What percentage of {s.entity} have {b} set to true? Round to 2 decimals."
        code = f"result = round(float(df[{b!r}].mean() * 100), 2)"
        wrongs = [f"result = round(float(df[{b!r}].mean()), 2)"]
        out.append(Candidate(s.file, "pct_bool", text, "number", code, wrongs, (b,)))
    return out


def fam_mean_where_bool(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for b in s.boolean:
        num = rng.choice(s.numeric)
        text = f"What is the average {num} of {s.entity} with {b} set to true? Round to 2 decimals."
        code = f"subset = df[df[{b!r}]]\nresult = round(float(subset[{num!r}].mean()), 2)"
        wrongs = [
            f"subset = df[~df[{b!r}]]\nresult = round(float(subset[{num!r}].mean()), 2)",
            f"result = round(float(df[{num!r}].mean()), 2)",
        ]
        out.append(Candidate(s.file, "mean_where_bool", text, "number", code, wrongs, (b, num)))
    return out


def fam_count_cat_bool(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for b in s.boolean:
        cat = rng.choice(s.categorical)
        val = rng.choice(_values(df[cat]))
        text = f"How many {s.entity} have {cat} equal to {val} and {b} set to true?"
        code = f"result = int(((df[{cat!r}] == {val!r}) & df[{b!r}]).sum())"
        wrongs = [f"result = int(((df[{cat!r}] == {val!r}) | df[{b!r}]).sum())"]
        out.append(Candidate(s.file, "count_cat_bool", text, "number", code, wrongs, (cat, b)))
    return out


def fam_nunique(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    out = []
    for cat in s.categorical:
        text = f"How many distinct {cat} values are there in {s.file}?"
        code = f"result = int(df[{cat!r}].nunique())"
        wrongs = [f"result = int(df[{cat!r}].count())"]
        out.append(Candidate(s.file, "nunique", text, "number", code, wrongs, (cat,)))
    return out


def fam_month_count(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    if s.date is None:
        return []
    months = sorted({value[:7] for value in df[s.date]})
    out = []
    for month in rng.sample(months, min(2, len(months))):
        year, number = int(month[:4]), int(month[5:])
        article = "an" if s.date[0] in "aeiou" else "a"
        text = f"How many {s.entity} have {article} {s.date} in {calendar.month_name[number]} {year}?"
        head = f"dates = pd.to_datetime(df[{s.date!r}])\n"
        code = head + f"result = int(((dates.dt.year == {year}) & (dates.dt.month == {number})).sum())"
        wrong_month = number - 1 if number > 1 else number + 1
        wrongs = [head + f"result = int(((dates.dt.year == {year}) & (dates.dt.month == {wrong_month})).sum())"]
        out.append(Candidate(s.file, "month_count", text, "number", code, wrongs, (s.date,)))
    return out


def fam_top3(rng: random.Random, s: TableSpec, df: pd.DataFrame) -> list[Candidate]:
    if s.label is None:
        return []
    out = []
    for num in s.numeric:
        ordered = df[num].dropna().sort_values(ascending=False).tolist()
        if len(ordered) < 4 or ordered[2] == ordered[3]:
            continue
        text = f"List the {s.label} of the 3 {s.entity} with the largest {num}."
        code = f"result = df.nlargest(3, {num!r})[{s.label!r}].tolist()"
        wrongs = [
            f"result = df.nsmallest(3, {num!r})[{s.label!r}].tolist()",
            f"result = df.nlargest(4, {num!r})[{s.label!r}].tolist()",
        ]
        out.append(Candidate(s.file, "top3", text, "list", code, wrongs, (num, s.label)))
    return out


FAMILIES: tuple[Family, ...] = (
    fam_count_eq,
    fam_count_gt,
    fam_agg_where,
    fam_median,
    fam_range,
    fam_argmax,
    fam_group_argmax,
    fam_any_gt,
    fam_all_gt,
    fam_all_where,
    fam_distinct_where,
    fam_count_bool,
    fam_pct_bool,
    fam_mean_where_bool,
    fam_count_cat_bool,
    fam_nunique,
    fam_month_count,
    fam_top3,
)

EMPTY_QUESTIONS = [
    ("How many rows does empty.csv contain?", "result = len(df)"),
    ("How many columns does empty.csv have?", "result = len(df.columns)"),
    (
        "How many rows of empty.csv have at least one missing value?",
        "result = int(df.isna().any(axis=1).sum())",
    ),
    ("How many duplicate rows are there in empty.csv?", "result = int(df.duplicated().sum())"),
    (
        "How many rows of empty.csv have no missing values at all?",
        "result = int(df.notna().all(axis=1).sum())",
    ),
    ("How many distinct rows does empty.csv contain?", "result = len(df.drop_duplicates())"),
]


# --------------------------------------------------------------------------------------- broken code

BROKEN_KINDS = (
    "missing_column",
    "no_such_method",
    "text_arithmetic",
    "missing_import",
    "no_result",
    "syntax",
)


def broken_code(kind: str, cand: Candidate, spec: TableSpec, df: pd.DataFrame) -> str:
    column = cand.columns[0]
    numeric = next((c for c in cand.columns if c in spec.numeric), spec.numeric[0])
    text_column = spec.label or spec.categorical[0]
    if kind == "missing_column":
        misspelt = column + "s" if column + "s" not in df.columns else column + "_total"
        return cand.code.replace(repr(column), repr(misspelt), 1)
    if kind == "no_such_method":
        return f"result = round(df[{numeric!r}].avg(), 2)"
    if kind == "text_arithmetic":
        return f"result = df[{text_column!r}].sum() / len(df)"
    if kind == "missing_import":
        return f"result = statistics.mean(df[{numeric!r}])"
    if kind == "no_result":
        head, _sep, tail = cand.code.rpartition("result = ")
        return head + "answer = " + tail
    if kind == "syntax":
        return f"result = int((df[{column!r}] == df[{column!r}]).sum()"
    raise ValueError(kind)
