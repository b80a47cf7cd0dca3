"""The chain axis sharded over 4 forced host devices gives the numbers of 1 device."""

import textwrap

import numpy as np
import pytest

from fixtures import run_on_devices

SCRIPT = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from collapse import discrete, gaussian, linear_regression
    from collapse.config import Regime
    out = {}
    for regime in ("replace", "accumulate", "mix(0.2)"):
        run = gaussian.GaussianRun(n_samples=30, n_chains=10, n_generations=50, regime=Regime.parse(regime), sampler="draws")
        out[regime] = gaussian.run(run)["var"]
        chains = discrete.CategoricalRun("zipf(50, 1)", n_samples=40, n_chains=10, n_generations=30, regime=Regime.parse(regime))
        out["discrete " + regime] = discrete.run(chains)["entropy"]
    regression = linear_regression.RegressionConfig(n_samples=12, dim=3, n_generations=8, n_chains=10)
    out["regression mix"] = linear_regression.simulate_errors(regression, Regime.parse("mix(0.5)"))
    out["absorption"] = discrete.absorb(discrete.AbsorptionRun("uniform(4)", n_samples=12, n_chains=10))["T"]
    from collapse import mixtures  # EM: chains one after another on each device (lockstep=False)
    out["mixtures"] = mixtures.run_gmm(mixtures.GmmRun(n_points=60, n_chains=6, n_generations=5))["means"]
    np.savez(sys.argv[1], devices=jax.device_count(), **out)
    """
)


@pytest.mark.forced_devices
def test_four_devices_give_the_same_numbers_as_one(tmp_path):
    one = run_on_devices(SCRIPT, 1, tmp_path / "one.npz")
    four = run_on_devices(SCRIPT, 4, tmp_path / "four.npz")
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    for name in set(one.files) - {"devices", "regression mix"}:  # 10 chains: padded to 12 on 4 devices
        np.testing.assert_array_equal(one[name], four[name], err_msg=name)
    # Batched linear solves round differently for 10 chains on one device and 3 per device.
    np.testing.assert_allclose(one["regression mix"], four["regression mix"], rtol=1e-5)


VAE_SCRIPT = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from collapse import vae
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(64, 8, 8), dtype=np.uint8)
    config = vae.VAEConfig(image_shape=(8, 8), capacity=2, latent_dim=3, batch_size=16, epochs=2)
    params, losses = vae.train(config, jax.random.key(0), data)
    leaves = {str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
    np.savez(sys.argv[1], devices=jax.device_count(), losses=losses, **leaves)
    """
)


@pytest.mark.forced_devices
def test_vae_batch_axis_sharded_over_four_devices_trains_the_same_model(tmp_path):
    results = {n: run_on_devices(VAE_SCRIPT, n, tmp_path / f"{n}.npz") for n in (1, 4)}
    assert int(results[4]["devices"]) == 4
    # Sums over a sharded batch may add in another order: equal up to float rounding, not bit for bit.
    for name in set(results[1].files) - {"devices"}:
        np.testing.assert_allclose(results[1][name], results[4][name], rtol=1e-4, atol=1e-6, err_msg=name)
