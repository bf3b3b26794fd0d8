"""Generate the table-QA demo's data, deterministically (random.Random(7)), next to this file or in --out DIR.

    python treadle/demo/tableqa/make_data.py [--out DIR]

Writes:
  tables/*.csv      ten small tables (20-200 rows: ints, floats, strings, booleans, dates, a few missing
                    values) and one deliberately empty (0-byte) table, tables/empty.csv
  questions.jsonl   id, file_name, question; every question comes from a template family
  labels.jsonl      id, answer, type (number|string|boolean|list). Answers are computed by running each
                    question's reference pandas code on the table as read back from its CSV. `answer` is
                    always a string (JSON text for numbers and lists, "true"/"false" for booleans) so the
                    column has one type; tableqa.check_answer reads it back by `type`. A few labels have no
                    question and a couple of questions have no label, so the seed's inner join reports
                    unmatched rows on both sides.
  responses.yaml    the simulator's response book: one rule for the planner prompt, one per question for the
                    coder prompt (~85% the reference code, ~8% subtly wrong code that returns a valid but
                    incorrect answer, ~4% broken code that raises), and a fallback coder rule
  expected.json     what the book implies for the joined rows: how many come out correct, wrong, broken, or
                    fail on the empty table, and the outcome of every joined id

The reference code is run in this process with runner.execute: it is this script's own code, not generated.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import importlib.util
import json
import math
import random
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

SEED = 7
HERE = Path(__file__).resolve().parent
N_QUESTIONS = 200
EMPTY_TABLE = "empty.csv"
N_EMPTY_QUESTIONS = 6
WRONG_SHARE = 0.08
BROKEN_SHARE = 0.04
N_UNLABELED = 2
ORPHAN_LABELS = [
    {"id": "q901", "answer": "42", "type": "number"},
    {"id": "q902", "answer": "North", "type": "string"},
    {"id": "q903", "answer": "true", "type": "boolean"},
]
PLAN_MARKER = "Plan how to answer"
"""The planner prompt of pipeline.yaml starts with this; the coder prompt starts with CODE_MARKER."""
CODE_MARKER = "Write pandas code"
_UNSAFE_IN_QUESTIONS = re.compile(r"""['"&<>{}\\\n]""")
"""Kept out of questions so a prompt renders the same with or without HTML autoescaping."""


def _load_sibling(name: str) -> Any:
    module_name = f"_tableqa_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


tableqa = _load_sibling("tableqa")
runner = tableqa.runner  # tableqa_runner.py, as tableqa loaded it


# ---------------------------------------------------------------------------------------------- tables

FIRST = [
    "Ava",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jon",
    "Kira",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Uma",
    "Victor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
    "Arjun",
    "Bea",
    "Carlos",
    "Dana",
]
LAST = [
    "Abbott",
    "Brooks",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Moreau",
    "Novak",
    "Okafor",
    "Patel",
    "Quist",
    "Rossi",
    "Sato",
    "Tanaka",
    "Usman",
    "Varga",
    "Weber",
    "Xu",
    "Young",
    "Zhang",
]


@dataclass(frozen=True)
class TableSpec:
    file: str
    entity: str
    """Plural noun for a row: orders, employees."""
    singular: str
    label: str | None
    """A string column naming each row uniquely, for which-row questions; None when there is none."""
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    boolean: tuple[str, ...] = ()
    date: str | None = None


def _names(rng: random.Random, n: int) -> list[str]:
    pairs = [f"{first} {last}" for first in FIRST for last in LAST]
    return rng.sample(pairs, n)


def _day(rng: random.Random, start: str, days: int) -> str:
    return (dt.date.fromisoformat(start) + dt.timedelta(days=rng.randrange(days))).isoformat()


def _with_missing(rng: random.Random, rows: list[dict[str, Any]], column: str, n: int) -> None:
    for index in rng.sample(range(len(rows)), n):
        rows[index][column] = None


def table_sales(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    base = {
        "Widget": 12.5,
        "Gadget": 24.0,
        "Sprocket": 3.75,
        "Gizmo": 49.9,
        "Doohickey": 8.2,
        "Bracket": 15.0,
    }
    regions = ["North", "South", "East", "West", "Central"]
    rows = []
    for _ in range(150):
        product = rng.choice(list(base))
        units = rng.randint(1, 40)
        price = round(base[product] * rng.uniform(0.9, 1.1), 2)
        rows.append(
            {
                "order_date": _day(rng, "2024-01-01", 182),
                "region": rng.choices(regions, weights=[3, 2, 3, 2, 1])[0],
                "product": product,
                "channel": rng.choice(["Online", "Retail", "Partner"]),
                "units": units,
                "unit_price": price,
                "revenue": round(units * price, 2),
                "returned": rng.random() < 0.08,
            }
        )
    rows.sort(key=lambda r: r["order_date"])
    rows = [{"order_id": f"SO-{1001 + i}", **row} for i, row in enumerate(rows)]
    spec = TableSpec(
        "sales.csv",
        "orders",
        "order",
        "order_id",
        ("units", "unit_price", "revenue"),
        ("region", "product", "channel"),
        ("returned",),
        "order_date",
    )
    return rows, spec


def table_employees(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    departments = {"Engineering": 92000, "Sales": 61000, "Marketing": 66000, "Finance": 74000, "HR": 58000}
    levels = {"Junior": 0.75, "Mid": 1.0, "Senior": 1.3, "Lead": 1.55}
    rows = []
    for i, name in enumerate(_names(rng, 80)):
        department = rng.choice(list(departments))
        level = rng.choices(list(levels), weights=[3, 4, 3, 1])[0]
        salary = int(round(departments[department] * levels[level] * rng.uniform(0.9, 1.1), -2))
        rows.append(
            {
                "emp_id": f"E{101 + i}",
                "name": name,
                "department": department,
                "level": level,
                "salary": salary,
                "age": rng.randint(22, 64),
                "hire_date": _day(rng, "2012-01-01", 4700),
                "remote": rng.random() < 0.35,
                "rating": round(rng.uniform(2.5, 5.0), 1),
            }
        )
    _with_missing(rng, rows, "rating", 6)
    spec = TableSpec(
        "employees.csv",
        "employees",
        "employee",
        "name",
        ("salary", "age", "rating"),
        ("department", "level"),
        ("remote",),
        "hire_date",
    )
    return rows, spec


def table_weather(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    cities = {"Oslo": 6.0, "Lisbon": 19.0, "Denver": 14.0, "Osaka": 17.0}
    rows = []
    for offset in range(30):
        day = (dt.date(2024, 3, 17) + dt.timedelta(days=offset)).isoformat()
        for city, warmth in cities.items():
            high = round(rng.gauss(warmth + offset * 0.15, 3.0), 1)
            rain = 0.0 if rng.random() < 0.6 else round(rng.expovariate(1 / 5), 1)
            rows.append(
                {
                    "date": day,
                    "city": city,
                    "temp_max_c": high,
                    "temp_min_c": round(high - rng.uniform(3, 10), 1),
                    "precip_mm": rain,
                    "humidity_pct": rng.randint(30, 95),
                    "sunny": rain == 0.0 and rng.random() < 0.7,
                }
            )
    spec = TableSpec(
        "weather.csv",
        "daily records",
        "daily record",
        None,
        ("temp_max_c", "temp_min_c", "precip_mm", "humidity_pct"),
        ("city",),
        ("sunny",),
        "date",
    )
    return rows, spec


def table_products(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    adjectives = [
        "Swift",
        "Bright",
        "Quiet",
        "Solid",
        "Clever",
        "Rapid",
        "Cozy",
        "Bold",
        "Sleek",
        "Sturdy",
        "Tiny",
        "Grand",
    ]
    nouns = [
        "Kettle",
        "Lamp",
        "Drone",
        "Blender",
        "Chair",
        "Desk",
        "Robot",
        "Kite",
        "Racket",
        "Speaker",
        "Backpack",
        "Clock",
    ]
    categories = {"Electronics": 120, "Kitchen": 45, "Garden": 35, "Toys": 25, "Office": 60, "Sports": 50}
    names = rng.sample([f"{a} {n}" for a in adjectives for n in nouns], 60)
    rows = []
    for i, name in enumerate(names):
        category = rng.choice(list(categories))
        rows.append(
            {
                "sku": f"P-{2001 + i}",
                "name": name,
                "category": category,
                "price": round(categories[category] * rng.uniform(0.4, 2.2), 2),
                "stock": 0 if rng.random() < 0.12 else rng.randint(1, 250),
                "rating": round(rng.uniform(1.5, 5.0), 1),
                "discontinued": rng.random() < 0.1,
                "launch_date": _day(rng, "2019-01-01", 2000),
            }
        )
    spec = TableSpec(
        "products.csv",
        "products",
        "product",
        "name",
        ("price", "stock", "rating"),
        ("category",),
        ("discontinued",),
        "launch_date",
    )
    return rows, spec


def table_flights(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    airlines = {"NW": "Northwind Air", "BL": "Bluejay", "SK": "Skyline", "OR": "Orbit", "PA": "Pacifica"}
    airports = ["OSL", "LIS", "DEN", "KIX", "JFK", "CDG", "SIN", "GRU"]
    distance = {}
    for i, a in enumerate(airports):
        for b in airports[i + 1 :]:
            distance[a, b] = distance[b, a] = rng.randrange(800, 12000, 10)
    numbers = rng.sample([(code, n) for code in airlines for n in range(100, 1000)], 200)
    rows = []
    for code, n in numbers:
        origin, destination = rng.sample(airports, 2)
        cancelled = rng.random() < 0.05
        rows.append(
            {
                "flight_no": f"{code}{n}",
                "airline": airlines[code],
                "origin": origin,
                "destination": destination,
                "date": _day(rng, "2024-05-01", 61),
                "distance_km": distance[origin, destination],
                "dep_delay_min": 0 if cancelled else max(-15, round(rng.gauss(8, 20))),
                "passengers": 0 if cancelled else rng.randint(40, 320),
                "cancelled": cancelled,
            }
        )
    rows.sort(key=lambda r: (r["date"], r["flight_no"]))
    spec = TableSpec(
        "flights.csv",
        "flights",
        "flight",
        "flight_no",
        ("distance_km", "dep_delay_min", "passengers"),
        ("airline", "origin", "destination"),
        ("cancelled",),
        "date",
    )
    return rows, spec


def table_students(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    clubs = ["Chess", "Robotics", "Drama", "Soccer", "Choir", "No club"]
    rows = []
    for i, name in enumerate(_names(rng, 90)):
        ability = rng.gauss(70, 12)
        scores = [max(30, min(100, round(ability + rng.gauss(0, 8)))) for _ in range(3)]
        rows.append(
            {
                "student_id": f"S{301 + i}",
                "name": name,
                "grade": rng.randint(9, 12),
                "club": rng.choice(clubs),
                "math": scores[0],
                "reading": scores[1],
                "science": scores[2],
                "absences": min(30, int(rng.expovariate(1 / 4))),
                "passed": sum(scores) / 3 >= 60,
            }
        )
    spec = TableSpec(
        "students.csv",
        "students",
        "student",
        "name",
        ("grade", "math", "reading", "science", "absences"),
        ("club",),
        ("passed",),
    )
    return rows, spec


def table_movies(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    adjectives = [
        "Silent",
        "Crimson",
        "Hidden",
        "Last",
        "Broken",
        "Golden",
        "Endless",
        "Midnight",
        "Frozen",
        "Electric",
    ]
    nouns = [
        "River",
        "Orchard",
        "Signal",
        "Harbor",
        "Garden",
        "Empire",
        "Voyage",
        "Mirror",
        "Canyon",
        "Archive",
    ]
    genres = ["Drama", "Comedy", "Action", "Sci-Fi", "Horror", "Animation", "Documentary"]
    directors = ["Ana Lima", "Kofi Mensah", "Ruth Berg", "Tomas Ek", "Lea Roux", "Hiro Mori", "Nia Cole"]
    titles = rng.sample([f"The {a} {n}" for a in adjectives for n in nouns], 70)
    rows = []
    for title in titles:
        rows.append(
            {
                "title": title,
                "genre": rng.choice(genres),
                "director": rng.choice(directors),
                "year": rng.randint(1990, 2023),
                "runtime_min": rng.randint(78, 178),
                "imdb_rating": round(rng.uniform(4.0, 9.2), 1),
                "box_office_musd": round(rng.expovariate(1 / 80), 1),
                "sequel": rng.random() < 0.2,
            }
        )
    spec = TableSpec(
        "movies.csv",
        "movies",
        "movie",
        "title",
        ("year", "runtime_min", "imdb_rating", "box_office_musd"),
        ("genre", "director"),
        ("sequel",),
    )
    return rows, spec


def table_cars(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    makes = {
        "Toyota": ["Corolla", "RAV4", "Yaris"],
        "Ford": ["Focus", "Puma", "Kuga"],
        "Honda": ["Civic", "Jazz"],
        "BMW": ["320i", "X3"],
        "Kia": ["Ceed", "Sportage"],
        "Tesla": ["Model 3", "Model Y"],
        "Volvo": ["V60", "XC40"],
    }
    rows = []
    for i in range(50):
        make = rng.choice(list(makes))
        year = rng.randint(2010, 2023)
        fuel = "Electric" if make == "Tesla" else rng.choices(["Petrol", "Diesel", "Hybrid"], [5, 3, 2])[0]
        rows.append(
            {
                "listing_id": f"L-{7001 + i}",
                "make": make,
                "model": rng.choice(makes[make]),
                "year": year,
                "fuel": fuel,
                "color": rng.choice(["Black", "White", "Silver", "Blue", "Red"]),
                "mileage_km": max(500, int(rng.gauss((2024 - year) * 14000, 9000))),
                "price_usd": int(round(rng.uniform(9000, 45000) * (0.93 ** (2024 - year)), -1)),
                "automatic": fuel == "Electric" or rng.random() < 0.6,
            }
        )
    spec = TableSpec(
        "cars.csv",
        "cars",
        "car",
        "listing_id",
        ("year", "mileage_km", "price_usd"),
        ("make", "fuel", "color"),
        ("automatic",),
    )
    return rows, spec


def table_customers(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    countries = ["Norway", "Portugal", "Japan", "Brazil", "Canada", "Kenya", "Germany", "India"]
    rows = []
    for i, name in enumerate(_names(rng, 100)):
        orders = int(rng.expovariate(1 / 6)) + 1
        rows.append(
            {
                "customer_id": f"CU-{5001 + i}",
                "name": name,
                "country": rng.choice(countries),
                "signup_date": _day(rng, "2021-01-01", 1400),
                "orders": orders,
                "total_spent": round(orders * rng.uniform(15, 140), 2),
                "premium": rng.random() < 0.25,
                "age": rng.randint(18, 75),
            }
        )
    _with_missing(rng, rows, "age", 7)
    spec = TableSpec(
        "customers.csv",
        "customers",
        "customer",
        "name",
        ("orders", "total_spent", "age"),
        ("country",),
        ("premium",),
        "signup_date",
    )
    return rows, spec


def table_cities(rng: random.Random) -> tuple[list[dict[str, Any]], TableSpec]:
    heads = ["Bel", "Cor", "Dun", "Ash", "Mar", "Riv", "Sol", "Tor", "Val", "Wen", "Kel", "Ost"]
    tails = ["ford", "haven", "mouth", "ton", "bury", "field", "gate", "wick"]
    countries = ["Estria", "Norland", "Valdoria", "Morvia", "Kessa"]
    rows = []
    capitals: set[str] = set()
    for city in rng.sample([h + t for h in heads for t in tails], 40):
        country = rng.choice(countries)
        capital = country not in capitals and rng.random() < 0.3
        if capital:
            capitals.add(country)
        rows.append(
            {
                "city": city,
                "country": country,
                "population": int(10 ** rng.uniform(3.8, 6.3)),
                "area_km2": round(rng.uniform(12, 900), 1),
                "founded": rng.randint(800, 1950),
                "elevation_m": rng.randint(0, 2200),
                "coastal": rng.random() < 0.4,
                "capital": capital,
            }
        )
    spec = TableSpec(
        "cities.csv",
        "cities",
        "city",
        "city",
        ("population", "area_km2", "founded", "elevation_m"),
        ("country",),
        ("coastal", "capital"),
    )
    return rows, spec


TABLES: tuple[Callable[[random.Random], tuple[list[dict[str, Any]], TableSpec]], ...] = (
    table_sales,
    table_employees,
    table_weather,
    table_products,
    table_flights,
    table_students,
    table_movies,
    table_cars,
    table_customers,
    table_cities,
)


# ------------------------------------------------------------------------------------------- questions


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


def _broken_code(kind: str, cand: Candidate, spec: TableSpec, df: pd.DataFrame) -> str:
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


# -------------------------------------------------------------------------------------------- helpers


def encode_answer(value: Any, kind: str) -> str:
    """A label's answer as a string: JSON text for numbers and lists, true/false for booleans."""
    if kind == "string":
        return str(value)
    if kind == "boolean":
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _acceptable(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "string":
        return isinstance(value, str) and bool(value.strip())
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, list) and 0 < len(value) <= 12


class Evaluator:
    """Runs reference, wrong and broken code on the tables as read back from the CSVs written."""

    def __init__(self, tables_dir: Path) -> None:
        self.tables_dir = tables_dir

    def run(self, file: str, code: str) -> dict[str, Any]:
        job = {"table": str(self.tables_dir / file), "display": f"tables/{file}", "code": code}
        return runner.execute(job)

    def accept(self, cand: Candidate) -> bool:
        """Run the reference code; keep the candidate when its answer is usable, noting its wrong versions."""
        outcome = self.run(cand.file, cand.code)
        if not outcome["ok"] or not _acceptable(outcome["result"], cand.type):
            return False
        cand.answer = outcome["result"]
        label = {"answer": encode_answer(cand.answer, cand.type), "type": cand.type}
        if not tableqa.check_answer({**label, "result": cand.answer}):
            raise AssertionError(f"the label does not check against its own answer: {cand.text}")
        cand.valid_wrongs = []
        for wrong in cand.wrongs:
            got = self.run(cand.file, wrong)
            if got["ok"] and got["result"] is not None and not tableqa.check_answer({**label, **got}):
                cand.valid_wrongs.append(wrong)
        return True


def _pick_questions(
    rng: random.Random, spec: TableSpec, df: pd.DataFrame, want: int, seen: set[str], evaluator: Evaluator
) -> list[Candidate]:
    pools = []
    for family in FAMILIES:
        candidates = family(rng, spec, df)
        rng.shuffle(candidates)
        pools.append(candidates)
    rng.shuffle(pools)
    picked: list[Candidate] = []
    while len(picked) < want and any(pools):
        for pool in pools:
            while pool and len(picked) < want:
                cand = pool.pop(0)
                if cand.text in seen or not evaluator.accept(cand):
                    continue
                seen.add(cand.text)
                picked.append(cand)
                break
    if len(picked) < want:
        raise SystemExit(f"make_data: only {len(picked)} usable questions for {spec.file}, wanted {want}")
    return picked


def code_rule(question: str, code: str) -> dict[str, str]:
    """The coder prompt ends with the question line; match the marker at the start and that line last."""
    return {
        "match": rf"\A\s*{CODE_MARKER}.*\nQuestion: {re.escape(question)}\s*\Z",
        "reply": json.dumps({"code": code}, ensure_ascii=False),
    }


PLAN_RULE = {
    "match": rf"\A\s*{PLAN_MARKER}.*\nQuestion: (?P<question>[^\n]*?)\s*\Z",
    "reply": (
        '{"steps": ["Find the columns the question names in the schema.", '
        '{{ ("Select the rows and values the question asks about: " ~ question) | tojson }}, '
        '"Compute the answer with pandas and assign it to result."]}'
    ),
    "reasoning": (
        "The question is: {{ question }} I will look up the columns it mentions in the schema, "
        "apply its conditions, then compute a single value of the right type."
    ),
}

FALLBACK_CODE_RULE = {
    "match": rf"\A\s*{CODE_MARKER}",
    "reply": json.dumps({"code": "result = len(df)"}),
}


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


# ----------------------------------------------------------------------------------------------- main


def generate(out: Path) -> dict[str, Any]:
    rng = random.Random(SEED)
    tables_dir = out / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    specs: list[TableSpec] = []
    for build in TABLES:
        rows, spec = build(rng)
        specs.append(spec)
        text = pd.DataFrame(rows).to_csv(index=False, lineterminator="\n")
        _write_text(tables_dir / spec.file, text)
    _write_text(tables_dir / EMPTY_TABLE, "")
    frames = {spec.file: runner.load_table(str(tables_dir / spec.file), spec.file) for spec in specs}

    evaluator = Evaluator(tables_dir)
    n_regular = N_QUESTIONS - N_EMPTY_QUESTIONS
    seen: set[str] = set()
    candidates: list[Candidate] = []
    for index, spec in enumerate(specs):
        want = n_regular // len(specs) + (1 if index < n_regular % len(specs) else 0)
        candidates += _pick_questions(rng, spec, frames[spec.file], want, seen, evaluator)
    for text, code in EMPTY_QUESTIONS:
        candidates.append(Candidate(EMPTY_TABLE, "empty_table", text, "number", code, [], (), answer=0))
    rng.shuffle(candidates)
    for number, cand in enumerate(candidates, start=1):
        cand.id = f"q{number:03d}"
        if _UNSAFE_IN_QUESTIONS.search(cand.text):
            raise AssertionError(f"question text has a character prompts may escape: {cand.text}")

    regular = [c for c in candidates if c.file != EMPTY_TABLE]
    unlabeled = {c.id for c in rng.sample(regular, N_UNLABELED)}
    joined_regular = [c for c in regular if c.id not in unlabeled]
    n_wrong = round(WRONG_SHARE * N_QUESTIONS)
    n_broken = round(BROKEN_SHARE * N_QUESTIONS)
    wrong = rng.sample([c for c in joined_regular if c.valid_wrongs], n_wrong)
    wrong_ids = {c.id for c in wrong}
    broken = rng.sample([c for c in joined_regular if c.id not in wrong_ids], n_broken)
    spec_by_file = {spec.file: spec for spec in specs}

    book_code: dict[str, str] = {}
    outcomes: dict[str, str] = {}
    for cand in candidates:
        book_code[cand.id] = cand.code
        outcomes[cand.id] = "empty_table" if cand.file == EMPTY_TABLE else "correct"
    for cand in sorted(wrong, key=lambda c: c.id):
        book_code[cand.id] = rng.choice(cand.valid_wrongs)
        outcomes[cand.id] = "wrong"
    for k, cand in enumerate(sorted(broken, key=lambda c: c.id)):
        code = _broken_code(BROKEN_KINDS[k % len(BROKEN_KINDS)], cand, spec_by_file[cand.file], frames[cand.file])
        got = evaluator.run(cand.file, code)
        if got["ok"] or got["stage"] != "code":
            raise AssertionError(f"broken code for {cand.id} does not fail: {code!r} -> {got}")
        book_code[cand.id] = code
        outcomes[cand.id] = "broken"
    for id_, code in book_code.items():
        if any(marker in code for marker in ("{{", "{%", "{#")):
            raise AssertionError(f"code for {id_} holds a Jinja delimiter; the simulator renders replies")

    questions = [{"id": c.id, "file_name": c.file, "question": c.text} for c in candidates]
    labels = [
        {"id": c.id, "answer": encode_answer(c.answer, c.type), "type": c.type}
        for c in candidates
        if c.id not in unlabeled
    ]
    labels = sorted(labels + ORPHAN_LABELS, key=lambda row: row["id"])
    rules = [PLAN_RULE, *(code_rule(c.text, book_code[c.id]) for c in candidates), FALLBACK_CODE_RULE]

    joined = {id_: outcome for id_, outcome in sorted(outcomes.items()) if id_ not in unlabeled}
    counts = {kind: sum(1 for o in joined.values() if o == kind) for kind in BOOK_OUTCOMES}
    expected = {
        "seed": SEED,
        "questions": len(questions),
        "labels": len(labels),
        "joined_rows": len(joined),
        "questions_without_labels": sorted(unlabeled),
        "labels_without_questions": [row["id"] for row in ORPHAN_LABELS],
        "counts": counts,
        "failed_rows": counts["broken"] + counts["empty_table"],
        "accuracy": round(counts["correct"] / len(joined), 4),
        "families": dict(sorted(_count(c.family for c in candidates).items())),
        "outcomes": joined,
    }

    _write_text(out / "questions.jsonl", _jsonl(questions))
    _write_text(out / "labels.jsonl", _jsonl(labels))
    header = (
        "# The simulator's response book for the table-QA demo. Generated by make_data.py: do not edit.\n"
        "# Each rule: `match` is a regex searched (re.S) over the last user message, first match wins;\n"
        "# `reply` is a Jinja2 template rendered with the regex's named groups; `reasoning` is optional.\n"
    )
    book = yaml.safe_dump({"rules": rules}, sort_keys=False, allow_unicode=True, width=1_000_000)
    _write_text(out / "responses.yaml", header + book)
    _write_text(out / "expected.json", json.dumps(expected, indent=2) + "\n")
    return expected


BOOK_OUTCOMES = ("correct", "wrong", "broken", "empty_table")


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: next to this file)")
    args = parser.parse_args(argv)
    expected = generate(args.out)
    print(
        f"wrote {expected['questions']} questions, {expected['labels']} labels, "
        f"{expected['joined_rows']} joined rows to {args.out}: {expected['counts']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
