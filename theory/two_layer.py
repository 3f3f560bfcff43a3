"""Two-layer networks ``f(x) = alpha / m^gamma * sum_i a_i sigma(w_i . x + b_i)``, trained.

The family interpolates between the two classical limits of wide networks:

* ``gamma = 1/2`` -- NTK / lazy scaling (Jacot et al. 2018; Chizat, Oyallon & Bach 2019),
* ``gamma = 1``   -- mean-field scaling (Mei, Montanari & Nguyen 2018; Chizat & Bach 2018;
  Rotskoff & Vanden-Eijnden 2018),

and ``alpha`` is the output scale of Chizat, Oyallon & Bach 2019 ("On lazy training in
differentiable programming"): large ``alpha`` makes any scaling lazy.

Time scaling (so that limits exist). The learning rate the user passes, ``lr``, is a step of
*function-space / particle time*; the step applied to the raw parameters is

    eta = lr * m^(2 gamma - 1) / alpha^2          (``lr_scale``)

With it the predictions move by O(1) per unit time for every (m, gamma, alpha): the tangent
kernel ``sum_i |grad_theta_i f|^2`` is O(alpha^2 m^(1 - 2 gamma)). For ``gamma = 1,
alpha = 1`` the step of one particle is ``lr * grad Psi(theta_i; rho_m)``, i.e. ``lr`` is the
time step of the mean-field PDE ``d_t rho = div(rho grad Psi)`` (Mei et al. 2018, eq. (6));
for ``gamma = 1/2`` particles move by O(1/sqrt(m)) (lazy), and for large ``alpha`` by
O(1/alpha). Gradient flow integrates ``dtheta/dt = -lr_scale * grad L(theta)`` in the same
time units; ``time = step * lr`` for the discrete methods.

Losses: ``"mse"`` is ``1/2 mean (f - y)^2``; ``"logistic"`` is ``mean log(1 + exp(-y f))``.
The network is in :mod:`dynkit.theory.two_layer_net`, the trainers in
:mod:`dynkit.theory.two_layer_train`; this module gathers both. All trainers run a
``lax.scan`` over record points with a ``lax.fori_loop`` of steps inside (no Python per-step
loop) and return a :class:`Trajectory`.
"""

from dynkit.theory.ode import dopri5
from dynkit.theory.two_layer_net import (
    TwoLayer,
    apply,
    effective_rank,
    init,
    loss,
    lr_scale,
    ntk_predict,
    relu_ntk,
)
from dynkit.theory.two_layer_train import (
    Trajectory,
    gd,
    gradient_flow,
    langevin,
    neurons,
    online_sgd,
    sgd,
)

__all__ = [
    "Trajectory",
    "TwoLayer",
    "apply",
    "dopri5",
    "effective_rank",
    "gd",
    "gradient_flow",
    "init",
    "langevin",
    "loss",
    "lr_scale",
    "neurons",
    "ntk_predict",
    "online_sgd",
    "relu_ntk",
    "sgd",
]
