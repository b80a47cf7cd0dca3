"""Two processes joined by ``jax.distributed`` on localhost give the numbers of one process.

Each process drives two forced CPU devices, so chain and batch axes are sharded over four
devices in two processes (collectives between them over Gloo). Covered: the runner's three
drivers, a neural model through the runner (the fairness loop), the VAE and language-model
trainers, and the results store across processes (process 0 writes, both load).
"""

import textwrap

import numpy as np
import pytest

from fixtures import run_on_devices, run_on_processes

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from collapse import distributed
    distributed.initialize()  # from the environment; a no-op in the one-process reference run
    import jax, numpy as np
    from collapse import discrete, fairness, gaussian, lm, mixtures, opt, vae, vae_experiment
    from collapse.config import Regime
    from collapse.store import ResultsStore
    store = ResultsStore(Path(sys.argv[1]).parent / f"store-{jax.process_count()}")  # shared by the processes of a run
    out = {}
    # the runner: a scan per chain (simulate), first passages (simulate_until), EM one chain after another
    run = gaussian.GaussianRun(n_samples=30, n_chains=10, n_generations=50, regime=Regime.parse("mix(0.2)"), sampler="draws")
    out["gaussian"] = gaussian.run(run)["var"]
    chains = discrete.CategoricalRun("zipf(50, 1)", n_samples=40, n_chains=10, n_generations=30, regime=Regime("accumulate"))
    out["discrete"] = discrete.run_cached(chains, store)["entropy"]
    out["discrete loaded"] = discrete.run_cached(chains, store)["entropy"]  # the second call loads, on both processes
    out["absorption"] = discrete.absorb(discrete.AbsorptionRun("uniform(4)", n_samples=12, n_chains=10))["T"]
    out["mixtures"] = mixtures.run_gmm(mixtures.GmmRun(n_points=60, n_chains=6, n_generations=5))["means"]
    # a neural model through the runner: the fairness loop's classifiers
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 600)
    images = (rng.integers(0, 40, (600, 8, 8)) + 20 * labels[:, None, None]).astype(np.uint8)
    small = fairness.FairnessRun(minority_classes=(7, 8, 9), minority_share=0.2, n_samples=200, hidden=8, steps=20,
                                 batch_size=16, n_generations=2, n_chains=4)
    out["fairness"] = fairness.simulate_predictions(small, fairness.make_population(images, labels, 10, small), images[:40])
    # the trainers, the batch axis sharded over every device of every process; generations in a run folder
    config = vae_experiment.VAERun("fixture", 64, vae.VAEConfig(image_shape=(8, 8), capacity=2, latent_dim=3, batch_size=16,
                                   epochs=2), 1, Regime("replace"), seed=2)
    first = vae_experiment.run(config, images[:64], store=store, progress=False)
    again = vae_experiment.run(config, images[:64], store=store, progress=False)  # loaded
    assert first == again, (first, again)
    out["vae losses"] = np.ravel([m["train_loss"] for m in first])
    generation = vae_experiment.run_folder(config, images[:64], store).load_generation(1)
    out["vae samples"] = generation["samples"]
    model = opt.preset("tiny", 32)
    blocks = rng.integers(3, 32, size=(64, 16)).astype(np.int32)
    params, history = lm.train(model, lm.TrainConfig(learning_rate=3e-3, batch_size=16, epochs=2), jax.random.key(0),
                               blocks, blocks[:20], init_params=opt.init(model, jax.random.key(1)), progress=False)
    out["lm ppl"] = history["valid_ppl"]
    out["lm params"] = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
    np.savez(sys.argv[1], devices=jax.device_count(), processes=jax.process_count(), **out)
    """
)

EXACT = {"gaussian", "discrete", "discrete loaded", "absorption", "mixtures", "fairness"}
ROUNDING = {"vae losses", "vae samples", "lm ppl", "lm params"}  # sums over a sharded batch: float rounding


@pytest.mark.forced_devices
def test_two_processes_give_the_numbers_of_one(tmp_path):
    one = run_on_devices(SCRIPT, 1, tmp_path / "one.npz")
    two = run_on_processes(SCRIPT, 2, 2, tmp_path / "two.npz")
    assert (int(one["processes"]), int(one["devices"])) == (1, 1)
    assert (int(two["processes"]), int(two["devices"])) == (2, 4)
    assert set(one.files) == set(two.files) == EXACT | ROUNDING | {"processes", "devices"}
    for name in EXACT:  # the runner's chains do not depend on where they run
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    for name in ROUNDING - {"vae samples"}:
        np.testing.assert_allclose(one[name], two[name], rtol=2e-4, atol=2e-5, err_msg=name)
    # decoded pixels are whole grey levels: a rounding may move one by a level
    assert np.abs(one["vae samples"].astype(int) - two["vae samples"].astype(int)).max() <= 1
    # process 0 wrote the store; the other process wrote nothing of its own
    assert (tmp_path / "store-2" / "vae").is_dir() and not list((tmp_path / "store-2").rglob("*.tmp"))
