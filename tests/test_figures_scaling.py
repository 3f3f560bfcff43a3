"""Quick-mode scaling figures: the CSVs show the claimed phenomena."""

import numpy as np
import pytest

from dynkit.analyses.scaling import width_slopes
from dynkit.figures import coordinate_check, resnet_signal


@pytest.mark.slow
def test_coordinate_check_mup_flat_sp_grows_ntk_shrinks(quick_figure):
    df = quick_figure(coordinate_check)
    assert sorted(df["step"].unique()) == [0, 1, 2, 3, 4, 5]
    spread = coordinate_check.width_spread(df)
    assert (spread["mup"] < 1.3).all(), spread["mup"]
    slopes = {p: width_slopes(g).set_index(["layer", "step"])["slope"]
              for p, g in df.groupby("parameterization")}
    assert (slopes["standard"]["act1"] > 0.25).all()          # ~ sqrt(n)
    assert slopes["standard"]["head", 1] > 0.8                 # ~ n
    assert (slopes["ntk"][["act0", "act1"]] < -0.4).all()      # ~ n^(-1/2): lazy
    assert (slopes["mup"].abs() < 0.1).all()


@pytest.mark.slow
def test_resnet_signal_propagation_claims(quick_figure):
    df = quick_figure(resnet_signal)
    v = {name: g.sort_values("index") for name, g in df.groupby("variant")}
    plain = v["no norm"]["var"].to_numpy()
    assert plain[-1] > 10 * plain[0]    # ~2^L growth without normalization (less at 8x8: padding)
    scaled = v["no norm, 1/sqrt(L)"]["var"].to_numpy()
    assert scaled.max() / scaled.min() < np.e             # bounded with 1/sqrt(L) branches
    assert (v["no norm, ReZero"]["residual_var"] == 0).all()   # alpha = 0 at init
    bn = v["BatchNorm"]
    np.testing.assert_allclose(bn["residual_var"], 1.0, atol=1e-3)  # BN output, batch stats
    for stage in range(3):  # linear growth within each stage, reset at the transitions
        assert np.all(np.diff(bn["var"].to_numpy()[3 * stage:3 * stage + 3]) > 0)
