"""The generational runner: regimes, the scan driver, and the resumable Python driver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse import runner
from collapse.config import Regime
from collapse.runner import StatsModel
from collapse.store import ResultsStore, RunDir


def counting_model():
    """Params = stats = (count, sum); sampling m points from params returns m copies of the running mean.

    Deterministic, so every regime's bookkeeping can be checked by hand.
    """
    fit = lambda s: s[1] / s[0]  # noqa: E731
    sample_stats = lambda key, mean, m: jnp.stack([jnp.float32(m), m * mean])  # noqa: E731
    merge = lambda a, b: a + b  # noqa: E731
    return StatsModel(fit, sample_stats, merge)


def real_stats(key, m):
    return jnp.stack([jnp.float32(m), jnp.float32(m * 10.0)])  # real data: all points equal to 10


def synthetic_shift_model():
    """Sampling adds +1 to every point: a model that drifts, to see how much real data pulls it back."""
    fit = lambda s: s[1] / s[0]  # noqa: E731
    sample_stats = lambda key, mean, m: jnp.stack([jnp.float32(m), m * (mean + 1.0)])  # noqa: E731
    return StatsModel(fit, sample_stats, lambda a, b: a + b)


def run(model, regime, n_generations=4, n_samples=10):
    return np.asarray(
        runner.run_chain(model, real_stats, jax.random.key(0), n_samples=n_samples, n_generations=n_generations, regime=Regime.parse(regime))
    )


def test_generation_zero_is_fitted_to_real_data():
    assert run(synthetic_shift_model(), "replace")[0] == 10.0


def test_replace_uses_only_the_newest_samples():
    np.testing.assert_allclose(run(synthetic_shift_model(), "replace"), [10, 11, 12, 13, 14])


def test_accumulate_pools_real_and_every_synthetic_batch():
    # means: gen0 10; gen1 pools {10 x10, 11 x10} = 10.5; gen2 adds 11.5 x10 -> (100+110+115)/30 ...
    expected = [10.0]
    pooled_sum, pooled_n = 100.0, 10
    for _ in range(4):
        pooled_sum += 10 * (expected[-1] + 1)
        pooled_n += 10
        expected.append(pooled_sum / pooled_n)
    np.testing.assert_allclose(run(synthetic_shift_model(), "accumulate"), expected, rtol=1e-6)


def test_mix_takes_the_real_fraction_fresh_each_generation():
    # 30 % real (value 10), 70 % from the previous fit shifted by +1: m_{n+1} = 0.3*10 + 0.7*(m_n + 1)
    expected = [10.0]
    for _ in range(4):
        expected.append(0.3 * 10 + 0.7 * (expected[-1] + 1))
    np.testing.assert_allclose(run(synthetic_shift_model(), "mix(0.3)"), expected, rtol=1e-6)


def test_mix_extremes_match_replace_and_real():
    model = synthetic_shift_model()
    np.testing.assert_allclose(run(model, "mix(0)"), run(model, "replace"))
    np.testing.assert_allclose(run(model, "mix(1)"), 10.0)


def test_simulate_shapes_and_chain_independence_from_batch_size():
    model = counting_model()
    common = dict(seed=3, n_samples=5, n_generations=7, regime=Regime())
    out = runner.simulate(model, real_stats, n_chains=6, **common)
    assert out.shape == (6, 8)
    keys_small, keys_big = runner.chain_keys(3, 2), runner.chain_keys(3, 6)
    np.testing.assert_array_equal(jax.random.key_data(keys_small), jax.random.key_data(keys_big[:2]))


# --------------------------------------------------------------------------- Python driver


class Interrupted(Exception):
    pass


def tiny_problem(fail_at=None, calls=None):
    """'Training' fits a mean with noise from the key; 'generation' samples around it."""

    def train(key, data):
        if calls is not None:
            calls.append(len(data))
        if fail_at is not None and len(calls) == fail_at:
            raise Interrupted
        noise = jax.random.normal(key, ())
        return {"mean": jnp.asarray(data.mean() + 0.01 * noise), "scale": jnp.asarray(data.std())}

    def generate(key, params, data):
        # As many samples as the real set (64), whatever the training set's size (accumulate).
        return np.asarray(params["mean"] + params["scale"] * jax.random.normal(key, (64,)))

    def evaluate(params, samples):
        return {"mean": float(params["mean"]), "sample_std": float(samples.std())}

    return train, generate, evaluate


@pytest.mark.stored
@pytest.mark.parametrize("regime", ["replace", "accumulate", "mix(0.25)"])
def test_interrupted_run_resumes_with_identical_results(tmp_path, regime):
    real = np.random.default_rng(0).normal(2.0, 1.0, 64)
    common = dict(seed=7, real_data=real, n_generations=5, regime=Regime.parse(regime), progress=False)

    train, generate, evaluate = tiny_problem()
    reference = runner.run_generations(RunDir(tmp_path / "straight"), train=train, generate=generate, evaluate=evaluate, **common)

    calls = []
    train, generate, evaluate = tiny_problem(fail_at=4, calls=calls)
    interrupted = RunDir(tmp_path / "resumed")
    with pytest.raises(Interrupted):
        runner.run_generations(interrupted, train=train, generate=generate, evaluate=evaluate, **common)
    assert interrupted.finished_generations() == [0, 1, 2]
    assert not list(interrupted.path.glob(".gen-*"))  # no half-written generation left behind

    calls.clear()
    train, generate, evaluate = tiny_problem(calls=calls)
    resumed = runner.run_generations(interrupted, train=train, generate=generate, evaluate=evaluate, **common)
    assert len(calls) == 3  # only generations 3, 4, 5 were trained again
    assert resumed == reference
    for n in range(6):
        a, b = RunDir(tmp_path / "straight").load_generation(n), interrupted.load_generation(n)
        np.testing.assert_array_equal(a["samples"], b["samples"])
        jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])


def test_train_on_previous_gets_the_predecessor_also_after_a_resume(tmp_path):
    # A model that draws its data from its predecessor: params count the generations.
    real = np.zeros(8)
    seen = []

    def train(key, data, previous):
        seen.append(None if previous is None else int(previous["n"]))
        if len(seen) == 3 and fail["on"]:
            raise Interrupted
        return {"n": jnp.asarray(0 if previous is None else int(previous["n"]) + 1)}

    common = dict(seed=1, real_data=real, n_generations=4, regime=Regime(), progress=False, train_on_previous=True,
                  generate=lambda key, params, data: np.full(8, float(params["n"])))
    fail = {"on": True}
    run_dir = RunDir(tmp_path / "run")
    with pytest.raises(Interrupted):
        runner.run_generations(run_dir, train=train, **common)
    assert seen == [None, 0, 1] and run_dir.finished_generations() == [0, 1]
    seen.clear(), fail.update(on=False)
    runner.run_generations(run_dir, train=train, **common)
    assert seen == [1, 2, 3]  # generation 2's predecessor came from the store, the rest from memory
    assert [float(run_dir.load_generation(n)["samples"][0]) for n in range(5)] == [0, 1, 2, 3, 4]


def test_runs_share_generation_zero_through_a_common_folder(tmp_path):
    real = np.random.default_rng(0).normal(2.0, 1.0, 64)
    shared = RunDir(tmp_path / "zero")
    calls = []
    for regime in ("replace", "accumulate"):
        train, generate, evaluate = tiny_problem(calls=calls)
        runner.run_generations(RunDir(tmp_path / regime), seed=7, real_data=real, n_generations=2,
                               regime=Regime.parse(regime), train=train, generate=generate, evaluate=evaluate,
                               progress=False, zero_shared_with=shared)
    assert shared.finished_generations() == [0]
    assert len(calls) == 3 + 2  # the second run trained generations 1 and 2 only
    a, b = RunDir(tmp_path / "replace").load_generation(0), RunDir(tmp_path / "accumulate").load_generation(0)
    np.testing.assert_array_equal(a["samples"], b["samples"])


def test_training_sets_follow_the_regime():
    real = np.arange(10.0)
    synthetic = [np.full(10, 100.0), np.full(10, 200.0)]
    key = jax.random.key(0)
    np.testing.assert_array_equal(runner.training_set(Regime(), key, real, []), real)
    np.testing.assert_array_equal(runner.training_set(Regime(), key, real, synthetic), synthetic[-1])
    assert len(runner.training_set(Regime("accumulate"), key, real, synthetic)) == 30
    mixed = runner.training_set(Regime("mix", 0.3), key, real, synthetic)
    assert len(mixed) == 10 and (mixed < 10).sum() == 3 and (mixed == 200).sum() == 7


def test_results_store_is_keyed_by_config(tmp_path):
    store = ResultsStore(tmp_path)
    calls = []

    def compute(value):
        calls.append(value)
        return {"x": np.array([value])}

    a = store.cached("exp", "1", Regime("mix", 0.1), lambda: compute(1))
    b = store.cached("exp", "1", Regime("mix", 0.1), lambda: compute(2))
    c = store.cached("exp", "1", Regime("mix", 0.2), lambda: compute(3))
    d = store.cached("exp", "2", Regime("mix", 0.1), lambda: compute(4))
    assert calls == [1, 3, 4] and a["x"][0] == b["x"][0] == 1 and c["x"][0] == 3 and d["x"][0] == 4


def test_named_streams_are_distinct_and_never_a_chain_or_generation_key():
    seeds = range(3)
    named = {(s, n): runner.stream_key(s, n) for s in seeds for n in runner.STREAMS}
    indexed = [runner.generation_key(s, i) for s in seeds for i in range(64)]
    indexed += [jax.random.key(s) for s in seeds]  # the roots the indexed streams fold into
    words = [tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in [*named.values(), *indexed]]
    assert len(set(words)) == len(words)
    # the same name and seed give the same key (a stream is a function of both only)
    again = runner.stream_key(2, "lm/init")
    assert np.array_equal(jax.random.key_data(again), jax.random.key_data(named[2, "lm/init"]))
    assert runner.stream_rng(2, "lm/init").integers(2**31) == runner.stream_rng(2, "lm/init").integers(2**31)
    with pytest.raises(ValueError, match="unknown random stream 'vae/analyis'"):
        runner.stream_key(0, "vae/analyis")


def test_a_traced_m_model_compiles_once_per_regime_kind_and_gives_the_static_numbers():
    # The Gaussian drawn from its statistics takes M as a traced integer. Its runs must give the
    # numbers of the same model compiled for each M (to float64 rounding: constants that XLA
    # folds when M is static are computed at run time when it is traced), and compile once for
    # every M and α whose generations hold the same kinds of data. Each compilation takes about
    # 2.5 s (mostly jax.random.gamma), so the per-M programs are compiled for three cases only:
    # the branches that draw synthetic data, real and synthetic data, and pool them.
    from collapse import gaussian

    traced = gaussian.model()
    static = traced._replace(traced_m=False)
    real = gaussian.RealGaussian(0.0, 1.0)
    assert traced.traced_m and not gaussian.model(sampler="draws").traced_m
    runner._compiled_chains.cache_clear()
    compared = [(Regime(), 2), (Regime("mix", 0.3), 7), (Regime("accumulate"), 30)]
    # Sharing a program: replace and mix(α) with real and synthetic points at another M, and mix(0.05)
    # at M = 7, which holds no real point (replace); mix(1) holds no synthetic one, its own program.
    shared = [(Regime(), 30), (Regime("mix", 0.5), 30), (Regime("mix", 0.05), 7), (Regime("mix", 1.0), 7)]
    with jax.enable_x64(True):
        for regime, m in compared + shared:
            kwargs = dict(seed=3, n_chains=64, n_samples=m, n_generations=20, regime=regime)
            got = runner.simulate(traced, real, **kwargs)
            if (regime, m) in compared:
                for a, b in zip(got, runner.simulate(static, real, **kwargs)):
                    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
            assert np.all(np.isfinite(np.asarray(got.var))) and np.all(np.asarray(got.var) > 0)
    programs = [(runner.program_regime(r, m), m) for r, m in compared + shared]
    kinds = {(r.kind, runner.mix_case(r, m)) for r, m in programs}
    assert len(kinds) == 4
    assert runner._compiled_chains.cache_info().misses == len(kinds) + len(compared)


def test_runs_that_compute_the_same_chains_share_one_program():
    # mix(0.05) and mix(0.1) at M = 10 hold no real point and one: the first is replace, and mix(0.12)
    # holds one real point too. Each pair gives the same numbers from one compiled program.
    from collapse import discrete

    runner._compiled_chains.cache_clear()
    with jax.enable_x64(True):
        got = {text: runner.simulate(discrete.MODEL, discrete.RealCategorical("uniform(5)"), seed=1, n_chains=8,
                                     n_samples=10, n_generations=6, regime=Regime.parse(text))
               for text in ("replace", "mix(0.05)", "mix(0.1)", "mix(0.12)", "mix(0.2)")}
    assert runner._compiled_chains.cache_info().misses == 3
    np.testing.assert_array_equal(got["mix(0.05)"], got["replace"])
    np.testing.assert_array_equal(got["mix(0.12)"], got["mix(0.1)"])
    assert not np.array_equal(got["mix(0.2)"], got["mix(0.1)"]) and not np.array_equal(got["mix(0.1)"], got["replace"])
