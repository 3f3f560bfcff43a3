import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import pytest

# Reference comparisons (golden files, brute force) are in float64; float32 paths are
# exercised by passing dtype explicitly.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def quick_figure(tmp_path):
    """``make(figure)``: draw a figure (registered name or module) in quick mode under
    ``tmp_path``, check that a non-trivial PNG and a CSV were written, return the CSV table."""
    import pandas as pd

    from dynkit import figures

    def make(figure):
        if isinstance(figure, str):
            paths = figures.make(figure, tmp_path, quick=True)
        else:
            paths = figure.make(tmp_path, quick=True)
        png, csv = (next(p for p in paths if p.suffix == s) for s in (".png", ".csv"))
        assert png.stat().st_size > 5000
        return pd.read_csv(csv)

    return make
