"""Quick-mode mode-connectivity figures: files exist and the CSV shows the phenomenon."""

import pytest


@pytest.mark.slow
def test_lmc_rebasin_alignment_lowers_barrier(quick_figure):
    from dynkit.figures import lmc_rebasin

    result = lmc_rebasin.claim(quick_figure(lmc_rebasin))
    assert result.passed, result


@pytest.mark.slow
def test_layerwise_lmc_heatmap_data(quick_figure):
    from dynkit.figures import layerwise_lmc

    df = quick_figure(layerwise_lmc)
    assert set(df["layer"]) == {"fc0", "fc1", "fc2", "head"}
    result = layerwise_lmc.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_instability_at_init_vanishes_after_a_few_steps(quick_figure):
    """Frankle et al. 2020: children spawned at initialization are separated by a loss barrier,
    children spawned after a short stretch of training are linearly connected."""
    from dynkit.figures import lmc_instability

    result = lmc_instability.claim(quick_figure(lmc_instability))
    assert result.passed, result


@pytest.mark.slow
def test_dropout_stability_improves_with_width(quick_figure):
    from dynkit.figures import dropout_stability

    result = dropout_stability.claim(quick_figure(dropout_stability))
    assert result.passed, result
