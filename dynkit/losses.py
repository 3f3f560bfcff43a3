"""Losses and accuracy shared by the trainer, the metrics and the analyses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynkit.errors import InvalidArgumentError

__all__ = [
    "LOSSES", "accuracy", "cross_entropy", "loss_fn", "mse",
]

LOSSES = ("cross_entropy", "mse")


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy for integer labels:

        L = −(1/n) Σ_i log softmax(z_i)[y_i].

    Args:
        logits: ``(n, C)`` logits ``z``.
        labels: ``(n,)`` integer labels.

    Returns:
        The scalar loss.

    Example:
        >>> round(float(cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 6)   # log 4
        1.386294
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1))


def mse(outputs, targets, num_classes: int | None = None):
    """Mean squared error

        L = (1/2n) Σ_i ‖f(x_i) − y_i‖²;

    integer labels (1-D ``targets`` against ``(n, C > 1)`` outputs) become one-hot targets when
    ``num_classes`` is given.

    Args:
        outputs: ``(n, ...)`` network outputs.
        targets: targets of the same size, or ``(n,)`` integer labels.
        num_classes: number of classes for one-hot encoding of labels.

    Returns:
        The scalar loss.

    Example:
        >>> out = jnp.array([[1.0, 0.0], [0.0, 0.0]])
        >>> float(mse(out, jnp.array([0, 1]), num_classes=2))   # (0 + 1) / (2 · 2)
        0.25
    """
    if num_classes is not None and targets.ndim == 1 and outputs.ndim == 2 and outputs.shape[1] > 1:
        targets = jax.nn.one_hot(targets, num_classes, dtype=outputs.dtype)
    targets = targets.reshape(outputs.shape)
    return 0.5 * jnp.mean(jnp.sum((outputs - targets).reshape(outputs.shape[0], -1) ** 2, axis=-1))


def loss_fn(name: str, num_classes: int | None):
    """The loss function ``(outputs, targets) -> scalar`` named ``name``.

    Args:
        name: one of ``LOSSES``.
        num_classes: classes for one-hot targets of ``"mse"`` (ignored by cross-entropy).

    Returns:
        The function.

    Raises:
        InvalidArgumentError: an unknown name.

    Example:
        >>> loss_fn("cross_entropy", None) is cross_entropy
        True
    """
    if name == "cross_entropy":
        return cross_entropy
    if name == "mse":
        return lambda out, y: mse(out, y, num_classes)
    raise InvalidArgumentError(f"loss must be one of {LOSSES}, got {name!r}")


def accuracy(logits, labels):
    """Fraction of samples with ``argmax(logits) == labels``.

    Args:
        logits: ``(n, C)`` logits.
        labels: ``(n,)`` integer labels.

    Returns:
        The accuracy, a scalar in ``[0, 1]``.

    Example:
        >>> float(accuracy(jnp.array([[2.0, 1.0], [0.0, 1.0]]), jnp.array([0, 0])))
        0.5
    """
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
