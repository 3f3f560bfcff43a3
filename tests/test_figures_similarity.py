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


@pytest.mark.slow
def test_cka_across_seeds_high_early_lower_at_top(quick_figure):
    """Kornblith et al. 2019: CKA between seeds is higher in the first layer than the last."""
    df = quick_figure("cka-across-seeds")
    med = df.groupby("depth")["cka"].median()
    assert med.iloc[0] > med.iloc[-1] + 0.1


@pytest.mark.slow
def test_layer_reinit_first_layer_is_critical(quick_figure):
    """Zhang et al. 2019: re-initializing the first layer to its initial value costs more test
    error than re-initializing any later hidden layer."""
    df = quick_figure("layer-reinit")
    base = df.loc[df["layer"] == "none", "value"].iloc[0]
    at_init = df[df["reinit_step"] == 0].set_index("layer")["value"] - base
    hidden = [name for name in at_init.index if name.startswith("fc") and name != "fc0"]
    assert at_init["fc0"] > at_init[hidden].max()
    assert set(df["metric"]) == {"error"}
