"""Quick-mode scaling figures: the CSVs show the claimed phenomena (each figure's ``claim``)."""

import json

import numpy as np
import pytest

from dynkit.figures import coordinate_check, resnet_signal, unet_long_skip


@pytest.mark.slow
def test_coordinate_check_mup_flat_sp_grows_ntk_shrinks(quick_figure):
    df = quick_figure(coordinate_check)
    assert sorted(df["step"].unique()) == [0, 1, 2, 3, 4, 5]
    result = coordinate_check.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_resnet_signal_propagation_claims(quick_figure):
    df = quick_figure(resnet_signal)
    assert sorted(df["variant"].unique()) == sorted(resnet_signal.VARIANTS)
    result = resnet_signal.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_unet_long_skip_trains_every_kappa_and_measures_its_claim(quick_figure,
                                                                  quick_figures_dir):
    # the claim needs the paper's scale (size "paper"); at quick size the figure must still
    # train each kappa and measure every number the claim compares
    df = quick_figure(unet_long_skip)
    loss, stage = df[df["kind"] == "loss"], df[df["kind"] == "stage"]
    for kappa in unet_long_skip.KAPPAS:
        g = loss[np.isclose(loss["kappa"], kappa)].sort_values("step")["loss"]
        assert g.iloc[-5:].mean() < 0.8 * g.iloc[:5].mean()
        osc = stage[np.isclose(stage["kappa"], kappa)]["feature_oscillation"]
        assert len(osc) >= 2 and np.isfinite(osc).all()
    result = unet_long_skip.claim(df)
    assert result.size == "paper" and len(result.checks) == 2
    assert len(result.measured) == 2 * len(unet_long_skip.KAPPAS)
    assert all(np.isfinite(v) for v in result.measured.values())
    record = json.loads((quick_figures_dir / "unet-long-skip-scaling.claim.json").read_text())
    assert record["claim_size"] == "paper"
