"""Built-in checkpoint metrics against independent numpy computations."""

import jax
import numpy as np
import pytest

import dynkit as dk
from dynkit.losses import cross_entropy, mse
from dynkit.metrics import weight_norms


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4))
    labels = rng.integers(0, 4, size=7)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = -logp[np.arange(7), labels].mean()
    assert float(cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-12)


def test_mse_one_hot_matches_numpy():
    rng = np.random.default_rng(1)
    out = rng.normal(size=(5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    expected = 0.5 * np.mean(np.sum((out - np.eye(3)[labels]) ** 2, axis=1))
    assert float(mse(out, labels, num_classes=3)) == pytest.approx(expected, rel=1e-12)


def test_weight_norms_use_effective_weights():
    model = dk.models.mlp(6, [5], 3, parameterization="ntk", W_std=1.7)
    params = model.init(jax.random.PRNGKey(0), dtype=np.float64)
    df = weight_norms(model, params).set_index("layer")["value"]
    fc0 = 1.7 / np.sqrt(6) * np.asarray(params["fc0"]["w"])
    head = 1.7 / np.sqrt(5) * np.asarray(params["head"]["w"])
    assert df["fc0"] == pytest.approx(np.sqrt((fc0**2).sum()), rel=1e-12)
    assert df["total"] == pytest.approx(np.sqrt((fc0**2).sum() + (head**2).sum()), rel=1e-12)
