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


@pytest.mark.slow
def test_hessian_spectrum(quick_figure):
    from dynkit.figures import hessian_spectrum as hs

    # about C outliers; G_class has C-1 above the bulk edge, each >= 60% of H's
    result = hs.claim(quick_figure(hs))
    assert result.passed, result


@pytest.mark.slow
def test_sgd_stability_trace(quick_figure):
    from dynkit.figures import sgd_stability_trace as sst

    df = quick_figure(sst)
    assert len(df) == 6
    result = sst.claim(df)
    assert result.passed, result
