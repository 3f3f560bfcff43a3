"""Predictions of infinitely wide networks trained by gradient flow on MSE, and NNGP/NTK inference.

Conventions follow neural-tangents (``nt.predict``) so that its numbers can be reproduced:

* The loss is ``L(f) = ||f(X) - Y||^2 / (2 N)`` with ``N = y_train.size``, so gradient flow with
  learning rate ``eta`` moves the train outputs as ``df/dt = -(eta / N) K (f - Y)``; ``t`` counts
  steps and only ``eta * t`` matters.
* ``diag_reg`` is relative: ``K + diag_reg * (tr K / n) * I`` (neural-tangents'
  ``diag_reg_absolute_scale=False``), or absolute ``K + diag_reg * I`` when
  ``diag_reg_absolute_scale=True``. The regularized kernel is the one that is eigendecomposed or
  Cholesky-factorized; cross and test kernels are never regularized.
* ``trace_axes`` are output axes along which the kernel is ``K (x) I`` (block diagonal), so the
  kernel lacks them: with ``y_train`` of shape ``(n, k)`` and ``trace_axes=(-1,)`` the kernel is
  ``(n, n)``; with ``trace_axes=()`` it is ``(n, n, k, k)`` ("zipped" axes, as neural-tangents).

References: Jacot, Gabriel, Hongler (2018) "Neural Tangent Kernel"; Lee et al. (2019) "Wide
Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent" (eqs. 9-16);
Novak et al. (2020) "Neural Tangents".
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory.kernel_regress_store import stored_mean
from dynkit.theory.kernel_store_read import StoredKernel
from dynkit.validation import check_finite

__all__ = [
    "Gaussian",
    "Gaussians",
    "gp_inference",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
]

_KERNELS = ("nngp", "ntk")


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """A Gaussian over outputs (neural-tangents' ``predict.Gaussian``).

    Args:
        mean: the mean, the outputs' shape with leading time axes.
        covariance: the covariance, the kernel's zipped shape with the same leading time axes.

    References:
        Novak et al. 2020, "Neural Tangents: fast and easy infinite neural networks in Python".

    Example:
        >>> g = Gaussian(mean=0.0, covariance=1.0)
        >>> g.covariance
        1.0
    """

    mean: Any
    covariance: Any


@dataclasses.dataclass(frozen=True)
class Gaussians:
    """Per-kernel predictions for a tuple ``get``.

    Args:
        nngp: the NNGP prediction, ``None`` if not requested.
        ntk: the NTK prediction, ``None`` if not requested. Each is a :class:`Gaussian` when
            the covariance was computed, else the mean.

    References:
        Novak et al. 2020, "Neural Tangents" (the ``get`` convention).

    Example:
        >>> Gaussians(nngp=1.0)
        Gaussians(nngp=1.0, ntk=None)
    """

    nngp: Any = None
    ntk: Any = None


# ----------------------------------------------------------------------------- shape helpers


def _canonical_trace_axes(trace_axes: Sequence[int], y: jnp.ndarray) -> tuple[int, ...]:
    """Trace axes as negative axis numbers of ``y``; the batch axis 0 may not be traced."""
    axes = []
    for a in trace_axes:
        if not -y.ndim <= a < y.ndim:
            raise InvalidArgumentError(
                f"trace_axes={tuple(trace_axes)} is out of range for y_train of shape {y.shape}."
            )
        a = a - y.ndim if a >= 0 else a
        if a == -y.ndim:
            raise InvalidArgumentError(
                "trace_axes may not contain the batch axis 0 of y_train; "
                f"got trace_axes={tuple(trace_axes)}."
            )
        axes.append(a)
    return tuple(sorted(set(axes)))


def _make_2d(k: jnp.ndarray) -> jnp.ndarray:
    """Zipped kernel ``(a1, b1, a2, b2, ...)`` -> matrix ``(a1*a2*..., b1*b2*...)``."""
    even, odd = tuple(range(0, k.ndim, 2)), tuple(range(1, k.ndim, 2))
    rows = int(np.prod([k.shape[i] for i in even]))
    return jnp.transpose(k, even + odd).reshape(rows, -1)


def _zip_shape(shape_1: tuple[int, ...], shape_2: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s for pair in zip(shape_1, shape_2) for s in pair)


def _unzip_2d(m: jnp.ndarray, shape_1: tuple[int, ...], shape_2: tuple[int, ...]) -> jnp.ndarray:
    """Inverse of :func:`_make_2d` for the trailing two axes of ``m`` (leading axes kept)."""
    lead = m.shape[:-2]
    m = m.reshape(lead + shape_1 + shape_2)
    nl, d = len(lead), len(shape_1)
    perm = tuple(range(nl)) + tuple(nl + j for i in range(d) for j in (i, d + i))
    return jnp.transpose(m, perm)


def _regularize(k2d: jnp.ndarray, diag_reg: float, absolute: bool) -> jnp.ndarray:
    """``K + diag_reg * s * I`` with ``s = tr(K)/n`` (relative) or ``s = 1`` (absolute)."""
    n = k2d.shape[0]
    scale = 1.0 if absolute else jnp.trace(k2d) / n
    return k2d + diag_reg * scale * jnp.eye(n, dtype=k2d.dtype)


class _Targets:
    """``y_train`` split into kernel (non-traced) axes and traced axes, flattened to ``(M, T)``."""

    def __init__(self, y_train, trace_axes):
        y = jnp.asarray(y_train)
        if y.ndim < 1:
            raise ShapeMismatchError(f"y_train must have a batch axis; got shape {y.shape}.")
        check_finite("y_train", y)
        self.y = y
        self.trace_axes = _canonical_trace_axes(trace_axes, y)
        last = tuple(range(-len(self.trace_axes), 0))
        self.last_axes = last
        moved = jnp.moveaxis(y, self.trace_axes, last)
        self.trace_shape = moved.shape[moved.ndim - len(last):]
        self.kernel_shape = moved.shape[: moved.ndim - len(last)]
        self.flat = moved.reshape((-1, int(np.prod(self.trace_shape))))
        self.size = y.size

    def check_kernel(self, name: str, k, other_shape: tuple[int, ...] | None = None) -> jnp.ndarray:
        """Validate a zipped kernel ``(test..., train...)`` and return it as a matrix."""
        k = jnp.asarray(k)
        check_finite(name, k)
        d = len(self.kernel_shape)
        if k.ndim != 2 * d or tuple(k.shape[1::2]) != self.kernel_shape:
            raise ShapeMismatchError(
                f"{name} has shape {k.shape}; expected zipped axes whose train side is "
                f"{self.kernel_shape} (y_train shape {self.y.shape} without trace_axes "
                f"{self.trace_axes})."
            )
        if other_shape is not None and tuple(k.shape[::2]) != other_shape:
            raise ShapeMismatchError(
                f"{name} has shape {k.shape}; expected its first-argument axes {other_shape}."
            )
        return _make_2d(k)

    def unflatten(self, m: jnp.ndarray, out_kernel_shape: tuple[int, ...]) -> jnp.ndarray:
        """``(..., M_out, T)`` -> outputs with the traced axes put back in place."""
        lead = m.shape[:-2]
        m = m.reshape(lead + out_kernel_shape + self.trace_shape)
        return jnp.moveaxis(m, self.last_axes, self.trace_axes)


def _times(t) -> tuple[jnp.ndarray, tuple[int, ...]]:
    t = jnp.asarray(t, dtype=float)
    check_finite("t", jnp.where(jnp.isinf(t), 0.0, t))
    if bool(jnp.any(t < 0)):
        raise InvalidArgumentError(f"t must be >= 0 (training time in steps); got {t}.")
    return t.reshape(-1), t.shape


def _check_reg(diag_reg, learning_rate):
    if not np.isfinite(diag_reg) or diag_reg < 0:
        raise InvalidArgumentError(f"diag_reg must be a finite number >= 0; got {diag_reg}.")
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise InvalidArgumentError(f"learning_rate must be > 0; got {learning_rate}.")


@functools.partial(jax.jit, static_argnames="absolute")
def _eigh_regularized(k2d, diag_reg, absolute):
    """``K_reg = V diag(lam) V^T`` for the regularized train kernel."""
    return jnp.linalg.eigh(_regularize(k2d, diag_reg, absolute))


def _decay(lam, tau, norm):
    """``1 - exp(-lam tau / N)`` for each time ``tau`` (rows) and eigenvalue (columns);
    negative round-off eigenvalues are clipped to 0 (as neural-tangents)."""
    return -jnp.expm1(-jnp.maximum(lam, 0.0)[None, :] * tau[:, None] / norm)


def _inv_decay(lam, tau, norm):
    """``(1 - exp(-lam tau / N)) / lam``; ``tau / N`` in the limit ``lam -> 0``."""
    a = jnp.abs(lam)[None, :]
    safe = jnp.where(a > 0, a, 1.0)
    return jnp.where(a > 0, _decay(lam, tau, norm) / safe, tau[:, None] / norm)


def _spectral_apply(v, diag, b):
    """``V diag V^T b`` for each row of ``diag``: ``(T, n)``, ``b (n, ...)`` -> ``(T, n, ...)``."""
    vb = jnp.tensordot(v.T, b, axes=1)
    scaled = diag.reshape(diag.shape + (1,) * (vb.ndim - 1)) * vb[None]
    return jnp.einsum("ij,tj...->ti...", v, scaled)


@jax.jit
def _flow_train(lam, v, resid, tau, norm):
    """Train-output change ``(I - e^{-tau K/N}) (Y - f_0)``, shape ``(T, M, C)``."""
    return _spectral_apply(v, _decay(lam, tau, norm), resid)


@jax.jit
def _flow_test(lam, v, resid, ktd, tau, norm):
    """Test-output change ``K_xX K^{-1} (I - e^{-tau K/N}) (Y - f_0)``, shape ``(T, m, C)``."""
    return jnp.einsum("mn,tn...->tm...", ktd, _spectral_apply(v, _inv_decay(lam, tau, norm), resid))


@functools.partial(jax.jit, static_argnames=("regime", "compute_cov"))
def _ensemble_finite(lam, v, k_td, flat, tau, norm, k_tt, nngp_dd, nngp_td, regime, compute_cov):
    """Mean ``(T, m, C)`` and covariance ``(T, m, m)`` of the ensemble at times ``tau``."""
    tm = _inv_decay(lam, tau, norm)
    mean = jnp.einsum("mn,tn...->tm...", k_td, _spectral_apply(v, tm, flat))
    if not compute_cov:
        return mean, None
    if regime == "nngp":
        a2 = _spectral_apply(v, _inv_decay(lam, 2 * tau, norm), k_td.T)  # T_2t K_Xx
        return mean, k_tt[None] - jnp.einsum("mn,tnl->tml", k_td, a2)
    a = _spectral_apply(v, tm, k_td.T)  # T_t Theta_Xx, shape (T, n, m)
    cross = jnp.einsum("tnm,ln->tml", a, nngp_td)
    cov = (k_tt[None] + jnp.einsum("tnm,nk,tkl->tml", a, nngp_dd, a)
           - cross - jnp.swapaxes(cross, 1, 2))
    return mean, cov


# ----------------------------------------------------------------------------- gp_inference


def gp_inference(
    k_train_train,
    y_train,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: Sequence[int] = (-1,),
):
    r"""Posterior of the NNGP, and the t = infinity distribution of the NTK ensemble.

    With :math:`\tilde K = K_{dd} + \lambda I`, :math:`\tilde\Theta = \Theta_{dd} + \lambda I`:

    * NNGP (exact Bayesian posterior of the infinitely wide network, Lee et al. 2018):
      :math:`\mu = K_{td}\tilde K^{-1}Y`,
      :math:`\Sigma = K_{tt} - K_{td}\tilde K^{-1}K_{dt}`.
    * NTK (infinite ensemble trained to convergence, Lee et al. 2019 eq. 16):
      :math:`\mu = \Theta_{td}\tilde\Theta^{-1}Y`,
      :math:`\Sigma = K_{tt} + \Theta_{td}\tilde\Theta^{-1}K_{dd}\tilde\Theta^{-1}\Theta_{dt}
      - (\Theta_{td}\tilde\Theta^{-1}K_{dt} + h.c.)`.

    Kernels may be stored ones (:class:`~dynkit.theory.kernel_store_read.StoredKernel`, e.g.
    from ``stax.batch(..., store=)``): the mean then comes from conjugate gradients streaming the
    store (:func:`~dynkit.theory.kernel_regress_store.stored_mean`, ``(N, N)`` kernels with the
    outputs traced); covariances and the other predictors read a stored kernel into memory.

    Args:
      k_train_train: an array (used for whichever ``get`` is requested) or an object with
        ``.nngp`` / ``.ntk`` (the NTK covariance needs both).
      y_train: targets, shape ``(n, ...)``.
      diag_reg: regularizer strength, relative to ``tr K / n`` unless
        ``diag_reg_absolute_scale``.
      trace_axes: output axes the kernels are block-diagonal along (lacking from them).

    Returns:
      ``predict_fn(get=("nngp", "ntk"), k_test_train=None, k_test_test=None)``. A string ``get``
      returns one result, a tuple a :class:`Gaussians`. Each result is the mean, or a
      :class:`Gaussian` if ``k_test_test`` (the test-test NNGP, or an object with ``.nngp``) is
      given. ``k_test_train=None`` returns train-set outputs: ``y_train`` with zero covariance.

    References:
      Lee et al. 2018, "Deep neural networks as Gaussian processes"; Lee et al. 2019, eq. 16;
      Novak et al. 2020, "Neural Tangents" (``predict.gp_inference``).

    Example:
      >>> import jax.numpy as jnp
      >>> k_train_train = jnp.array([[2.0, 1.0], [1.0, 2.0]])
      >>> predict_fn = gp_inference(k_train_train, jnp.array([[1.0], [-1.0]]))
      >>> g = predict_fn("nngp", k_test_train=jnp.array([[1.0, 0.0]]),
      ...                k_test_test=jnp.array([[1.0]]))
      >>> round(float(g.mean[0, 0]), 5), round(float(g.covariance[0, 0]), 5)   # 1, 1 - 2/3
      (1.0, 0.33333)
    """
    _check_reg(diag_reg, 1.0)
    tgt = _Targets(y_train, trace_axes)
    factors: dict[str, Any] = {}

    def factor(g):
        if g not in factors:
            raw = _get_kernel(k_train_train, g, "k_train_train")
            k2d = tgt.check_kernel(f"k_train_train.{g}", raw)
            factors[g] = jsl.cho_factor(_regularize(k2d, diag_reg, diag_reg_absolute_scale))
        return factors[g]

    def predict_fn(get=_KERNELS, k_test_train=None, k_test_test=None):
        gets, single = _canonical_get(get)
        out = {}
        for g in gets:
            if k_test_train is None:
                mean = tgt.y
                cov = None
                if k_test_test is not None:
                    n_dd = _make_2d(jnp.asarray(_get_kernel(k_train_train, g, "k_train_train")))
                    cov = jnp.zeros_like(n_dd).reshape(_zip_shape(tgt.kernel_shape,
                                                                  tgt.kernel_shape))
                out[g] = mean if cov is None else Gaussian(mean, cov)
                continue
            k_dd_raw = _get_kernel(k_train_train, g, "k_train_train")
            if isinstance(k_dd_raw, StoredKernel) and k_test_test is None:
                # out of core: conjugate gradients streaming the stored kernel
                k_td_raw = _get_kernel(k_test_train, g, "k_test_train")
                mean = stored_mean(k_dd_raw, tgt.flat, k_td_raw, diag_reg,
                                   diag_reg_absolute_scale)
                out[g] = tgt.unflatten(jnp.asarray(mean)[None], (k_td_raw.shape[0],))[0]
                continue
            k_td_raw = jnp.asarray(_get_kernel(k_test_train, g, "k_test_train"))
            k_td = tgt.check_kernel(f"k_test_train.{g}", k_td_raw)
            test_shape = tuple(k_td_raw.shape[::2])
            mean = tgt.unflatten((k_td @ jsl.cho_solve(factor(g), tgt.flat))[None], test_shape)[0]
            if k_test_test is None:
                out[g] = mean
                continue
            if g == "ntk" and not all(_has(k, "nngp") for k in (k_train_train, k_test_train)):
                raise InvalidArgumentError(
                    "The NTK posterior covariance needs both NNGP and NTK kernels: pass "
                    "k_train_train and k_test_train as objects with .nngp and .ntk."
                )
            nngp_td = tgt.check_kernel(
                "k_test_train.nngp", _get_kernel(k_test_train, "nngp", "k_test_train")
            )
            nngp_tt = _make_2d(jnp.asarray(_get_kernel(k_test_test, "nngp", "k_test_test")))
            inv_nngp_dt = jsl.cho_solve(factor(g), nngp_td.T)
            cross = k_td @ inv_nngp_dt
            if g == "nngp":
                cov = nngp_tt - cross
            else:
                nngp_dd = tgt.check_kernel(
                    "k_train_train.nngp", _get_kernel(k_train_train, "nngp", "k_train_train")
                )
                term = jsl.cho_solve(factor(g), k_td.T)
                cov = nngp_tt + term.T @ nngp_dd @ term - cross - cross.T
            out[g] = Gaussian(mean, _unzip_2d(cov, test_shape, test_shape))
        return _pack(out, gets, single)

    return predict_fn


# ----------------------------------------------------------------------------- gradient_descent_mse


def gradient_descent_mse(
    k_train_train,
    y_train,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: Sequence[int] = (-1,),
):
    r"""Outputs of a linearized network trained by gradient flow on MSE (Lee et al. 2019, eq. 9).

    With the (regularized) train kernel :math:`\Theta = V\,\mathrm{diag}(\lambda)V^T`,
    :math:`N` = ``y_train.size`` and :math:`\tau = \eta t`:

    .. math::
        f_t(X) = Y + e^{-\tau\Theta/N}(f_0(X) - Y), \qquad
        f_t(x) = f_0(x) - \Theta_{xX}\Theta^{-1}(I - e^{-\tau\Theta/N})(f_0(X) - Y),

    the solution of :math:`\dot f = -(\eta/N)\,\Theta\,(f - Y)`. ``t=None`` is :math:`t=\infty`
    (a Cholesky solve instead of the eigendecomposition).

    Args:
      k_train_train: the train-train kernel :math:`\Theta_{XX}` (shape as in the module
        docstring).
      y_train: targets, shape ``(n, ...)``.
      learning_rate: gradient-descent step size :math:`\eta`; time is ``learning_rate * t``.
      diag_reg, diag_reg_absolute_scale, trace_axes: as in :func:`gp_inference`.

    Returns:
      ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` returning
      ``fx_train_t``, ``fx_test_t`` (if ``fx_train_0 is None``), or both; time axes of ``t``
      lead.

    References:
      Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under
      gradient descent", eq. 9; Novak et al. 2020, "Neural Tangents"
      (``predict.gradient_descent_mse``).

    Example:
      >>> import jax.numpy as jnp
      >>> k_train_train = jnp.array([[2.0, 1.0], [1.0, 2.0]])
      >>> predict_fn = gradient_descent_mse(k_train_train, jnp.array([[1.0], [-1.0]]))
      >>> fx = predict_fn(t=1.0, fx_train_0=None, fx_test_0=jnp.zeros((1, 1)),
      ...                 k_test_train=jnp.array([[1.0, 0.0]]))
      >>> round(float(fx[0, 0]), 5)   # 1 - exp(-1/2)
      0.39347
    """
    _check_reg(diag_reg, learning_rate)
    tgt = _Targets(y_train, trace_axes)
    k2d = tgt.check_kernel("k_train_train", k_train_train)
    cache: dict[str, Any] = {}

    def eigen():
        if "eig" not in cache:
            cache["eig"] = _eigh_regularized(k2d, diag_reg, bool(diag_reg_absolute_scale))
        return cache["eig"]

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        if fx_test_0 is not None and k_test_train is None:
            raise InvalidArgumentError("fx_test_0 was given but k_test_train is None; pass both.")
        f0 = None
        if fx_train_0 is not None:
            f0 = jnp.broadcast_to(jnp.asarray(fx_train_0, dtype=k2d.dtype), tgt.y.shape)
            check_finite("fx_train_0", f0)
        resid = tgt.flat - (0.0 if f0 is None else _Targets(f0, tgt.trace_axes).flat)
        ktd = test_shape = None
        if fx_test_0 is not None:
            ktd_raw = jnp.asarray(k_test_train)
            ktd = tgt.check_kernel("k_test_train", ktd_raw)
            test_shape = tuple(ktd_raw.shape[::2])
            check_finite("fx_test_0", fx_test_0)

        if t is None:
            train = tgt.y.astype(k2d.dtype)
            test = None
            if ktd is not None:
                fac = jsl.cho_factor(_regularize(k2d, diag_reg, diag_reg_absolute_scale))
                test = tgt.unflatten((ktd @ jsl.cho_solve(fac, resid))[None], test_shape)[0]
                test = jnp.asarray(fx_test_0) + test
        else:
            tau, t_shape = _times(t)
            tau = tau * learning_rate
            lam, v = eigen()
            train = test = None
            if f0 is not None:
                moved = _flow_train(lam, v, resid, tau, tgt.size)
                train = f0 + tgt.unflatten(moved, tgt.kernel_shape).reshape(t_shape + f0.shape)
            if ktd is not None:
                d = tgt.unflatten(_flow_test(lam, v, resid, ktd, tau, tgt.size), test_shape)
                test = jnp.asarray(fx_test_0) + d.reshape(t_shape + d.shape[1:])
        if fx_train_0 is None:
            return test
        if fx_test_0 is None:
            return train
        return train, test

    return predict_fn


# ----------------------------------------------------------------------------- ensemble


def gradient_descent_mse_ensemble(
    kernel_fn: Callable,
    x_train,
    y_train,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: Sequence[int] = (-1,),
):
    r"""Mean and covariance of an infinite ensemble of infinitely wide networks trained by
    gradient flow on MSE, at any times (Lee et al. 2019, eqs. 14-15; Novak et al. 2020).

    With :math:`\Theta` the train kernel of the chosen regime (regularized, eigendecomposed once),
    :math:`T_t = \Theta^{-1}(I - e^{-\eta t\Theta/N})` and :math:`N` = ``y_train.size``:

    * ``"ntk"`` (all layers trained): :math:`\mu_t = \Theta_{xX}T_tY`,
      :math:`\Sigma_t = K_{xx} + \Theta_{xX}T_tK_{XX}T_t\Theta_{Xx}
      - (\Theta_{xX}T_tK_{Xx} + h.c.)`;
    * ``"nngp"`` (only the readout trained, :math:`\Theta = K`): :math:`\mu_t = K_{xX}T_tY`,
      :math:`\Sigma_t = K_{xx} - K_{xX}T_{2t}K_{Xx}`.

    At :math:`t=0` the mean is 0 and the covariance the prior NNGP; ``t=None`` (infinity) is
    :func:`gp_inference`.

    Args:
      kernel_fn: ``kernel_fn(x1, x2, get)``; a tuple ``get`` returns an object with
        ``.nngp``/``.ntk``, a string ``get`` the array (the dynkit/neural-tangents stax API).
      x_train, y_train: training inputs and targets (``y_train`` shape ``(n, ...)``).
      learning_rate: gradient-descent step size; time is ``learning_rate * t``.
      diag_reg, diag_reg_absolute_scale, trace_axes: as in :func:`gp_inference`.

    Returns:
      ``predict_fn(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False)``. Means have
      shape ``t.shape + outputs``, covariances ``t.shape + zipped kernel``. A string ``get`` gives
      one result (the mean, or a :class:`Gaussian` if ``compute_cov``); a tuple a
      :class:`Gaussians`. ``x_test=None`` predicts on the training inputs (no regularization
      applied to the outputs, as neural-tangents).

    References:
      Lee et al. 2019, eqs. 14-15; Novak et al. 2020, "Neural Tangents"
      (``predict.gradient_descent_mse_ensemble``).

    Example:
      >>> import jax.numpy as jnp
      >>> from dynkit.theory import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
      >>> x, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[1.0], [-1.0]])
      >>> predict_fn = gradient_descent_mse_ensemble(kernel_fn, x, y)
      >>> mean = predict_fn(t=None, x_test=x, get="ntk")   # t = infinity interpolates
      >>> bool(jnp.allclose(mean, y, atol=1e-4))
      True
    """
    _check_reg(diag_reg, learning_rate)
    tgt = _Targets(y_train, trace_axes)
    check_finite("x_train", x_train)
    cache: dict[Any, Any] = {}

    def train_kernels():
        if "dd" not in cache:
            kk = kernel_fn(x_train, None, _KERNELS)
            cache["dd"] = {g: tgt.check_kernel(f"kernel_fn(x_train).{g}", getattr(kk, g))
                           for g in _KERNELS}
        return cache["dd"]

    def eigen(g):
        if ("eig", g) not in cache:
            cache[("eig", g)] = _eigh_regularized(train_kernels()[g], diag_reg,
                                                  bool(diag_reg_absolute_scale))
        return cache[("eig", g)]

    def shaped(mat):
        return _unzip_2d(mat, tgt.kernel_shape, tgt.kernel_shape)

    def predict_fn(t=None, x_test=None, get=_KERNELS, compute_cov=False):
        gets, single = _canonical_get(get)
        dd = train_kernels()
        if x_test is None:
            # Train set: exact (unregularized) train dynamics, i.e. the test kernel is the
            # regularized train kernel itself; the NNGP prior covariance likewise.
            reg = {g: _regularize(dd[g], diag_reg, diag_reg_absolute_scale) for g in _KERNELS}
            td = {"nngp": reg["nngp"], "ntk": reg["ntk"]}
            cross_nngp, out_shape = dd["nngp"], tgt.kernel_shape
            tt = {"nngp": reg["nngp"], "ntk": dd["nngp"]}
        else:
            check_finite("x_test", x_test)
            kk = kernel_fn(x_test, x_train, _KERNELS)
            raw = {g: jnp.asarray(getattr(kk, g)) for g in _KERNELS}
            td = {g: tgt.check_kernel(f"kernel_fn(x_test, x_train).{g}", raw[g]) for g in raw}
            cross_nngp, out_shape = td["nngp"], tuple(raw["nngp"].shape[::2])
            tt = None
            if compute_cov:
                k_tt = _make_2d(jnp.asarray(kernel_fn(x_test, None, "nngp")))
                tt = {"nngp": k_tt, "ntk": k_tt}

        if t is None:
            kdd = Gaussians(nngp=shaped(dd["nngp"]), ntk=shaped(dd["ntk"]))
            inf = gp_inference(kdd, tgt.y, diag_reg, diag_reg_absolute_scale, tgt.trace_axes)
            if x_test is None:
                return inf(get, None, kdd if compute_cov else None)
            ktd = Gaussians(nngp=_unzip_2d(td["nngp"], out_shape, tgt.kernel_shape),
                            ntk=_unzip_2d(td["ntk"], out_shape, tgt.kernel_shape))
            ktt = _unzip_2d(tt["nngp"], out_shape, out_shape) if compute_cov else None
            return inf(get, ktd, ktt)

        tau, t_shape = _times(t)
        tau = tau * learning_rate
        out = {}
        for g in gets:
            lam, v = eigen(g)
            mean, cov = _ensemble_finite(
                lam, v, td[g], tgt.flat, tau, tgt.size, tt[g] if compute_cov else None,
                dd["nngp"], cross_nngp, regime=g, compute_cov=bool(compute_cov))
            mean = tgt.unflatten(mean, out_shape)
            mean = mean.reshape(t_shape + mean.shape[1:])
            if not compute_cov:
                out[g] = mean
                continue
            cov = _unzip_2d(cov, out_shape, out_shape)
            out[g] = Gaussian(mean, cov.reshape(t_shape + cov.shape[1:]))
        return _pack(out, gets, single)

    return predict_fn


# ----------------------------------------------------------------------------- get handling


def _canonical_get(get) -> tuple[tuple[str, ...], bool]:
    single = isinstance(get, str)
    gets = (get,) if single else tuple(get) if get is not None else _KERNELS
    bad = [g for g in gets if g not in _KERNELS]
    if bad or not gets:
        raise InvalidArgumentError(f"get must be 'nngp', 'ntk' or a tuple of them; got {get!r}.")
    return gets, single


def _get_kernel(k, g: str, name: str):
    if hasattr(k, g):
        v = getattr(k, g)
        if v is None:
            raise InvalidArgumentError(f"{name}.{g} is None; the '{g}' kernel is needed here.")
        return v
    if isinstance(k, dict) and g in k:
        return k[g]
    if hasattr(k, "shape"):
        return k
    raise InvalidArgumentError(
        f"{name} must be an array or have a '{g}' attribute; got {type(k).__name__}."
    )


def _has(k, g: str) -> bool:
    return getattr(k, g, None) is not None or (isinstance(k, dict) and g in k)


def _pack(out: dict, gets: tuple[str, ...], single: bool):
    return out[gets[0]] if single else Gaussians(**out)
