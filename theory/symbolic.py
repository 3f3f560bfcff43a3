r"""Dual activations derived with sympy: closed forms of :math:`E[\sigma(u)\sigma(v)]` for
:math:`(u, v) \sim N(0, [[q_{11}, q_{12}], [q_{12}, q_{22}]])`.

* Arc-cosine kernels (Cho & Saul 2009, "Kernel methods for deep learning"): for
  :math:`\sigma(x) = \Theta(x)\,x^n` (step, ReLU, ReLU^2),

  .. math:: E[\sigma(u)\sigma(v)] = \frac{(q_{11}q_{22})^{n/2}}{2\pi} J_n(\theta),
     \qquad \cos\theta = \frac{q_{12}}{\sqrt{q_{11}q_{22}}},

  with :math:`J_0 = \pi-\theta`, :math:`J_1 = \sin\theta + (\pi-\theta)\cos\theta`,
  :math:`J_2 = 3\sin\theta\cos\theta + (\pi-\theta)(1+2\cos^2\theta)`. *Derived* here by
  sympy in polar coordinates: with :math:`w = r(\cos\varphi, \sin\varphi) \sim N(0, I_2)` and unit
  vectors at angle :math:`\theta`, :math:`u = r\cos\varphi`, :math:`v = r\cos(\varphi-\theta)`,

  .. math:: E_n = \frac{1}{2\pi}\int_0^\infty r^{2n+1}e^{-r^2/2}dr
     \int_{\theta-\pi/2}^{\pi/2}\cos^n\varphi\,\cos^n(\varphi-\theta)\,d\varphi ,

  both integrals done by ``sympy.integrate`` (valid for :math:`0<\theta<\pi`), and
  :math:`J_n = 2\pi E_n`. :func:`cho_saul_J` gives Cho & Saul's closed recurrence
  :math:`J_n = (-1)^n\sin^{2n+1}\theta\,(\frac{1}{\sin\theta}\partial_\theta)^n
  \frac{\pi-\theta}{\sin\theta}` for cross-checking.

  Mixed moments :func:`half_moment` (e.g. :math:`E[u\,\mathrm{relu}(v)] = q_{12}/2`) come out of
  the same integral and give the piecewise-linear duals (LeakyReLU, abs) by bilinearity
  (:func:`abrelu_dual`).

* Erf (Williams 1997, "Computing with infinite networks"):

  .. math:: E[\mathrm{erf}(u)\mathrm{erf}(v)] = \frac{2}{\pi}\arcsin
     \frac{2q_{12}}{\sqrt{(1+2q_{11})(1+2q_{22})}} .

  *Derived* by Price's theorem: :math:`\partial_{q_{12}}E[\phi(u)\phi(v)] = E[\phi'(u)\phi'(v)]`,
  with :math:`\phi' = \frac{2}{\sqrt\pi}e^{-x^2}`, a Gaussian integral that sympy does as two
  one-dimensional integrals :math:`\int e^{-\alpha z^2+\beta z}dz` (giving
  :math:`\frac{4}{\pi}[(1+2q_{11})(1+2q_{22})-4q_{12}^2]^{-1/2}`), then ``sympy.integrate`` in
  :math:`q_{12}` from 0, where the expectation vanishes because erf is odd.

Every expression is a sympy expression in the symbols ``Q11, Q12, Q22`` (or ``THETA``); the
``*_fn`` helpers lambdify them to numpy functions of ``(q11, q12, q22)`` (valid for
:math:`q_{11}, q_{22} > 0`, :math:`|q_{12}| \le \sqrt{q_{11}q_{22}}`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import sympy as sp

from dynkit.errors import InvalidArgumentError

__all__ = [
    "Q11",
    "Q12",
    "Q22",
    "THETA",
    "abrelu_dual",
    "arc_cosine_J",
    "arc_cosine_kernel",
    "cho_saul_J",
    "dual_fn",
    "erf_derivative_dual",
    "erf_dual",
    "gauss_hermite_expectation",
    "half_moment",
    "lambdify_dual",
    "relu2_dual",
    "relu_dual",
    "sign_dual",
    "step_dual",
]

THETA = sp.Symbol("theta", positive=True)
Q11, Q22 = sp.symbols("q11 q22", positive=True)
Q12 = sp.Symbol("q12", real=True)
_R = sp.Symbol("r", nonnegative=True)
_PHI = sp.Symbol("varphi", real=True)


@functools.lru_cache(maxsize=32)
def half_moment(n_u: int, n_v: int, u_positive: bool, v_positive: bool) -> sp.Expr:
    r""":math:`E[u^{n_u}v^{n_v}\,1\{u>0\}^{[u_+]}1\{v>0\}^{[v_+]}]` for unit-variance ``u, v``
    with correlation :math:`\cos\theta`, as a function of ``THETA``, integrated by sympy in
    polar coordinates (:math:`u = r\cos\varphi`, :math:`v = r\cos(\varphi-\theta)`; the
    indicators restrict :math:`\varphi` to :math:`(-\pi/2, \pi/2)` and
    :math:`(\theta-\pi/2, \theta+\pi/2)`, valid for :math:`0<\theta<\pi`).

    Args:
        n_u, n_v: the non-negative integer powers of ``u`` and ``v``.
        u_positive, v_positive: include the indicator :math:`1\{u>0\}` / :math:`1\{v>0\}`.

    Returns:
        A sympy expression in ``THETA``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning".

    Example:
        >>> half_moment(1, 1, False, True)   # E[u relu(v)]
        cos(theta)/2
    """
    for name, k in (("n_u", n_u), ("n_v", n_v)):
        if int(k) != k or k < 0:
            raise InvalidArgumentError(f"{name} must be a non-negative integer; got {k!r}.")
    lo, hi = -sp.pi / 2, 3 * sp.pi / 2
    if u_positive:
        hi = sp.pi / 2
    if v_positive:
        lo = THETA - sp.pi / 2
        hi = sp.pi / 2 if u_positive else THETA + sp.pi / 2
    deg = int(n_u) + int(n_v)
    radial = sp.integrate(_R ** (deg + 1) * sp.exp(-_R**2 / 2), (_R, 0, sp.oo))
    angular = sp.integrate(
        sp.expand_trig(sp.cos(_PHI) ** int(n_u) * sp.cos(_PHI - THETA) ** int(n_v)),
        (_PHI, lo, hi),
    )
    return _tidy_trig(radial * angular / (2 * sp.pi))


def arc_cosine_J(n: int) -> sp.Expr:
    r""":math:`J_n(\theta) = 2\pi E[\Theta(u)\Theta(v)u^nv^n]` for unit-variance ``u, v`` with
    correlation :math:`\cos\theta`, derived by integrating in polar coordinates (module
    docstring, :func:`half_moment`). ``n`` is a non-negative integer (0: step, 1: ReLU,
    2: ReLU^2).

    Args:
        n: the order, a non-negative integer.

    Returns:
        A sympy expression in ``THETA``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning", eq. 4.

    Example:
        >>> arc_cosine_J(0)
        pi - theta
    """
    if int(n) != n or n < 0:
        raise InvalidArgumentError(f"n must be a non-negative integer; got {n!r}.")
    return _tidy_trig(2 * sp.pi * half_moment(int(n), int(n), True, True))


def _tidy_trig(expr: sp.Expr) -> sp.Expr:
    """Reduce a polynomial in sin/cos of theta (coefficients in theta, pi) modulo
    sin^2 + cos^2 = 1 to at most linear in sin(theta)."""
    s, c = sp.symbols("s c", real=True)
    poly = sp.expand(sp.expand_trig(expr)).subs({sp.sin(THETA): s, sp.cos(THETA): c})
    _, rem = sp.reduced(poly, [s**2 + c**2 - 1], s, c, THETA, order="lex")
    rem = sp.factor_terms(sp.collect(sp.expand(rem), [s, THETA]))
    return rem.subs({s: sp.sin(THETA), c: sp.cos(THETA)})


def cho_saul_J(n: int) -> sp.Expr:
    r"""Cho & Saul (2009, eq. 4): :math:`J_n(\theta) = (-1)^n(\sin\theta)^{2n+1}
    \left(\frac{1}{\sin\theta}\frac{\partial}{\partial\theta}\right)^n
    \frac{\pi-\theta}{\sin\theta}`, evaluated symbolically (an independent route to
    :func:`arc_cosine_J`).

    Args:
        n: the order, a non-negative integer.

    Returns:
        A sympy expression in ``THETA`` (not simplified).

    References:
        Cho & Saul 2009, "Kernel methods for deep learning", eq. 4.

    Example:
        >>> import sympy as sp
        >>> sp.simplify(cho_saul_J(1) - arc_cosine_J(1))
        0
    """
    if int(n) != n or n < 0:
        raise InvalidArgumentError(f"n must be a non-negative integer; got {n!r}.")
    f = (sp.pi - THETA) / sp.sin(THETA)
    for _ in range(int(n)):
        f = sp.diff(f, THETA) / sp.sin(THETA)
    return (-1) ** int(n) * sp.sin(THETA) ** (2 * int(n) + 1) * f


def _theta_of_q() -> sp.Expr:
    return sp.acos(Q12 / sp.sqrt(Q11 * Q22))


def arc_cosine_kernel(n: int) -> sp.Expr:
    r""":math:`E[\Theta(u)\Theta(v)u^nv^n] = (q_{11}q_{22})^{n/2}J_n(\theta)/(2\pi)` in
    ``Q11, Q12, Q22`` (by positive homogeneity of degree ``n`` of :math:`\Theta(x)x^n`).

    Args:
        n: the order, a non-negative integer.

    Returns:
        A sympy expression in ``Q11, Q12, Q22``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning", eq. 1.

    Example:
        >>> arc_cosine_kernel(1).subs({Q11: 1, Q22: 1, Q12: 0})   # (E relu(u))^2
        1/(2*pi)
    """
    j = arc_cosine_J(n).subs(THETA, _theta_of_q())
    return sp.sqrt(Q11 * Q22) ** n * j / (2 * sp.pi)


def step_dual() -> sp.Expr:
    r"""Step (Heaviside) dual, order-0 arc-cosine kernel :math:`(\pi-\theta)/(2\pi)`; it is also
    the derivative map :math:`E[\mathrm{relu}'(u)\mathrm{relu}'(v)]` of the ReLU NTK.

    Returns:
        A sympy expression in ``Q11, Q12, Q22``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning".

    Example:
        >>> step_dual().subs({Q11: 1, Q22: 1, Q12: 0})   # P(u > 0, v > 0), independent
        1/4
    """
    return arc_cosine_kernel(0)


def relu_dual() -> tuple[sp.Expr, sp.Expr]:
    r"""ReLU: ``(nngp, dnngp)`` = order-1 arc-cosine kernel and its :math:`q_{12}` derivative
    (Price's theorem), which equals :func:`step_dual`.

    Returns:
        ``(nngp, dnngp)``, sympy expressions in ``Q11, Q12, Q22``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning"; Price 1958, "A useful theorem for nonlinear devices having Gaussian
        inputs".

    Example:
        >>> import sympy as sp
        >>> nngp, dnngp = relu_dual()
        >>> sp.simplify(dnngp - step_dual()), nngp.subs({Q11: 1, Q22: 1, Q12: 1})
        (0, 1/2)
    """
    k = arc_cosine_kernel(1)
    return k, sp.diff(k, Q12)


def relu2_dual() -> tuple[sp.Expr, sp.Expr]:
    r"""ReLU^2 (:math:`\Theta(x)x^2`): order-2 arc-cosine kernel and :math:`d/dq_{12}` of it,
    which is :math:`4E[\mathrm{relu}(u)\mathrm{relu}(v)]` (Price's theorem with
    :math:`\sigma' = 2\,\mathrm{relu}`).

    Returns:
        ``(nngp, dnngp)``, sympy expressions in ``Q11, Q12, Q22``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning"; Price 1958.

    Example:
        >>> import sympy as sp
        >>> nngp, _ = relu2_dual()
        >>> sp.simplify(nngp.subs({Q11: 1, Q22: 1, Q12: 1}))   # E relu(u)^4
        3/2
    """
    k = arc_cosine_kernel(2)
    return k, sp.diff(k, Q12)


def _in_q(expr_theta: sp.Expr, n_u: int, n_v: int) -> sp.Expr:
    """A unit-variance moment of degrees ``(n_u, n_v)`` at general variances (homogeneity)."""
    return sp.sqrt(Q11) ** n_u * sp.sqrt(Q22) ** n_v * expr_theta.subs(THETA, _theta_of_q())


def abrelu_dual(a, b) -> tuple[sp.Expr, sp.Expr]:
    r"""Dual of :math:`\phi(x) = a x` (:math:`x<0`), :math:`b x` (:math:`x\ge0`), i.e.
    :math:`\phi = a\,x + (b-a)\,\mathrm{relu}(x)` (LeakyReLU: ``a=alpha, b=1``; abs:
    ``a=-1, b=1``). By bilinearity,

    .. math:: E\phi(u)\phi(v) = a^2E[uv] + a(b-a)(E[u\,\mathrm{relu}(v)] + E[\mathrm{relu}(u)v])
       + (b-a)^2E[\mathrm{relu}(u)\mathrm{relu}(v)],

    every moment from :func:`half_moment`; ``dnngp`` is its :math:`q_{12}` derivative (Price).
    ``a``, ``b`` may be numbers or sympy symbols.

    Args:
        a, b: the slopes for ``x < 0`` and ``x >= 0``.

    Returns:
        ``(nngp, dnngp)``, sympy expressions in ``Q11, Q12, Q22``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning"; Price 1958.

    Example:
        >>> abrelu_dual(1, 1)   # the identity: E[uv] = q12
        (q12, 1)
    """
    a, b = sp.sympify(a), sp.sympify(b)
    k = (a**2 * _in_q(half_moment(1, 1, False, False), 1, 1)
         + a * (b - a) * _in_q(half_moment(1, 1, False, True), 1, 1)
         + a * (b - a) * _in_q(half_moment(1, 1, True, False), 1, 1)
         + (b - a) ** 2 * arc_cosine_kernel(1))
    return k, sp.diff(k, Q12)


def sign_dual() -> sp.Expr:
    r""":math:`E[\mathrm{sign}(u)\mathrm{sign}(v)] = 4E[\Theta(u)\Theta(v)] - 1 = 1-2\theta/\pi`,
    from :math:`\mathrm{sign} = 2\Theta - 1` and :math:`P(u>0) = 1/2`.

    Returns:
        A sympy expression in ``Q11, Q12, Q22``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning" (order 0).

    Example:
        >>> import sympy as sp
        >>> sign_dual().subs({Q11: 1, Q22: 1, Q12: sp.Rational(1, 2)})   # 1 - 2 (pi/3) / pi
        1/3
    """
    return 4 * step_dual() - 1


def _gaussian_line_integral(expr: sp.Expr, z: sp.Symbol) -> sp.Expr:
    r""":math:`\int_{-\infty}^{\infty}` of ``expr`` :math:`= c\,e^{-\alpha z^2 + \beta z}`
    (``alpha`` > 0), integrated by sympy with ``alpha``, ``beta`` as plain symbols."""
    log = sp.expand(sp.log(expr), force=True)
    poly = sp.Poly(log, z)
    if poly.degree() != 2:
        raise InvalidArgumentError(f"not a Gaussian in {z}: {expr}")
    alpha_val, beta_val = -poly.coeff_monomial(z**2), poly.coeff_monomial(z)
    rest = poly.coeff_monomial(1)
    alpha = sp.Symbol("alpha", positive=True)
    beta = sp.Symbol("beta", real=True)
    val = sp.simplify(
        sp.integrate(sp.exp(-alpha * z**2 + beta * z), (z, -sp.oo, sp.oo), conds="none")
    )
    return sp.exp(rest) * val.subs({alpha: alpha_val, beta: beta_val})


@functools.lru_cache(maxsize=1)
def erf_derivative_dual() -> sp.Expr:
    r""":math:`E[\mathrm{erf}'(u)\mathrm{erf}'(v)] = \frac{4}{\pi}E[e^{-u^2-v^2}]
    = \frac{4}{\pi}[(1+2q_{11})(1+2q_{22})-4q_{12}^2]^{-1/2}`, computed by sympy as two Gaussian
    line integrals over :math:`u = \sqrt{q_{11}}z_1`,
    :math:`v = \sqrt{q_{22}}(\rho z_1 + \sqrt{1-\rho^2}z_2)`.

    Returns:
        A sympy expression in ``Q11, Q12, Q22``.

    References:
        Williams 1997, "Computing with infinite networks"; Price 1958.

    Example:
        >>> erf_derivative_dual().subs({Q11: 0, Q22: 0, Q12: 0})   # erf'(0)^2
        4/pi
    """
    z1, z2 = sp.symbols("z1 z2", real=True)
    a, b = sp.symbols("a b", positive=True)
    rho = sp.Symbol("rho", real=True)
    u = a * z1
    v = b * (rho * z1 + sp.sqrt(1 - rho**2) * z2)
    density = sp.exp(-(z1**2 + z2**2) / 2) / (2 * sp.pi)
    inner = _gaussian_line_integral(sp.exp(-(u**2) - v**2) * density, z2)
    outer = _gaussian_line_integral(sp.simplify(inner), z1)
    expect = outer.subs(rho, Q12 / (a * b)).subs({a: sp.sqrt(Q11), b: sp.sqrt(Q22)})
    denom = sp.factor(sp.simplify(1 / expect**2))
    return 4 / sp.pi / sp.sqrt(sp.expand(denom))


@functools.lru_cache(maxsize=1)
def erf_dual() -> tuple[sp.Expr, sp.Expr]:
    r"""Erf: ``(nngp, dnngp)``. ``nngp`` is :math:`\int_0^{q_{12}}` of :func:`erf_derivative_dual`
    in :math:`q_{12}` (Price's theorem; the expectation is 0 at :math:`q_{12}=0` as erf is odd),
    giving Williams' :math:`\frac{2}{\pi}\arcsin(2q_{12}/\sqrt{(1+2q_{11})(1+2q_{22})})`.

    Returns:
        ``(nngp, dnngp)``, sympy expressions in ``Q11, Q12, Q22``.

    References:
        Williams 1997, "Computing with infinite networks"; Price 1958.

    Example:
        >>> nngp, _ = erf_dual()
        >>> nngp.subs({Q11: 1, Q22: 1, Q12: 1})
        2*asin(2/3)/pi
    """
    d = erf_derivative_dual()
    s = sp.Symbol("s", real=True)
    k = sp.integrate(d.subs(Q12, s), (s, 0, Q12), conds="none")
    return sp.simplify(k), d


def lambdify_dual(expr: sp.Expr) -> Callable:
    r"""Numpy function ``f(q11, q12, q22)`` of a dual expression (broadcasting).

    The expression is rewritten in :math:`\rho = q_{12}/\sqrt{q_{11}q_{22}}` (clipped to
    [-1, 1]), so that :math:`\arccos\rho` and :math:`\sqrt{1-\rho^2}` are computed from the same
    number and cancel correctly at :math:`|\rho| \to 1`.

    Args:
        expr: a sympy expression in ``Q11, Q12, Q22``.

    Returns:
        ``f(q11, q12, q22)``, a numpy function.

    References:
        Meurer et al. 2017, "SymPy: symbolic computing in Python" (``lambdify``).

    Example:
        >>> float(lambdify_dual(step_dual())(1.0, 0.0, 1.0))
        0.25
    """
    rho = sp.Symbol("rho", real=True)
    in_rho = expr.subs(Q12, rho * sp.sqrt(Q11 * Q22))
    f = sp.lambdify((Q11, Q22, rho), in_rho, modules="numpy")

    def fn(q11, q12, q22):
        q11, q12, q22 = (np.asarray(a, dtype=float) for a in (q11, q12, q22))
        return f(q11, q22, np.clip(q12 / np.sqrt(q11 * q22), -1.0, 1.0))

    return fn


@functools.cache
def dual_fn(name: str) -> Callable:
    """Numeric ``(q11, q12, q22) -> (nngp, dnngp)`` for ``name`` in ``"relu"``, ``"relu2"``,
    ``"erf"``, ``"abs"``; ``(q11, q12, q22) -> nngp`` for ``"step"``, ``"sign"``.

    Args:
        name: the activation's name.

    Returns:
        The numpy function (cached per name).

    References:
        Cho & Saul 2009, "Kernel methods for deep learning"; Williams 1997.

    Example:
        >>> [float(v) for v in dual_fn("relu")(1.0, 1.0, 1.0)]   # E relu(u)^2, P(u > 0)
        [0.5, 0.5]
    """
    pairs = {"relu": relu_dual, "relu2": relu2_dual, "erf": erf_dual,
             "abs": lambda: abrelu_dual(-1, 1)}
    singles = {"step": step_dual, "sign": sign_dual}
    if name in pairs:
        k, d = pairs[name]()
        fk, fd = lambdify_dual(k), lambdify_dual(d)
        return lambda q11, q12, q22: (fk(q11, q12, q22), fd(q11, q12, q22))
    if name in singles:
        return lambdify_dual(singles[name]())
    raise InvalidArgumentError(
        f"unknown dual {name!r}; expected one of {sorted(pairs) + sorted(singles)}."
    )


def gauss_hermite_expectation(f1: Callable, f2: Callable, q11, q12, q22,
                              degree: int = 200) -> float:
    r""":math:`E[f_1(u)f_2(v)]` by a tensor Gauss-Hermite rule (``degree**2`` nodes) with
    :math:`u = \sqrt{q_{11}}z_1`, :math:`v = \sqrt{q_{22}}(\rho z_1+\sqrt{1-\rho^2}z_2)`: the
    numerical reference the closed forms are checked against.

    Args:
        f1, f2: numpy functions applied elementwise to ``u`` and ``v``.
        q11, q22: the variances of ``u`` and ``v`` (positive scalars).
        q12: their covariance.
        degree: Hermite nodes per dimension.

    Returns:
        The expectation, a float.

    References:
        Golub & Welsch 1969, "Calculation of Gauss quadrature rules".

    Example:
        >>> round(gauss_hermite_expectation(lambda u: u, lambda v: v, 1.0, 0.5, 2.0, degree=5), 12)
        0.5
    """
    z, w = np.polynomial.hermite_e.hermegauss(int(degree))
    w = w / np.sqrt(2 * np.pi)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    rho = q12 / np.sqrt(q11 * q22)
    u = np.sqrt(q11) * z1
    v = np.sqrt(q22) * (rho * z1 + np.sqrt(max(1 - rho * rho, 0.0)) * z2)
    return float(np.sum(np.outer(w, w) * f1(u) * f2(v)))
