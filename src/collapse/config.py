"""Validated, frozen configuration shared by every experiment.

Every experiment config is a frozen dataclass whose ``__post_init__`` calls the
checks below, so a bad parameter fails with a ``ValueError`` that names the field
and what it accepts *before* any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable

PROFILES = ("ci", "cpu", "paper")
REGIME_KINDS = ("replace", "accumulate", "mix", "accumulate-subsample")


def check_choice(field: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not allowed; choose one of {allowed}")


def check_int(field: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field}={value!r} must be an integer >= {minimum}")
    if value < minimum:
        raise ValueError(f"{field}={value!r} must be an integer >= {minimum}")


SEED_LIMIT = 2**32  # jax.random.key keeps 32 bits of a seed: 2**32 would alias 0


def check_seed(field: str, value: Any) -> None:
    """Seeds are integers in [0, 2**32): larger ones would silently alias smaller ones."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{field}={value!r} must be an integer in [0, 2**32)")


def check_positive(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{field}={value!r} must be a finite number > 0")


def check_unit_interval(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{field}={value!r} must be a number in [0, 1]")


def check_profile(profile: str) -> None:
    check_choice("profile", profile, PROFILES)


@dataclasses.dataclass(frozen=True)
class Regime:
    """Which data generation n+1 is trained on.

    ``replace``: only the M samples drawn from generation n (the paper's setting).
    ``accumulate``: the real data and every synthetic batch so far.
    ``mix``: a fraction ``alpha`` of the M samples is fresh real data, the rest drawn
    from generation n.
    ``accumulate-subsample``: the real data and every synthetic batch so far are kept, and
    each generation trains on M points drawn from that pool without replacement (Kazdan et
    al. 2024's third workflow: the data of ``accumulate``, the compute of ``replace``). Only
    models that keep their data points offer it (a sufficient statistic cannot be subsampled).
    """

    kind: str = "replace"  # one of REGIME_KINDS
    alpha: float = 0.0  # fraction of fresh real data; only meaningful for "mix"

    def __post_init__(self) -> None:
        check_choice("regime", self.kind, REGIME_KINDS)
        check_unit_interval("alpha", self.alpha)
        if self.kind != "mix" and self.alpha != 0.0:
            raise ValueError(f"alpha={self.alpha!r} is only allowed with regime 'mix', not {self.kind!r}")

    @classmethod
    def parse(cls, text: "str | Regime") -> "Regime":
        """``"replace"``, ``"accumulate"`` or ``"mix(0.1)"``."""
        if isinstance(text, Regime):
            return text
        match = re.fullmatch(r"\s*mix\(\s*([^)]*)\)\s*", str(text))
        if match:
            try:
                alpha = float(match.group(1))
            except ValueError:
                raise ValueError(f"regime={text!r}: alpha must be a number, as in 'mix(0.1)'") from None
            return cls("mix", alpha)
        if str(text).strip() == "mix":
            raise ValueError("regime='mix' needs a fraction of real data, as in 'mix(0.1)'")
        return cls(str(text).strip())

    def n_real(self, n_samples: int) -> int:
        """How many of ``n_samples`` training points are fresh real data (mix only)."""
        return int(round(self.alpha * n_samples)) if self.kind == "mix" else 0

    def __str__(self) -> str:
        return f"mix({self.alpha:g})" if self.kind == "mix" else self.kind


def to_dict(config: Any) -> dict:
    """A JSON-able dict of a (nested) config dataclass, regimes as their text form."""

    def convert(value: Any) -> Any:
        if isinstance(value, Regime):
            return str(value)
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return convert(config)
