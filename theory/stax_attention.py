"""Global self-attention in the ``stax`` vocabulary (neural-tangents' ``GlobalSelfAttention``),
infinite heads and key/value channels (Hron et al. 2020, "Infinite attention: NNGP and NTK for
deep attention networks").

A head maps a sequence ``x (T, C)`` to ``mech(G) V`` with ``V = x W_V`` and logits
``G = QK_std x W_K (x W_Q)^T / (C d_k^p)``; the heads are concatenated, multiplied by
``W_out`` (scale ``OV_std / sqrt(C d_v n_heads)``) and a bias ``b_std b`` is added.
Two scalings, as neural-tangents 0.6.5 defines them:

* ``linear_scaling=True`` (``p = 1``, queries tied to keys): the logits converge to the
  constant ``G = QK_std K_self`` (the sample's own position-position covariance), so
  ``A = mech(G)`` is fixed and ``K'[x, x'] = OV_std² A(x) K[x, x'] A(x')^T + b_std²``,
  ``Θ' = OV_std² A Θ A'^T + b_std² + 2 (K' - b_std²)`` (the value and output weights).
  ``mech`` is ``softmax`` over the attended positions, ``identity``, ``abs`` or ``relu``.
* ``linear_scaling=False`` (``p = 1/2``, independent queries): the logits stay Gaussian;
  with the identity mechanism ``K' = (QK_std OV_std)² <K, K> K + b_std²`` where ``<K, K> =
  sum_{s, t} K[x, x', s, t]²``, and ``Θ' = (QK_std OV_std)² (2 <K, Θ> K + <K, K> (Θ + 4 K))
  + b_std²``. Softmax has no closed form here (neural-tangents raises too).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.theory.stax_kernel import Kernel, Layer, check_single_input, map_optional

__all__ = ["GlobalSelfAttention"]

_MECHANISMS = {
    "softmax": lambda g: jax.nn.softmax(g, axis=-1),
    "identity": lambda g: g,
    "abs": jnp.abs,
    "relu": jax.nn.relu,
}


def _flat(t, nb, p):
    return t.reshape(t.shape[:nb] + (p, p))


class GlobalSelfAttention(Layer):
    """Multi-head scaled dot-product self-attention over all positions (no positional
    embedding, no mask); kernels in the limit of infinitely many heads and channels.

    Args:
        n_chan_out, n_chan_key, n_chan_val, n_heads: widths of the finite network.
        linear_scaling: ``True`` (default, neural-tangents' default) or ``False``.
        W_key_std, W_value_std, W_query_std, W_out_std, b_std: weight/bias scales.
        attention_mechanism: ``"SOFTMAX"`` (default), ``"IDENTITY"``, ``"ABS"``, ``"RELU"``.

    References:
        Vaswani et al. 2017; Hron et al. 2020, "Infinite attention"; Novak et al. 2020
        (``stax.GlobalSelfAttention``).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> x = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])      # K = K_self = I / 2
        >>> att = GlobalSelfAttention(4, 4, 4, 2, attention_mechanism="IDENTITY")
        >>> att.kernel(input_kernel(x, None, True, False)).nngp[0, 0].tolist()   # A = K: A K A = I / 8
        [[0.125, 0.0], [0.0, 0.125]]
    """

    name = "GlobalSelfAttention"

    def __init__(self, n_chan_out, n_chan_key, n_chan_val, n_heads, linear_scaling=True,
                 W_key_std=1.0, W_value_std=1.0, W_query_std=1.0, W_out_std=1.0, b_std=None,
                 attention_mechanism="SOFTMAX"):
        mech = str(attention_mechanism).lower()
        if mech not in _MECHANISMS:
            raise InvalidArgumentError(f"GlobalSelfAttention: attention_mechanism must be one "
                                       f"of {sorted(m.upper() for m in _MECHANISMS)}, got "
                                       f"{attention_mechanism!r}")
        if not linear_scaling and mech != "identity":
            raise UnsupportedLayerError(
                f"GlobalSelfAttention: with linear_scaling=False the {mech} mechanism has no "
                f"closed-form kernel (Hron et al. 2020); use linear_scaling=True or "
                f"attention_mechanism='IDENTITY'")
        self.n_chan_out, self.n_chan_key = int(n_chan_out), int(n_chan_key)
        self.n_chan_val, self.n_heads = int(n_chan_val), int(n_heads)
        self.linear_scaling, self.mech = bool(linear_scaling), mech
        self.qk = float(W_query_std) * float(W_key_std)
        self.ov = float(W_out_std) * float(W_value_std)
        self.b_std = b_std

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        if len(in_shape) < 2:
            raise self.shape_error(f"needs sequence inputs (batch, length, channels) or other "
                                   f"spatial inputs, got per-sample shape {tuple(in_shape)}; "
                                   f"attention attends over positions")
        return tuple(in_shape[:-1]) + (self.n_chan_out,)

    def init(self, key, in_shape):
        kq, kk, kv, ko, kb = jax.random.split(key, 5)
        c, h = in_shape[-1], self.n_heads
        wq = None if self.linear_scaling else jax.random.normal(kq, (h, c, self.n_chan_key))
        wk = jax.random.normal(kk, (h, c, self.n_chan_key))
        wv = jax.random.normal(kv, (h, c, self.n_chan_val))
        wo = jax.random.normal(ko, (h * self.n_chan_val, self.n_chan_out))
        b = None if self.b_std is None else jax.random.normal(kb, (self.n_chan_out,))
        return (wq, wk, wv, wo, b)

    def apply(self, params, x, **kwargs):
        wq, wk, wv, wo, b = params
        n, c = x.shape[0], x.shape[-1]
        flat = x.reshape(n, -1, c)
        keys = jnp.einsum("ntc,hck->hntk", flat, wk)
        queries = keys if wq is None else jnp.einsum("ntc,hck->hntk", flat, wq)
        norm = c * (self.n_chan_key if self.linear_scaling else math.sqrt(self.n_chan_key))
        g = _MECHANISMS[self.mech](self.qk / norm * jnp.einsum("hntk,hnuk->hntu", queries, keys))
        heads = jnp.einsum("hntu,hnuv->nthv", g, jnp.einsum("ntc,hcv->hntv", flat, wv))
        out = heads.reshape(heads.shape[:2] + (-1,)) @ wo
        out = out * (self.ov / math.sqrt(self.n_chan_val * self.n_heads * c))
        out = out.reshape(x.shape[:-1] + (self.n_chan_out,))
        return out if b is None else out + self.b_std * b

    def needs_full(self, out_full):
        return True

    def kernel(self, k: Kernel) -> Kernel:
        s = k.spatial
        p = math.prod(s)
        b2 = 0.0 if self.b_std is None else float(self.b_std) ** 2
        nngp = _flat(k.nngp, 2, p)
        ntk = map_optional(lambda t: _flat(t, 2, p), k.ntk)
        cov = map_optional(lambda t: _flat(t, 1, p), k.cov)
        if self.linear_scaling:
            nngp, ntk, cov = self._linear(k, nngp, ntk, cov, b2)
        else:
            nngp, ntk, cov = self._identity_sqrt(nngp, ntk, cov, b2)
        back = lambda t, nb: t.reshape(t.shape[:nb] + tuple(s) * 2)
        return k.replace(nngp=back(nngp, 2), ntk=map_optional(lambda t: back(t, 2), ntk),
                         cov=map_optional(lambda t: back(t, 1), cov),
                         shape1=tuple(s) + (self.n_chan_out,), full=True)

    def _linear(self, k, nngp, ntk, cov, b2):
        """``A = mech(QK_std K_self)``; ``K' = OV² A K A'^T + b²``, ``Θ' = ... + 2 (K' - b²)``."""
        self_cov = _flat(k.cov1, 1, nngp.shape[-1]) if cov is None else cov
        att = _MECHANISMS[self.mech](self.qk * self_cov)
        n1 = nngp.shape[0]
        a1, a2 = (att, att) if cov is None else (att[:n1], att[n1:])
        w2 = self.ov ** 2
        weigh = lambda t: w2 * jnp.einsum("ist,ijtu,jvu->ijsv", a1, t, a2)
        nngp_w = weigh(nngp)
        ntk = map_optional(lambda t: weigh(t) + b2 + 2 * nngp_w, ntk)
        cov = map_optional(lambda c: w2 * jnp.einsum("ast,atu,avu->asv", att, c, att) + b2, cov)
        return nngp_w + b2, ntk, cov

    def _identity_sqrt(self, nngp, ntk, cov, b2):
        """Identity mechanism, ``1/sqrt(d_k)`` scaling: ``K' = (QK OV)² <K, K> K + b²``."""
        w2 = (self.qk * self.ov) ** 2
        dot = lambda a, b: jnp.sum(a * b, axis=(-2, -1), keepdims=True)
        kk = dot(nngp, nngp)
        ntk = map_optional(lambda t: w2 * (2 * dot(nngp, t) * nngp + kk * (t + 4 * nngp)) + b2,
                           ntk)
        cov = map_optional(lambda c: w2 * dot(c, c) * c + b2, cov)
        return w2 * kk * nngp + b2, ntk, cov
