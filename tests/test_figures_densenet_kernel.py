"""``densenet-kernel-depth``: concatenation preserves input correlations with depth."""

import numpy as np
import pytest

from dynkit.figures import densenet_kernel_depth


@pytest.mark.slow
def test_concatenation_preserves_correlation(quick_figure):
    df = quick_figure(densenet_kernel_depth)
    nets = df[df["arch"] != "relu map"]
    deepest = nets[nets["depth"] == nets["depth"].max()]
    for c0, g in deepest.groupby("c0"):
        c = g.set_index("arch")["correlation"]
        assert c["plain"] > 0.9  # the plain ReLU net approaches the fixed point c* = 1
        assert c["dense"] < c["plain"] - 0.25 and c["residual"] < c["plain"] - 0.25, c0
    # the dense net's correlation grows far less with depth than the plain net's
    for c0, g in nets.groupby("c0"):
        rise = g.groupby("arch")["correlation"].agg(lambda v: v.max() - v.min())
        assert rise["dense"] < 0.6 * rise["plain"], c0
    # the ReLU map: f(1) = 1 (the fixed point) and f(c) > c below it
    m = df[df["arch"] == "relu map"].sort_values("c0")
    assert m["correlation"].iloc[-1] == pytest.approx(1.0, abs=1e-5)
    inner = m[m["c0"] < 0.99]
    assert np.all(inner["correlation"] > inner["c0"])
