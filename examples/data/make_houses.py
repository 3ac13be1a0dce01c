"""Writes houses.csv beside this file: 300 made-up houses, the example table of ``dataset=csv``.

    .venv/bin/python examples/data/make_houses.py

Fixed seed, stdlib only, so the same file comes out on every machine and Python. Columns: ``district`` (text,
which the default feature selection skips), ``area`` (100 m²), ``garden`` (0 or 1), ``age`` (40 years),
``distance`` (20 km, to the centre) and ``price`` (100,000 €), linear in the four numbers plus N(0, 0.1²) noise.
The units keep every column near 1, so that SGD converges on the raw columns (lr_critical_gd ≈ 0.44).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

ROWS = 300
SEED = 0
DISTRICTS = ("north", "south", "east", "west", "centre")


def main() -> None:
    rng = random.Random(SEED)
    path = Path(__file__).resolve().parent / "houses.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["district", "area", "garden", "age", "distance", "price"])
        for _ in range(ROWS):
            district = rng.choice(DISTRICTS)
            area = rng.uniform(0.4, 2.0)  # 100 m²: 40 to 200 m²
            garden = int(rng.random() < 0.3 + 0.2 * area)  # 1: it has one
            age = rng.uniform(0.0, 2.0)  # 40 years: 0 to 80 years old
            distance = rng.uniform(0.0, 1.5)  # 20 km: 0 to 30 km from the centre
            noise = rng.gauss(0, 0.1)
            price = 1.0 + 2.2 * area + 0.3 * garden - 0.6 * age - 0.8 * distance + noise
            writer.writerow([district, f"{area:.2f}", garden, f"{age:.3f}", f"{distance:.3f}", f"{price:.3f}"])


if __name__ == "__main__":
    main()
