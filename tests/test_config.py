import pytest

from collapse import gaussian
from collapse.config import Regime


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_samples": -5}, "n_samples"),
        ({"n_samples": 1}, "n_samples"),
        ({"n_chains": 0}, "n_chains"),
        ({"n_generations": 2.5}, "n_generations"),
        ({"estimator": "biased"}, "estimator"),
        ({"sampler": "exact"}, "sampler"),
        ({"sigma0": 0.0}, "sigma0"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_run_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        gaussian.GaussianRun(**kwargs)


@pytest.mark.parametrize("text, kind, alpha", [("replace", "replace", 0.0), ("accumulate", "accumulate", 0.0), ("mix(0.25)", "mix", 0.25), (" mix( 1 ) ", "mix", 1.0)])
def test_regime_parse(text, kind, alpha):
    regime = Regime.parse(text)
    assert (regime.kind, regime.alpha) == (kind, alpha)
    assert Regime.parse(str(regime)) == regime


@pytest.mark.parametrize("text, message", [("mix(1.5)", "alpha"), ("mix(-0.1)", "alpha"), ("mix", "fraction"), ("mix(x)", "alpha"), ("recycle", "regime")])
def test_bad_regimes_are_rejected(text, message):
    with pytest.raises(ValueError, match=message) as error:
        Regime.parse(text)
    if message == "regime":
        assert "replace" in str(error.value) and "accumulate" in str(error.value)


def test_alpha_only_with_mix():
    with pytest.raises(ValueError, match="alpha"):
        Regime("replace", 0.5)


def test_unknown_profile_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"profile.*'ci', 'cpu', 'paper'"):
        gaussian.chapter_config("laptop")


def test_mix_real_count():
    assert Regime.parse("mix(0.1)").n_real(100) == 10
    assert Regime.parse("replace").n_real(100) == 0
