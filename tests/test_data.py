"""Tests of dynkit.data: determinism, split sizes, each generator's defining property, errors."""

import random

import numpy as np
import pytest
from scipy import special

import dynkit.data as D
from dynkit.errors import InvalidArgumentError

SMALL = {
    "gaussian_mixture": {"n_train": 50, "n_test": 30},
    "teacher_student": {"n_train": 50, "n_test": 30, "dim": 10},
    "xor": {"n_train": 50, "n_test": 30, "dim": 4},
    "circle": {"n_train": 50, "n_test": 30},
    "sphere": {"n_train": 50, "n_test": 30, "dim": 5},
    "sparse_parity": {"n_train": 50, "n_test": 30, "n_bits": 10, "k": 3},
    "modular_arithmetic": {"p": 11, "train_fraction": 0.6},
    "digits": {},
    "mnist1d": {"num_samples": 200},
    "denoise": {"source": "mnist1d", "num_samples": 200},
}


def test_every_source_listed():
    assert D.names() == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_deterministic_and_seed_dependent(name):
    a = D.load(name, seed=3, **SMALL[name])
    b = D.load(name, seed=3, **SMALL[name])
    c = D.load(name, seed=4, **SMALL[name])
    for split in ("train", "test"):
        np.testing.assert_array_equal(a.split(split)[0], b.split(split)[0])
        np.testing.assert_array_equal(a.split(split)[1], b.split(split)[1])
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.input_shape == a.x_train.shape[1:] == a.x_test.shape[1:]
    assert np.isfinite(a.x_train).all() and a.x_train.dtype == np.float32
    if a.task == "classification":
        assert a.y_train.ndim == 1 and a.y_train.max() < a.num_classes
    else:
        # regression targets are (n, k), or clean images (n, ...) for the denoise source
        assert a.num_classes is None and a.y_train.ndim >= 2


@pytest.mark.parametrize("name", ["gaussian_mixture", "teacher_student", "xor", "sphere",
                                  "sparse_parity"])
def test_synthetic_split_sizes(name):
    d = D.load(name, **SMALL[name])
    assert len(d.x_train) == len(d.y_train) == 50
    assert len(d.x_test) == len(d.y_test) == 30


def test_gaussian_mixture_means():
    d = D.load("gaussian_mixture", n_train=20000, n_test=0, num_classes=3, dim=4, noise=0.5,
               dtype=np.float64)
    means = d.meta["means"]
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 3.0)
    for c in range(3):
        xc = d.x_train[d.y_train == c]
        # Monte Carlo: sample mean within ~5 standard errors
        assert np.abs(xc.mean(0) - means[c]).max() < 5 * 0.5 / np.sqrt(len(xc))
        np.testing.assert_allclose(xc.std(0), 0.5, rtol=0.05)


def test_teacher_student_reproduces_teacher():
    d = D.load("teacher_student", n_train=40, n_test=10, dim=7, hidden=3, dtype=np.float64)
    w, v = d.meta["w"], d.meta["v"]
    x = np.concatenate([d.x_train, d.x_test])
    y = np.concatenate([d.y_train, d.y_test])[:, 0]
    h = x @ w.T / np.sqrt(7)
    # g(h) = erf(h / sqrt 2) = 2 Phi(h) - 1
    expected = sum(v[m] * (2 * special.ndtr(h[:, m]) - 1) for m in range(3))
    np.testing.assert_allclose(y, expected, atol=1e-12)
    np.testing.assert_array_equal(v, np.ones(3))


def test_xor_labels_are_the_product():
    d = D.load("xor", dim=5, pair=(1, 3), n_train=200, n_test=0)
    assert set(np.unique(d.x_train)) == {-1.0, 1.0}
    np.testing.assert_array_equal(d.y_train, (d.x_train[:, 1] != d.x_train[:, 3]).astype(int))
    r = D.load("xor", dim=5, pair=(1, 3), n_train=200, n_test=0, task="regression")
    np.testing.assert_array_equal(r.y_train[:, 0], r.x_train[:, 1] * r.x_train[:, 3])
    assert np.bincount(d.y_train, minlength=2).min() > 60  # both labels occur


def test_sparse_parity_labels():
    d = D.load("sparse_parity", n_bits=12, k=4, n_train=300, n_test=0)
    s = d.meta["relevant"]
    assert len(set(s)) == 4 and all(0 <= i < 12 for i in s)
    bits = (d.x_train[:, s] < 0).sum(axis=1)  # number of -1 among relevant bits
    np.testing.assert_array_equal(d.y_train, bits % 2)
    r = D.load("sparse_parity", n_bits=12, k=4, n_train=300, n_test=0, task="regression")
    np.testing.assert_array_equal(r.y_train[:, 0], np.prod(r.x_train[:, s], axis=1))
    # every irrelevant bit is uncorrelated with the label (brute-force check of sparsity)
    others = [i for i in range(12) if i not in set(s)]
    assert np.abs(np.mean(r.x_train[:, others] * r.y_train, axis=0)).max() < 0.25


def test_modular_arithmetic_labels_and_split():
    p = 11
    d = D.load("modular_arithmetic", p=p, train_fraction=0.6, operation="add")
    assert len(d.x_train) + len(d.x_test) == p * p
    assert len(d.x_train) == round(0.6 * p * p) and d.num_classes == p
    for x, y, pairs in ((d.x_train, d.y_train, d.meta["pairs_train"]),
                        (d.x_test, d.y_test, d.meta["pairs_test"])):
        a, b = x[:, :p].argmax(1), x[:, p:].argmax(1)
        assert (x.sum(1) == 2).all()
        np.testing.assert_array_equal(np.stack([a, b], 1), pairs)
        np.testing.assert_array_equal(y, (a + b) % p)
    all_pairs = np.concatenate([d.meta["pairs_train"], d.meta["pairs_test"]])
    assert len({tuple(q) for q in all_pairs}) == p * p  # each pair exactly once
    m = D.load("modular_arithmetic", p=p, operation="mul")
    a, b = m.x_train[:, :p].argmax(1), m.x_train[:, p:].argmax(1)
    np.testing.assert_array_equal(m.y_train, (a * b) % p)


def test_sphere_points_and_harmonic_target():
    d = D.load("sphere", dim=4, degree=3, n_train=100, n_test=20, dtype=np.float64)
    np.testing.assert_allclose(np.linalg.norm(d.x_train, axis=1), 1.0, atol=1e-12)
    t = d.x_train @ d.meta["beta"]
    # d = 4: Gegenbauer C_3^1 is the Chebyshev U_3(t) = 8t^3 - 4t, with U_3(1) = 4
    np.testing.assert_allclose(d.y_train[:, 0], (8 * t**3 - 4 * t) / 4, atol=1e-12)
    lin = D.load("sphere", dim=4, target="linear", n_train=10, n_test=0, dtype=np.float64)
    np.testing.assert_allclose(lin.y_train[:, 0], lin.x_train @ lin.meta["beta"], atol=1e-12)
    f = D.load("sphere", dim=3, target=lambda x: x[:, 0] ** 2, n_train=10, n_test=0,
               dtype=np.float64)
    np.testing.assert_allclose(f.y_train[:, 0], f.x_train[:, 0] ** 2, atol=1e-12)


def test_circle_is_cosine_of_angle():
    d = D.load("circle", degree=5, n_train=100, n_test=0, dtype=np.float64)
    np.testing.assert_allclose(np.linalg.norm(d.x_train, axis=1), 1.0, atol=1e-12)
    theta = np.arctan2(d.x_train[:, 1], d.x_train[:, 0])
    theta_b = np.arctan2(d.meta["beta"][1], d.meta["beta"][0])
    np.testing.assert_allclose(d.y_train[:, 0], np.cos(5 * (theta - theta_b)), atol=1e-10)


def test_digits_shapes_and_standardisation():
    d = D.load("digits", dtype=np.float64)
    assert d.x_train.shape == (1438, 64) and d.x_test.shape == (359, 64)
    assert d.num_classes == 10 and set(np.unique(d.y_train)) == set(range(10))
    std = d.x_train.std(0)
    varying = std > 0
    np.testing.assert_allclose(d.x_train.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(std[varying], 1.0, atol=1e-12)
    # undoing the standardisation recovers the sklearn pixels /16 of the same images
    from sklearn.datasets import load_digits

    raw = D.load("digits", standardize_inputs=False, dtype=np.float64)
    assert raw.x_train.min() >= 0 and raw.x_train.max() <= 1
    pix = load_digits().data / 16.0
    order = np.random.default_rng(0).permutation(len(pix))
    np.testing.assert_allclose(raw.x_test, pix[order[:359]])
    img = D.load("digits", image=True)
    assert img.x_train.shape == (1438, 8, 8, 1) and img.input_shape == (8, 8, 1)
    np.testing.assert_allclose(img.x_train.reshape(-1, 64), d.x_train, atol=1e-6)


def test_mnist1d_small_generation_restores_global_rng():
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    d = D.load("mnist1d", num_samples=200, test_fraction=0.25)
    assert np.random.random() == expect_np and random.random() == expect_py
    assert d.x_train.shape == (150, 40) and d.x_test.shape == (50, 40)
    assert d.num_classes == 10
    counts = np.bincount(np.concatenate([d.y_train, d.y_test]), minlength=10)
    np.testing.assert_array_equal(counts, 20)  # num_samples // 10 per class
    x = np.concatenate([d.x_train, d.x_test]).astype(np.float64)
    np.testing.assert_allclose([x.mean(), x.std()], [0.0, 1.0], atol=1e-5)
    c = D.load("mnist1d", num_samples=200, image=True)
    assert c.input_shape == (40, 1)


def test_batches_cover_split_once():
    d = D.load("gaussian_mixture", n_train=53, n_test=7, dtype=np.float64)
    xs = [x for x, _ in d.batches("train", 10, seed=(1, 2))]
    assert [len(x) for x in xs] == [10] * 5 + [3]
    got = np.concatenate(xs)
    order = np.random.default_rng((1, 2)).permutation(53)
    np.testing.assert_array_equal(got, d.x_train[order])
    assert sum(len(x) for x, _ in d.batches("train", 10, drop_last=True)) == 50
    x0, y0 = next(d.batches("test", 100, shuffle=False))
    np.testing.assert_array_equal(x0, d.x_test)
    np.testing.assert_array_equal(y0, d.y_test)


def test_from_arrays_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 4, 40)
    d = D.from_arrays(x, y, test_fraction=0.25, seed=1, name="mine")
    assert d.task == "classification" and d.num_classes == 4 and d.name == "mine"
    assert len(d.x_test) == 10 and len(d.x_train) == 30
    # the union of the splits is the data, each row once
    rows = np.concatenate([d.x_train, d.x_test])
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.sort(x[:, 0]))
    r = D.from_arrays(x, x[:, 0], seed=1)
    assert r.task == "regression" and r.y_train.shape == (32, 1)
    np.testing.assert_array_equal(r.y_train[:, 0], r.x_train[:, 0])

    np.savez(tmp_path / "a.npz", x=x, y=y)
    a = D.from_npz(tmp_path / "a.npz", test_fraction=0.25, seed=1)
    np.testing.assert_array_equal(a.x_train, d.x_train)
    assert a.name == "a"
    np.savez(tmp_path / "b.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    b = D.from_npz(tmp_path / "b.npz")
    np.testing.assert_array_equal(b.x_test, x[30:])
    np.testing.assert_array_equal(b.y_train, y[:30])


def test_errors(tmp_path):
    x = np.zeros((10, 2))
    with pytest.raises(InvalidArgumentError, match="unknown data set 'nope'.*digits"):
        D.load("nope")
    with pytest.raises(InvalidArgumentError, match="10 samples but y has 9"):
        D.from_arrays(x, np.zeros(9, int))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidArgumentError, match="1 NaN/Inf"):
        D.from_arrays(bad, np.zeros(10, int))
    with pytest.raises(InvalidArgumentError, match="NaN/Inf"):
        D.from_arrays(x, np.full(10, np.inf))
    with pytest.raises(InvalidArgumentError, match="x_train has 10 samples but y_train has 4"):
        D.Dataset("d", x, np.zeros(4, int), x, np.zeros(10, int), 2, "classification")
    with pytest.raises(InvalidArgumentError, match="num_classes=2"):
        D.Dataset("d", x, np.full(10, 5), x, np.zeros(10, int), 2, "classification")
    with pytest.raises(InvalidArgumentError, match="test_fraction"):
        D.from_arrays(x, np.zeros(10, int), test_fraction=1.5)
    with pytest.raises(InvalidArgumentError, match="no such file"):
        D.from_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "c.npz", inputs=x)
    with pytest.raises(InvalidArgumentError, match="expected x_train"):
        D.from_npz(tmp_path / "c.npz")
    with pytest.raises(InvalidArgumentError, match="invalid arguments for data set 'xor'"):
        D.load("xor", bogus=1)
    with pytest.raises(InvalidArgumentError, match="pair"):
        D.load("xor", dim=2, pair=(0, 0))
    with pytest.raises(InvalidArgumentError, match="k=5 relevant bits"):
        D.load("sparse_parity", n_bits=4, k=5)
    with pytest.raises(InvalidArgumentError, match="unknown mnist1d argument"):
        D.load("mnist1d", url="http://example.com")
    with pytest.raises(InvalidArgumentError, match="operation"):
        D.load("modular_arithmetic", operation="pow")
