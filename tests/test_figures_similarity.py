"""Quick-mode representation-similarity figures: the CSV shows each paper's claim."""

import numpy as np
import pytest


@pytest.mark.slow
def test_svcca_lower_layers_converge_first(quick_figure):
    """Raghu et al. 2017: the median step at which a layer's SVCCA to its final state passes
    0.9 increases with depth."""
    from dynkit.figures import svcca_convergence

    df = quick_figure(svcca_convergence)
    result = svcca_convergence.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_cka_block_structure_grows_with_width(quick_figure):
    """Nguyen et al. 2021: the mean off-diagonal CKA (block-structure contrast) grows with
    width."""
    from dynkit.figures import cka_block_structure

    df = quick_figure(cka_block_structure)
    result = cka_block_structure.claim(df)
    assert result.passed, result
    diag = df[df["i"] == df["j"]]["cka"]
    np.testing.assert_allclose(diag, 1.0, atol=1e-9)


@pytest.mark.slow
def test_cka_across_seeds_high_early_lower_at_top(quick_figure):
    """Kornblith et al. 2019: CKA between seeds is higher in the first layer than the last."""
    from dynkit.figures import cka_across_seeds

    df = quick_figure(cka_across_seeds)
    result = cka_across_seeds.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_layer_reinit_first_layer_is_critical(quick_figure):
    """Zhang et al. 2019: re-initializing the first layer to its initial value costs more test
    error than re-initializing any later hidden layer."""
    from dynkit.figures import layer_reinit

    df = quick_figure(layer_reinit)
    result = layer_reinit.claim(df)
    assert result.passed, result
    assert set(df["metric"]) == {"error"}
