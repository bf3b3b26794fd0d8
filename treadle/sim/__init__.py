"""An OpenAI-compatible HTTP simulator: latency, rate limits, faults, a response book, schema JSON.

Self-contained on purpose (stdlib, aiohttp, yaml, jinja2, and uvloop where installed) so tests,
benches and the demo can run it without the engine.
"""

from .book import BookError, load_book
from .config import SimConfig
from .process import SimulatorProcess
from .runner import Simulator, SimulatorThread, serve

__all__ = [
    "BookError",
    "SimConfig",
    "Simulator",
    "SimulatorProcess",
    "SimulatorThread",
    "load_book",
    "serve",
]
