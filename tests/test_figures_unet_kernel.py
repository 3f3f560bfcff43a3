"""``unet-kernel-regression``: a trained finite U-Net approaches its NTK prediction with width."""

import numpy as np
import pytest

from dynkit.figures import unet_kernel_regression as unet


@pytest.mark.slow
def test_unet_approaches_ntk_regression(quick_figure):
    df = quick_figure(unet)
    # both the nets and the kernel predictions fit the training set (below the init loss)
    assert np.all(df["train_loss_net"] < 0.7 * df["test_loss_init"])
    assert np.all(df["train_loss_ntk"] < 0.7 * df["test_loss_init"])
    gap = unet.gap_by_width(df)
    assert np.all(np.diff(gap.to_numpy()) < 0)      # the gap shrinks with width
    assert gap.iloc[-1] < 0.4 * gap.iloc[0]         # widths x16: ideally a factor 1/4
    loss = df.groupby("width")[["test_loss_net", "test_loss_ntk"]].mean()
    rel = (loss["test_loss_net"] - loss["test_loss_ntk"]).abs() / loss["test_loss_ntk"]
    assert rel.iloc[-1] < 0.25 and rel.iloc[-1] < 0.25 * rel.iloc[0]
