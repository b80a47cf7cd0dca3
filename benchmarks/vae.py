"""VAE training throughput: the library against a PyTorch implementation, in one process.

Both train the paper's convolutional VAE (capacity 64, latent 20, Bernoulli loss summed
over the batch plus the KL term, Adam with an L2 penalty of 1e-5) on batches of 256
MNIST-sized images for the same number of steps:

* Reference: the authors' architecture in PyTorch (``Conv2d`` / ``ConvTranspose2d``,
  ``torch.optim.Adam(weight_decay=1e-5)``), one Python step per batch, as their code does.
* Library: what :func:`collapse.vae.train` runs: on CPU one jitted step per batch with
  donated state, on an accelerator one compiled ``lax.scan`` per run of batches.

Throughput is images per second over timed steps after warm-up steps (compile time and
PyTorch's first-call overheads excluded), best of ``--repeats``. PyTorch runs on CUDA
when it can (``--torch-device``), JAX on its default backend. PyTorch is a
benchmark-only dependency: ``pip install -e ".[torch]"`` (pinned to the CPU build).
Usage::

    python benchmarks/vae.py [--steps 10] [--repeats 3] [--capacity 64] [--batch 256]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from timing import best_time, record

from collapse import vae


def torch_vae(capacity: int, latent_dim: int, device: str):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, capacity, 4, 2, 1)
            self.conv2 = nn.Conv2d(capacity, 2 * capacity, 4, 2, 1)
            self.fc_mu = nn.Linear(2 * capacity * 7 * 7, latent_dim)
            self.fc_logvar = nn.Linear(2 * capacity * 7 * 7, latent_dim)

        def forward(self, x):
            x = F.relu(self.conv2(F.relu(self.conv1(x)))).flatten(1)
            return self.fc_mu(x), self.fc_logvar(x)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(latent_dim, 2 * capacity * 7 * 7)
            self.conv2 = nn.ConvTranspose2d(2 * capacity, capacity, 4, 2, 1)
            self.conv1 = nn.ConvTranspose2d(capacity, 1, 4, 2, 1)

        def forward(self, z):
            x = self.fc(z).view(z.shape[0], 2 * capacity, 7, 7)
            return torch.sigmoid(self.conv1(F.relu(self.conv2(x))))

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = Encoder(), Decoder()

        def forward(self, x):
            mu, logvar = self.encoder(x)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return self.decoder(z), mu, logvar

    model = VAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)

    def step(x):
        recon, mu, logvar = model(x)
        loss = F.binary_cross_entropy(recon.view(-1, 784), x.view(-1, 784), reduction="sum")
        loss = loss - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--torch-device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args()

    import torch

    torch_device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")

    rng = np.random.default_rng(0)
    batches_uint8 = rng.integers(0, 256, size=(args.steps, args.batch, 28, 28), dtype=np.uint8)

    config = vae.VAEConfig(capacity=args.capacity, batch_size=args.batch)
    state = vae.train_init(jax.random.key(0), config)
    scan = vae._scan_epochs()
    step = jax.jit(vae.train_step, static_argnums=(0,), donate_argnums=(1,))
    device_batches = jax.device_put(batches_uint8)

    def run_jax(n):
        nonlocal state
        if scan:  # n steps as one compiled loop over the first n batches
            state, loss = vae._train_epoch(config, state, jax.random.key(n), device_batches[:n])
        else:
            for i in range(n):
                state, loss = step(config, state, jax.random.key(i), device_batches[i % len(device_batches)])
        jax.block_until_ready(loss)

    torch.manual_seed(0)
    torch_step = torch_vae(args.capacity, 20, torch_device)
    torch_batches = [torch.from_numpy(b.astype(np.float32) / 255.0).unsqueeze(1).to(torch_device) for b in batches_uint8]

    def run_torch(n):
        for i in range(n):
            torch_step(torch_batches[i % len(torch_batches)])
        if torch_device.startswith("cuda"):
            torch.cuda.synchronize()

    run_jax(args.warmup)
    run_jax(args.steps)  # the scanned loop compiles for its length
    run_torch(args.warmup)
    images = args.steps * args.batch
    t_jax = best_time(lambda: run_jax(args.steps), args.repeats)
    t_torch = best_time(lambda: run_torch(args.steps), args.repeats)
    jax_path = "scanned steps" if scan else "one call per step"
    print(f"devices: JAX {jax.devices()[0].device_kind} ({jax_path}), PyTorch {torch.__version__} on {torch_device} ({torch.get_num_threads()} threads)")
    print(f"VAE training, capacity {args.capacity}, batch {args.batch}, {args.steps} steps:")
    print(f"  PyTorch reference: {images / t_torch:10.0f} images/s")
    print(f"  collapse (JAX):    {images / t_jax:10.0f} images/s")
    print(f"  ratio library/reference: {t_torch / t_jax:.2f}x")
    record("vae training", f"capacity {args.capacity}, batch {args.batch}", images / t_jax, images / t_torch, "images/s",
           f"PyTorch on {torch_device}")


if __name__ == "__main__":
    main()
