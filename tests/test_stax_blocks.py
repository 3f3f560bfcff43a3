"""Block-structured kernels after FanInConcat (dynkit.theory.stax_blocks): closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory import dual_activations as duals
from dynkit.theory import stax
from dynkit.theory.stax_recipes import NearestUpsample

X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))


def _branches():
    """[Dense(2, W=3, b=2) || Dense(6)] of the input: kernels 9 K + 4 and K, fractions 1/4, 3/4."""
    return stax.serial(stax.FanOut(2),
                       stax.parallel(stax.Dense(2, W_std=3.0, b_std=2.0), stax.Dense(6)),
                       stax.FanInConcat())


def _per_block(k):
    return 9.0 * k + 4.0, k


def test_concat_then_dense_is_the_weighted_mean():
    k = np.asarray(stax.Identity()[2](X, None, "nngp"))
    got = stax.serial(_branches(), stax.Dense(1, W_std=2.0))[2](X, None, ("nngp", "ntk"))
    a, b = _per_block(k)
    np.testing.assert_allclose(got.nngp, 4.0 * (a / 4 + 3 * b / 4), rtol=1e-12)
    # NTK: each branch's Dense adds its own nngp; the readout adds W² Θ + its nngp
    np.testing.assert_allclose(got.ntk, got.nngp + 4.0 * (a / 4 + 3 * b / 4), rtol=1e-12)


def test_concat_then_relu_applies_the_dual_per_block():
    k = np.asarray(stax.Identity()[2](X, None, "nngp"))
    got = stax.serial(_branches(), stax.Relu())[2](X, None, ("nngp", "ntk"))
    want_nngp, want_ntk = 0.0, 0.0
    for frac, blk in zip((0.25, 0.75), _per_block(k)):
        q = np.diag(blk)
        v, dv = duals.relu_dual(q[:, None], blk, q[None, :])
        want_nngp, want_ntk = want_nngp + frac * v, want_ntk + frac * blk * dv
    np.testing.assert_allclose(got.nngp, want_nngp, rtol=1e-12)
    np.testing.assert_allclose(got.ntk, want_ntk, rtol=1e-12)


def test_layernorm_uses_the_all_channel_variance():
    k = np.asarray(stax.Identity()[2](X, None, "nngp"))
    got = stax.serial(_branches(), stax.LayerNorm())[2](X, None, "nngp")
    a, b = _per_block(k)
    merged = a / 4 + 3 * b / 4
    q = np.diag(merged)
    np.testing.assert_allclose(got, merged / np.sqrt(np.outer(q, q)), rtol=1e-12)


def test_residual_sum_of_blocks_stays_exact_through_relu():
    """x + [a || b] with x plain: per-interval sums K + K_a, K + K_b, then the ReLU dual each."""
    k = np.asarray(stax.Identity()[2](X, None, "nngp"))
    net = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(8), _branches()),
                      stax.FanInSum(), stax.Relu())
    want = 0.0
    for frac, blk in zip((0.25, 0.75), _per_block(k)):
        s = k + blk
        q = np.diag(s)
        want = want + frac * duals.relu_dual(q[:, None], s, q[None, :])[0]
    np.testing.assert_allclose(net[2](X, None, "nngp"), want, rtol=1e-12)


def test_float32_and_jit():
    net = stax.serial(_branches(), stax.Relu(), stax.Dense(1))
    x32 = X.astype(jnp.float32)
    k32 = jax.jit(lambda x: net[2](x, None, "ntk"))(x32)
    assert k32.dtype == jnp.float32
    np.testing.assert_allclose(k32, net[2](X, None, "ntk"), rtol=1e-5)


def test_recipes_bad_input():
    with pytest.raises(InvalidArgumentError, match="depth"):
        stax.stax_densenet(0, 4)
    with pytest.raises(InvalidArgumentError, match="branch_scale"):
        stax.stax_resnet(2, 4, branch_scale="rezero")
    with pytest.raises(ShapeMismatchError, match="NearestUpsample"):
        NearestUpsample(1.5).out_shape((4, 1))


@pytest.mark.slow
def test_unet_recipe_shapes_and_symmetry():
    init_fn, apply_fn, kernel_fn = stax.stax_unet(2, 3, filter_shape=(3,))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 1)))
    out_shape, params = init_fn(jax.random.PRNGKey(0), x.shape)
    assert out_shape == (2, 4, 1) and apply_fn(params, x).shape == (2, 4, 1)
    k = np.asarray(kernel_fn(x, None, "nngp"))
    assert k.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(k, k.transpose(1, 0, 3, 2), rtol=1e-12)


@pytest.mark.parametrize("post", [
    lambda: stax.ImageResize((-1, 10, -1), "nearest"),
    lambda: stax.ImageResize((-1, 9, -1), "linear"),
    lambda: stax.Dropout(0.7, mode="train"),
], ids=["resize_nearest", "resize_linear", "dropout"])
def test_linear_per_channel_layers_act_per_block_before_an_activation(post):
    """concat -> (resize | dropout) -> Relu -> Dense(1): the nngp equals the channel-fraction
    weighted mean of the same net run on each branch alone (the per-block limit)."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5, 2)))
    stem = stax.Conv(4, (3,), padding="SAME")
    wide, plain = stax.Conv(2, (3,), W_std=3.0, b_std=2.0, padding="SAME"), stax.Conv(6, (3,), padding="SAME")
    tail = (post(), stax.Relu(), stax.Flatten(), stax.Dense(1))
    both = stax.serial(stem, stax.FanOut(2), stax.parallel(wide, plain), stax.FanInConcat(), *tail)
    got = both[2](x, None, "nngp")
    want = sum(frac * stax.serial(stem, branch, *tail)[2](x, None, "nngp")
               for frac, branch in ((0.25, wide), (0.75, plain)))
    np.testing.assert_allclose(got, want, rtol=1e-10)
