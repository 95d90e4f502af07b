"""The weight beta of the KL penalty: fixed, or adapted toward a target KL (Ziegler et al. 2019,
section 2.2). The module keeps beta itself (a checkpointed buffer); a controller only says
how it moves after a batch."""
from __future__ import annotations

from cogen.config import CogenError


class FixedKL:
    def __init__(self, beta: float = 0.1):
        if beta < 0:
            raise CogenError(f"model.kl.beta={beta}: the KL weight must be >= 0.")
        self.init_beta = float(beta)

    def update(self, beta: float, kl: float, n_samples: int) -> float:
        return beta


class AdaptiveKL:
    """beta <- beta * (1 + clip(KL/target - 1, -0.2, 0.2) * n_samples / horizon): beta rises while
    the batch's mean KL is above `target` and falls while it is below, by at most 20 % per horizon."""

    def __init__(self, init_beta: float = 0.1, target: float = 6.0, horizon: int = 10000):
        if init_beta <= 0 or target <= 0 or horizon <= 0:
            raise CogenError(f"model.kl: init_beta={init_beta}, target={target}, horizon={horizon} must all be > 0.")
        self.init_beta, self.target, self.horizon = float(init_beta), float(target), int(horizon)

    def update(self, beta: float, kl: float, n_samples: int) -> float:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        return beta * (1.0 + error * n_samples / self.horizon)
