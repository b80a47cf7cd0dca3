"""The chain axis sharded over 4 forced host devices gives the numbers of 1 device."""

import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from collapse import gaussian
    from collapse.config import Regime
    out = {}
    for regime in ("replace", "accumulate", "mix(0.2)"):
        run = gaussian.GaussianRun(n_samples=30, n_chains=10, n_generations=50, regime=Regime.parse(regime), sampler="draws")
        out[regime] = gaussian.run(run)["var"]
    np.savez(sys.argv[1], devices=jax.device_count(), **out)
    """
)


def run_with_devices(n_devices, path):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", SCRIPT, str(path)], check=True, env=env)
    return np.load(path)


def test_four_devices_give_the_same_numbers_as_one(tmp_path):
    one = run_with_devices(1, tmp_path / "one.npz")
    four = run_with_devices(4, tmp_path / "four.npz")
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    for regime in ("replace", "accumulate", "mix(0.2)"):  # 10 chains: padded to 12 on 4 devices
        np.testing.assert_array_equal(one[regime], four[regime])
