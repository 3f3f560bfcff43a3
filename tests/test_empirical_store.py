"""The empirical NTK of a checkpoint tiled into a Zarr store equals the untiled empirical NTK
(symmetric and rectangular), resumes, and refuses another checkpoint's store."""

import jax
import numpy as np
import pytest

import dynkit as dk
from dynkit.errors import InvalidArgumentError
from dynkit.theory import empirical
from dynkit.theory.empirical_store import checkpoint_ntk_to_store

pytest.importorskip("zarr")


@pytest.mark.slow
def test_checkpoint_ntk_to_store(tmp_path):
    model = dk.models.mlp(in_dim=3, widths=[16], out_dim=2)
    params = model.init(jax.random.PRNGKey(0))
    ckpt_path = str(tmp_path / "step_1.safetensors")
    dk.save_checkpoint(ckpt_path, model, params, step=1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((11, 3)).astype(np.float32), rng.standard_normal((6, 3)).astype(
        np.float32)
    full = empirical.ntk_fn(model, method="jacobian")
    for x2, name in ((None, "sym"), (y, "rect")):
        k = checkpoint_ntk_to_store(ckpt_path, x, x2, store=str(tmp_path / f"{name}.zarr"),
                                    batch_size=4, method="jacobian", progress=False)
        np.testing.assert_allclose(np.asarray(k), full(x, x2, params), rtol=1e-5, atol=1e-6)
        assert k.tiles_computed == 6  # 3x3 grid, upper triangle / 3x2 grid, all
    again = checkpoint_ntk_to_store(ckpt_path, x, None, store=str(tmp_path / "sym.zarr"),
                                    batch_size=4, method="jacobian", progress=False)
    assert again.tiles_computed == 0
    other = model.init(jax.random.PRNGKey(1))
    dk.save_checkpoint(str(tmp_path / "other.safetensors"), model, other, step=2)
    with pytest.raises(InvalidArgumentError, match="fingerprint"):
        checkpoint_ntk_to_store(str(tmp_path / "other.safetensors"), x, None,
                                store=str(tmp_path / "sym.zarr"), batch_size=4,
                                method="jacobian", progress=False)
