"""The class-mean part of the Gauss–Newton matrix of a classifier (Papyan 2019; Sagun et al.
2017): where the ``C`` outliers of a trained network's Hessian come from.

For the cross-entropy loss with softmax probabilities ``p_i``, ``H_out,i = diag(p_i) − p_i p_iᵀ
= Σ_c' p_ic' (e_c' − p_i)(e_c' − p_i)ᵀ``, so the GGN (``hessian_operator(..., ggn=True)``) is

    G = (1/N) Σ_i Σ_c' p_ic' g_ic' g_ic'ᵀ,   g_ic' = J_iᵀ (e_c' − p_i),

a second moment of the vectors ``g_ic'`` with weights ``p_ic'/N``. Grouping them by the
sample's class ``c = y_i`` and the logit ``c'`` splits it into a between-class and a
within-class part (Papyan 2019, eq. 5):

    G = Σ_{c,c'} W_cc' δ_cc' δ_cc'ᵀ + Σ_{c,c'} Σ_{i∈c} (p_ic'/N)(g_ic' − δ_cc')(g_ic' − δ_cc')ᵀ,

``W_cc' = Σ_{i∈c} p_ic'/N`` and ``δ_cc'`` the weighted class means. The first term,
``G_class``, has rank at most ``C²``; Papyan finds the ``C`` (or ``C−1``) outliers of the
Hessian spectrum are its top eigenvalues. The second term is positive semidefinite, so
``λ_k(G_class) <= λ_k(G)`` for every ``k`` (Weyl).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.analyses.hessian_ops import hessian_operator
from dynkit.errors import InvalidArgumentError

__all__ = ["class_mean_eigenvalues"]


def class_mean_eigenvalues(model, params, x, y, *, batch_size: int | None = None,
                           dtype=None) -> np.ndarray:
    """Eigenvalues (descending, ``C²`` of them) of the class-mean part of the cross-entropy GGN

        G_class = Σ_{c,c'} u_cc' u_cc'ᵀ / W_cc',   u_cc' = (1/N) Σ_{i∈c} p_ic' J_iᵀ (e_c' − p_i),

    computed exactly as the eigenvalues of the ``C² × C²`` Gram matrix ``u_aᵀ u_b / √(W_a W_b)``
    (each ``u`` one vector-Jacobian product over the data).

    Args:
        model, params, x, y: a classifier, its parameters, inputs and integer labels.
        batch_size, dtype: as in ``hessian_operator``.

    Returns:
        ``(C²,)`` eigenvalues, descending (pairs ``(c, c')`` with no mass count as 0).

    Raises:
        InvalidArgumentError: labels that are not integer classes of the outputs.

    References:
        Papyan 2019, "Measurements of three-level hierarchical structure in the outliers in
        the spectrum of deepnet Hessians" (ICML); Sagun, Evci, Güney, Dauphin & Bottou 2017,
        "Empirical analysis of the Hessian of over-parametrized neural networks".

    Example:
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> params = model.init(jax.random.PRNGKey(0))
        >>> x = jax.random.normal(jax.random.PRNGKey(1), (8, 3)); y = np.arange(8) % 2
        >>> class_mean_eigenvalues(model, params, x, y).shape
        (4,)
    """
    op = hessian_operator(model, params, x, y, loss="cross_entropy", batch_size=batch_size,
                          dtype=dtype)
    if op.loss != "cross_entropy":
        raise InvalidArgumentError("class_mean_eigenvalues needs integer class labels")
    num_classes = int(np.prod(model.node_shapes()[model.output]))
    n = len(op.x)
    eye = jnp.eye(num_classes, dtype=op.dtype)

    @jax.jit
    def part(theta, xb, yb):
        def outputs(t):
            sel = op.to_pytree(t)
            return model.apply({k: {**v, **sel.get(k, {})} for k, v in op.params.items()}, xb)

        out, pullback = jax.vjp(outputs, theta)
        p = jax.nn.softmax(out)
        onehot = jax.nn.one_hot(yb, num_classes, dtype=op.dtype)
        weight = onehot.T[:, None, :] * p.T[None, :, :] / n          # [c, c', i]
        cot = weight[..., None] * (eye[None, :, None, :] - p[None, None, :, :])
        cot = cot.reshape(num_classes * num_classes, len(xb), num_classes)
        return jax.vmap(lambda t: pullback(t)[0])(cot), weight.sum(-1).reshape(-1)

    u = jnp.zeros((num_classes * num_classes, op.dim), op.dtype)
    mass = jnp.zeros(num_classes * num_classes, op.dtype)
    for start in range(0, n, op.batch_size):
        du, dm = part(op.theta, op.x[start:start + op.batch_size],
                      op.y[start:start + op.batch_size])
        u, mass = u + du, mass + dm
    scale = jnp.where(mass > 0, 1 / jnp.sqrt(jnp.where(mass > 0, mass, 1)), 0)
    us = np.asarray(u * scale[:, None], np.float64)
    return np.linalg.eigvalsh(us @ us.T)[::-1]
