#!/usr/bin/env python3
"""DEMO DATA ONLY: made-up ticker prices for the /quotes example service.

Prints `SYMBOL PRICE` lines, as the `quotes` source expects. Prices take a small random walk
from a seed that changes every few seconds, so some quotes change between ticks and some do
not. Nothing here comes from a real market.
"""
import random
import time

SYMBOLS = {"ACME": 120.0, "GLOBEX": 54.0, "INITECH": 8.5, "UMBRELLA": 310.0, "HOOLI": 77.25}

step = int(time.time() // 2)
for symbol, base in SYMBOLS.items():
    rng = random.Random(f"{symbol}:{step // 3}")
    drift = rng.uniform(-0.05, 0.05)
    print(f"{symbol} {base * (1 + drift):.2f}")
