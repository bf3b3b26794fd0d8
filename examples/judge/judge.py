"""A batch column: one call per row group with the group's kept rows as a pandas DataFrame."""

import pandas as pd


def length_zscore(frame: pd.DataFrame) -> pd.Series:
    """How far each answer's length is from its group's mean, in standard deviations (0 when all agree)."""
    lengths = frame["answer"].str.len()
    spread = lengths.std(ddof=0)
    return ((lengths - lengths.mean()) / spread).round(3) if spread else lengths * 0.0
