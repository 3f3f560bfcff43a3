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
    # the gap shrinks with width (x16: ideally a factor 1/4), test losses meet
    result = unet.claim(df)
    assert result.passed, result
