"""Writes people.csv: a few thousand deterministic rows for the hello example."""

import csv
import random
from pathlib import Path

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Linus",
    "Guido",
    "Frances",
]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromsø", "Adelaide", "Montréal", "Pune", "Accra", "Tbilisi"]


def main(rows: int = 3000) -> None:
    rng = random.Random(42)
    path = Path(__file__).with_name("people.csv")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "city", "age"])
        for i in range(rows):
            writer.writerow(
                [
                    i + 1,
                    f"{rng.choice(FIRST)} {chr(65 + rng.randrange(26))}.",
                    rng.choice(CITIES),
                    rng.randint(18, 90),
                ]
            )


if __name__ == "__main__":
    main()
