"""``densenet-kernel-depth``: concatenation preserves input correlations with depth."""

import numpy as np
import pytest

from dynkit.figures import densenet_kernel_depth


@pytest.mark.slow
def test_concatenation_preserves_correlation(quick_figure):
    df = quick_figure(densenet_kernel_depth)
    # the plain ReLU net approaches the fixed point c* = 1; dense and residual stay below it,
    # dense at every depth, and the residual net's correlation grows far less than plain's
    result = densenet_kernel_depth.claim(df)
    assert result.passed, result
    # the ReLU map: f(1) = 1 (the fixed point) and f(c) > c below it
    m = df[df["arch"] == "relu map"].sort_values("c0")
    assert m["correlation"].iloc[-1] == pytest.approx(1.0, abs=1e-5)
    inner = m[m["c0"] < 0.99]
    assert np.all(inner["correlation"] > inner["c0"])
