"""Per-model prices from a file (`treadle report --prices FILE`)."""

from __future__ import annotations

import json
from pathlib import Path


def load_prices(path: Path) -> dict[str, dict[str, float]]:
    """Prices from a JSON or YAML file: {model: {input_per_1m: USD, output_per_1m: USD}}."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: prices must be a mapping of model name to input_per_1m/output_per_1m")
    return data
