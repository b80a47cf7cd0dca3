"""Kernel density estimates refitted to their own samples (chapter ``mixtures``).

Generation n is a Gaussian KDE on its N training points with bandwidth matrix H_n:
p_n(y) = (1/N) Σ_j N(y; x_j, H_n). Its samples are a point drawn uniformly from the data
plus N(0, H_n) noise. Two bandwidth rules:

* ``scott``: H = (scale · N^(−1/(d+4)))² Ŝ, with Ŝ the data's unbiased covariance (Scott's
  rule, scipy's ``gaussian_kde`` default, at ``scale=1``): the kernel follows the data;
* ``fixed``: H = scale² I, whatever the data.

Whatever the real distribution, the trace of the data's covariance (divisor N) obeys, in
expectation, t_{n+1} = (1 − 1/N)(t_n (1 + β² N/(N − 1)) + d h²) (:func:`mean_trace`,
equation ``eq-kde-trace``): resampling loses a fraction 1/N of the spread, the kernel adds
H back. So a fixed bandwidth settles at t* = (N − 1) d h², and a rule that scales with the
data grows or shrinks geometrically, by (1 − 1/N + β²) a generation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import pool as pools
from .config import check_choice, check_positive

RULES = ("scott", "fixed")


class KdeParams(NamedTuple):
    x: jax.Array  # (N, d) the kernels' centres (the training points)
    root: jax.Array  # (d, d) lower-triangular root of the bandwidth matrix H


@dataclasses.dataclass(frozen=True)
class KdeSettings:
    rule: str = "scott"  # "scott" (H ∝ the data's covariance) or "fixed" (H = scale² I)
    scale: float = 1.0  # a multiple of Scott's factor, or the fixed bandwidth h

    def __post_init__(self) -> None:
        check_choice("rule", self.rule, RULES)
        check_positive("scale", self.scale)

    def beta(self, n: int, d: int) -> float:
        """H = β² Ŝ + h² I: β for this rule (0 for ``fixed``)."""
        return self.scale * n ** (-1.0 / (d + 4)) if self.rule == "scott" else 0.0

    def h(self) -> float:
        return self.scale if self.rule == "fixed" else 0.0

    def __str__(self) -> str:
        return f"Scott × {self.scale:g}" if self.rule == "scott" else f"h = {self.scale:g}"


def _fit(settings: KdeSettings, data: pools.Pool) -> KdeParams:
    """The KDE of a full pool (``replace`` and ``mix``: every row is held)."""
    x = data.x
    n, d = x.shape
    centred = x - x.mean(0)
    cov = centred.T @ centred / (n - 1)
    H = settings.beta(n, d) ** 2 * cov + settings.h() ** 2 * jnp.eye(d, dtype=x.dtype)
    return KdeParams(x, jnp.linalg.cholesky(H))


def sample(key: jax.Array, params: KdeParams, m: int) -> jax.Array:
    key_rows, key_noise = jax.random.split(key)
    rows = jax.random.randint(key_rows, (m,), 0, params.x.shape[0])
    z = jax.random.normal(key_noise, (m, params.x.shape[1]), params.x.dtype)
    return params.x[rows] + z @ params.root.T


def log_density(params: KdeParams, y_TxD: jax.Array) -> jax.Array:
    """log p_n(y) at each of T points: a log-mean-exp over the N kernels.

    The whitened squared distances come from one (T × d)(d × N) product, |a|² − 2a·b + |b|²,
    so memory is T × N, not T × N × d.
    """
    d = y_TxD.shape[-1]
    inverse = jax.scipy.linalg.solve_triangular(params.root, jnp.eye(d, dtype=y_TxD.dtype), lower=True)
    a, b = y_TxD @ inverse.T, params.x @ inverse.T
    sq = jnp.sum(a**2, 1)[:, None] - 2 * a @ b.T + jnp.sum(b**2, 1)[None]
    log_kernel = -0.5 * jnp.maximum(sq, 0.0) - jnp.sum(jnp.log(jnp.diagonal(params.root))) - 0.5 * d * np.log(2 * np.pi)
    return jax.scipy.special.logsumexp(log_kernel, axis=1) - np.log(params.x.shape[0])


@functools.lru_cache(maxsize=None)
def model(settings: KdeSettings, capacity: int):
    """The KDE as a runner model on pools of ``capacity`` = N points (``replace``, ``mix``)."""
    return pools.data_model(functools.partial(_fit, settings), sample, capacity)


def trace_of(params: KdeParams) -> jax.Array:
    """tr of the training points' covariance, divisor N."""
    centred = params.x - params.x.mean(0)
    return jnp.sum(centred**2) / params.x.shape[0]


def mean_trace(n, settings: KdeSettings, N: int, d: int, trace0: float) -> np.ndarray:
    """E tr S_n for generations n = 0, 1, … (S_0: the real data, E tr S_0 = (1 − 1/N) tr Sigma_0 = (1 − 1/N) trace0):
    t_{n+1} = (1 − 1/N)(t_n (1 + β² N/(N − 1)) + d h²). Equation ``eq-kde-trace``; distribution-free."""
    n = np.asarray(n, int)
    beta, h = settings.beta(N, d), settings.h()
    grow, add = (1 - 1 / N) * (1 + beta**2 * N / (N - 1)), (1 - 1 / N) * d * h**2
    t = np.empty(int(n.max(initial=0)) + 1)
    t[0] = (1 - 1 / N) * trace0
    for i in range(len(t) - 1):
        t[i + 1] = grow * t[i] + add
    return t[n]
