"""Quick-mode representation-similarity figures: the CSV shows each paper's claim."""

import numpy as np
import pytest


@pytest.mark.slow
def test_svcca_lower_layers_converge_first(quick_figure):
    """Raghu et al. 2017: the median step at which a layer's SVCCA to its final state passes
    0.9 increases with depth."""
    from dynkit.figures.svcca_convergence import crossing_steps

    df = quick_figure("svcca-convergence")
    steps = crossing_steps(df).to_numpy()
    assert len(steps) == 4
    assert np.all(np.diff(steps) >= 0) and steps[-1] > steps[0]


@pytest.mark.slow
def test_cka_block_structure_grows_with_width(quick_figure):
    """Nguyen et al. 2021: the mean off-diagonal CKA (block-structure contrast) grows with
    width."""
    from dynkit.figures.cka_block_structure import block_contrast

    df = quick_figure("cka-block-structure")
    contrast = block_contrast(df).sort_index().to_numpy()
    assert np.all(np.diff(contrast) > 0)
    diag = df[df["i"] == df["j"]]["cka"]
    np.testing.assert_allclose(diag, 1.0, atol=1e-9)
