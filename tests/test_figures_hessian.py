"""Curvature figures: quick mode writes PNG + CSV showing the paper's claim."""

import pytest


@pytest.mark.slow
def test_edge_of_stability(quick_figure):
    from dynkit.figures import edge_of_stability as eos

    df = quick_figure(eos)
    assert sorted(df["lr"].unique()) == [0.2, 0.3, 0.4]
    # λ_max within 10% of 2/η, reached from below; the loss keeps falling, non-monotonically
    result = eos.claim(df)
    assert result.passed, result
