"""The table-QA demo's tables (make_data.py writes them): ten small tables of people, orders, places and
things, each with what its questions may ask about (`TableSpec`)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    base = {"Widget": 12.5, "Gadget": 24.0, "Sprocket": 3.75, "Gizmo": 49.9, "Doohickey": 8.2, "Bracket": 15.0}
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
    rows.sort(key=lambda r: str(r["order_date"]))
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
    nouns = ["River", "Orchard", "Signal", "Harbor", "Garden", "Empire", "Voyage", "Mirror", "Canyon", "Archive"]
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
