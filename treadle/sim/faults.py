"""The random side of a request: which fault (if any) it suffers and how long it takes.

Under a seed, each request gets its own Random derived from (seed, hash of its messages, how many
times those messages were seen before). Outcomes then do not depend on the order in which
concurrent requests arrive, and a prompt's first attempt can fail while its retry succeeds,
identically on every run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .config import SimConfig

FAULTS = ("fail", "hang", "malformed", "drop", "overload")  # the order of SimConfig.fault_rates()


@dataclass(slots=True)
class Fate:
    fault: str | None  # one of FAULTS, or None for a normal answer
    latency_s: float  # before the first byte of the answer (or before the fault shows)
    generation_s: float  # completion tokens at tokens_per_s: spread over a stream, else added

    @property
    def total_s(self) -> float:
        return self.latency_s + self.generation_s


class Dice:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._rng = random.Random()  # used only without a seed
        self._seen: dict[str, int] = {}
        self._rates = config.fault_rates()

    @property
    def seeded(self) -> bool:
        """Each request's draws depend on its messages (rng_for needs their digest)."""
        return self.config.seed is not None

    def rng_for(self, digest: str) -> random.Random:
        if self.config.seed is None:
            return self._rng
        attempt = self._seen.get(digest, 0)
        self._seen[digest] = attempt + 1
        # Seeding from a str hashes it with SHA-512: stable across processes and PYTHONHASHSEED.
        return random.Random(f"{self.config.seed}:{digest}:{attempt}")

    def fate(self, rng: random.Random, completion_tokens: int) -> Fate:
        roll = rng.random()
        fault = None
        edge = 0.0
        for name in FAULTS:
            edge += self._rates[name]
            if roll < edge:
                fault = name
                break
        tps = self.config.tokens_per_s
        generation_s = completion_tokens / tps if tps and fault is None else 0.0
        return Fate(fault, self._base_latency_s(rng), generation_s)

    def _base_latency_s(self, rng: random.Random) -> float:
        cfg = self.config
        if cfg.latency_ms == 0:
            return 0.0
        if cfg.latency_dist == "lognormal":
            # Choose mu so that the distribution's mean is latency_ms.
            mu = math.log(cfg.latency_ms) - cfg.latency_sigma**2 / 2
            return rng.lognormvariate(mu, cfg.latency_sigma) / 1000.0
        return max(0.0, cfg.latency_ms + rng.uniform(-cfg.jitter_ms, cfg.jitter_ms)) / 1000.0
