"""Mathematics of the infinite-width, mean-field and two-layer limits.

The subpackage imports nothing eagerly; ``__all__`` names its public modules (the
``stax_*`` and ``empirical_*`` modules are the parts of :mod:`~dynkit.theory.stax` and
:mod:`~dynkit.theory.empirical`).
"""

__all__ = [
    "dual_activations",
    "empirical",
    "finite_width",
    "gaussian_orthant",
    "knots",
    "ode",
    "predict",
    "signal_prop",
    "stax",
    "symbolic",
    "teacher_student",
    "two_layer",
]


def __getattr__(name):
    """``dynkit.theory.kernel_of(model)``: the infinite-width kernel of a dynkit ``Model``
    (:func:`dynkit.theory.model_kernel.kernel_of`), imported on first use."""
    if name == "kernel_of":
        from dynkit.theory.model_kernel import kernel_of

        return kernel_of
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
