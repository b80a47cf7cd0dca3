"""Theory against simulation, checked in code: a chapter raises when they drift apart."""

from __future__ import annotations

import numpy as np
from scipy import stats


class AgreementError(AssertionError):
    """Simulation and closed form disagree beyond Monte Carlo error."""


def z_threshold(n_checks: int, false_alarm: float = 1e-3, floor: float = 4.0) -> float:
    """|z| bound such that ``n_checks`` true statements all pass with probability >= 1 - false_alarm."""
    return max(floor, float(stats.norm.isf(false_alarm / (2 * max(n_checks, 1)))))


def z_scores(simulated_mean, theory, standard_error) -> np.ndarray:
    return (np.asarray(simulated_mean) - np.asarray(theory)) / np.asarray(standard_error)


def check_agreement(label: str, z, z_max: float, where=None) -> float:
    """Raise :class:`AgreementError` if any |z| exceeds ``z_max``; return the largest |z|."""
    z = np.atleast_1d(np.asarray(z, float))
    if np.any(~np.isfinite(z)):
        raise AgreementError(f"{label}: non-finite z-scores {z}")
    worst = int(np.argmax(np.abs(z))) if z.size else 0
    if z.size and abs(z[worst]) > z_max:
        at = f" at {where[worst]}" if where is not None else ""
        raise AgreementError(f"{label}: |z| = {abs(z[worst]):.2f} > {z_max:.2f}{at}")
    return float(np.abs(z).max()) if z.size else 0.0


def samplers_agree(label: str, first: dict, second: dict, names, n_points: int = 6, false_alarm: float = 1e-3) -> dict:
    """Two independent runs of the same chains, each with its own exact sampler, against each other.

    Two-sample Kolmogorov--Smirnov tests of every statistic in ``names`` (arrays chains ×
    recorded generations, the generations in ``first["n"]``) at ``n_points`` log-spaced
    recorded generations. Raises ``AssertionError`` if the smallest p-value is below
    ``false_alarm`` divided by the number of tests; returns ``{"n_tests", "p_min", "at"}``, ``at``
    the indices of the tested generations.
    """
    n = np.asarray(first["n"])
    at = np.unique([int(np.argmin(np.abs(n - x))) for x in np.geomspace(1, n[-1], n_points)])
    p = [stats.ks_2samp(first[name][:, i], second[name][:, i]).pvalue for i in at for name in names]
    if min(p) < false_alarm / len(p):
        raise AssertionError(f"{label} disagree: smallest KS p-value {min(p):.2e} over {len(p)} tests")
    return {"n_tests": len(p), "p_min": float(min(p)), "at": at}
