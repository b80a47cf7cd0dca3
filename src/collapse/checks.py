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
