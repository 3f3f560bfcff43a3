import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

# Reference comparisons (golden files, brute force) are in float64; float32 paths are
# exercised by passing dtype explicitly.
jax.config.update("jax_enable_x64", True)
