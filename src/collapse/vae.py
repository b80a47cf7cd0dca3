"""The convolutional VAE of the paper's MNIST experiment, and its generations.

Architecture (the authors' PyTorch notebook, ``c`` = capacity, ``L`` = latent size):
encoder conv(1→c, 4×4, stride 2) → ReLU → conv(c→2c, 4×4, stride 2) → ReLU → two
linear heads for μ and log σ²; decoder linear(L → 2c·H/4·W/4) → transposed conv(2c→c)
→ ReLU → transposed conv(c→1) → Bernoulli logits. Loss: Bernoulli cross-entropy plus
β·KL(q(z|x) ‖ N(0, I)), summed over the batch as the reference does, with Adam and an
L2 penalty added to the gradient (PyTorch's ``Adam(weight_decay=…)``).

Images are ``uint8`` arrays ``N×H×W`` everywhere outside this module's jitted code
(real data and every generation's samples alike), scaled to [0, 1] on the device.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from .config import check_int, check_positive
from .sharding import leading_axis_sharding, map_batches

# NHWC activations, HWIO kernels: XLA's preferred layout on CPU and GPU alike.
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


class Dense(NamedTuple):
    w: jax.Array  # in × out
    b: jax.Array  # out


class Conv(NamedTuple):
    w: jax.Array  # 4 × 4 × in × out
    b: jax.Array  # out


class VAEParams(NamedTuple):
    enc1: Conv
    enc2: Conv
    mu: Dense
    logvar: Dense
    dec_in: Dense
    dec1: Conv  # transposed
    dec2: Conv  # transposed


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture and optimiser of one generation; defaults are the paper's protocol."""

    image_shape: tuple = (28, 28)  # H, W; both must be divisible by 4 (two stride-2 convs)
    capacity: int = 64  # channels of the first conv; the second has twice as many
    latent_dim: int = 20  # dimension of z
    beta: float = 1.0  # weight of the KL term
    learning_rate: float = 1e-3  # Adam step size
    weight_decay: float = 1e-5  # L2 penalty added to the gradient, as PyTorch's Adam does
    batch_size: int = 256  # images per step
    epochs: int = 30  # passes over a real-sized training set per generation

    def __post_init__(self) -> None:
        h, w = self.image_shape
        if h % 4 or w % 4:
            raise ValueError(f"image_shape={self.image_shape!r}: height and width must be divisible by 4")
        check_int("capacity", self.capacity, minimum=1)
        check_int("latent_dim", self.latent_dim, minimum=1)
        check_positive("beta", self.beta)
        check_positive("learning_rate", self.learning_rate)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("epochs", self.epochs, minimum=1)

    @property
    def bottleneck(self) -> tuple[int, int, int]:
        h, w = self.image_shape
        return h // 4, w // 4, 2 * self.capacity


# --------------------------------------------------------------------------- the network


def _uniform(key, shape, fan_in):
    # PyTorch's default initialisation for Linear and Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _dense(key, n_in, n_out) -> Dense:
    kw, kb = jax.random.split(key)
    return Dense(_uniform(kw, (n_in, n_out), n_in), _uniform(kb, (n_out,), n_in))


def _conv(key, c_in, c_out, fan_in) -> Conv:
    kw, kb = jax.random.split(key)
    return Conv(_uniform(kw, (4, 4, c_in, c_out), fan_in), _uniform(kb, (c_out,), fan_in))


def init(key: jax.Array, config: VAEConfig) -> VAEParams:
    c, h4w4 = config.capacity, config.bottleneck[0] * config.bottleneck[1]
    keys = jax.random.split(key, 7)
    flat = 2 * c * h4w4
    return VAEParams(
        enc1=_conv(keys[0], 1, c, 16 * 1),
        enc2=_conv(keys[1], c, 2 * c, 16 * c),
        mu=_dense(keys[2], flat, config.latent_dim),
        logvar=_dense(keys[3], flat, config.latent_dim),
        dec_in=_dense(keys[4], config.latent_dim, flat),
        # PyTorch's ConvTranspose2d computes fan_in from weight.shape[1] * 16 = out channels * 16.
        dec1=_conv(keys[5], 2 * c, c, 16 * c),
        dec2=_conv(keys[6], c, 1, 16 * 1),
    )


def _down(x, w):
    """conv(4×4, stride 2, padding 1), out[i] = Σ_t in[2i − 1 + t] · w[t]: halves H and W."""
    return jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DIMENSIONS)


# A stride-2 transposed conv with a 4×4 kernel and padding 1 (PyTorch's ConvTranspose2d(4, 2, 1))
# writes input pixel j, kernel tap t to output 2j - 1 + t. Output 2i + a (phase a) thus reads
# input rows i-1, i, i+1 (offset d = 0, 1, 2) through tap _TAPS[a][d], or not at all. One 3×3
# conv with 4 output phases per channel, then depth-to-space, computes it without XLA's
# input-dilated convolution, whose gradient is an order of magnitude slower on CPU.
_TAPS = ((3, 1, None), (None, 2, 0))
_PHASE_SELECT = np.zeros((3, 2, 4), np.float32)  # [d, a, t] = 1 where phase a reads offset d via tap t
for _a, _row in enumerate(_TAPS):
    for _d, _t in enumerate(_row):
        if _t is not None:
            _PHASE_SELECT[_d, _a, _t] = 1.0


def _up_by_phases(x, w):
    """ConvTranspose2d(4, 2, 1) without its bias, out[2j − 1 + t] += in[j] · w[t]: doubles H and W."""
    n, h, wd, _ = x.shape
    c_out = w.shape[-1]
    kernel = jnp.einsum("yat,xbs,tsio->yxiabo", _PHASE_SELECT, _PHASE_SELECT, w).reshape(3, 3, w.shape[2], 4 * c_out)
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DIMENSIONS)
    return y.reshape(n, h, wd, 2, 2, c_out).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * wd, c_out)


def _up_by_matmul(x, w):
    """:func:`_up_by_phases` as one matrix product and a sum: every input pixel times all 16
    taps, then each output phase adds the four taps that land on it (shifted by padding)."""
    n, h, wd, c_in = x.shape
    c_out = w.shape[-1]
    taps = (x.reshape(-1, c_in) @ w.transpose(2, 0, 1, 3).reshape(c_in, 16 * c_out)).reshape(n, h, wd, 4, 4, c_out)
    # Tap t of input j lands on padded output 2j + t, i.e. phase t % 2 of block j + t // 2.
    def landed(ty, tx):
        return jnp.pad(taps[:, :, :, ty, tx], ((0, 0), (ty // 2, 1 - ty // 2), (tx // 2, 1 - tx // 2), (0, 0)))
    phases = [[sum(landed(ty, tx) for ty in (a, a + 2) for tx in (b, b + 2)) for b in (0, 1)] for a in (0, 1)]
    padded = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2).reshape(n, 2 * h + 2, 2 * wd + 2, c_out)
    return padded[:, 1:-1, 1:-1]


def _down_weight_grad(x, dy, w_shape):
    return jax.vjp(lambda w: _down(x, w), jnp.zeros(w_shape, x.dtype))[1](dy)[0]


def _with_gradient(forward, backward):
    """``forward(x, w)`` whose vector-Jacobian product is ``backward((x, w), dy) -> (dx, dw)``."""
    function = jax.custom_vjp(forward)
    function.defvjp(lambda x, w: (forward(x, w), (x, w)), backward)
    return function


# On CPU the two convolutions are computed as each other's adjoint. The gradient of ``_down``
# with respect to its input is ``_up`` with in and out channels swapped, and the gradient of
# ``_up`` with respect to its input is ``_down``. So each layer's backward pass runs the other
# layer's fastest forward: XLA's strided conv for ``_down``, a matrix product for ``_up``. Both
# weight gradients are XLA's for the strided conv. For one Adam step at capacity 64, batch 256,
# on one core of a 2-core EPYC (XLA 0.10), this took 378-429 ms against 584-597 ms with XLA's
# gradients of ``_down`` and ``_up_by_phases``, and at the `cpu` profile's capacity 32, batch
# 128, 48.8 ms against 61.1. GPUs keep XLA's own gradients, whose speed was measured there.
def _down_adjoint_bwd(residuals, dy):
    x, w = residuals
    return _up_by_matmul(dy, w.swapaxes(2, 3)), _down_weight_grad(x, dy, w.shape)


def _up_adjoint_bwd(residuals, dy):
    x, w = residuals
    # dw[t, i, o] = Σ_j x[j, i] dy[2j − 1 + t, o]: the strided conv's weight gradient, input dy, output x.
    dw_OxI = _down_weight_grad(dy, x, (4, 4, w.shape[3], w.shape[2]))
    return _down(dy, w.swapaxes(2, 3)), dw_OxI.swapaxes(2, 3)


_down_adjoint = _with_gradient(_down, _down_adjoint_bwd)
_up_adjoint = _with_gradient(_up_by_matmul, _up_adjoint_bwd)


def _adjoint_convs() -> bool:
    return jax.default_backend() == "cpu"


def _conv_down(layer: Conv, x, adjoint: bool | None = None):
    """conv(4×4, stride 2, padding 1) with bias: halves H and W."""
    adjoint = _adjoint_convs() if adjoint is None else adjoint
    return (_down_adjoint if adjoint else _down)(x, layer.w) + layer.b


def _conv_up(layer: Conv, x, adjoint: bool | None = None):
    """PyTorch's ConvTranspose2d(kernel 4, stride 2, padding 1) with bias: doubles H and W."""
    adjoint = _adjoint_convs() if adjoint is None else adjoint
    return (_up_adjoint if adjoint else _up_by_phases)(x, layer.w) + layer.b


def encode(params: VAEParams, x_NxHxW) -> tuple[jax.Array, jax.Array]:
    """Images in [0, 1] → (μ, log σ²) of q(z | x), each N × L."""
    h = x_NxHxW[..., None]
    h = jax.nn.relu(_conv_down(params.enc1, h))
    h = jax.nn.relu(_conv_down(params.enc2, h))
    h = h.reshape(h.shape[0], -1)
    return h @ params.mu.w + params.mu.b, h @ params.logvar.w + params.logvar.b


def decode_logits(params: VAEParams, z_NxL, image_shape) -> jax.Array:
    """Latents → Bernoulli logits of every pixel, N × H × W."""
    h4, w4 = image_shape[0] // 4, image_shape[1] // 4
    h = z_NxL @ params.dec_in.w + params.dec_in.b
    h = h.reshape(z_NxL.shape[0], h4, w4, -1)
    h = jax.nn.relu(_conv_up(params.dec1, h))
    return _conv_up(params.dec2, h)[..., 0]


def decode(params: VAEParams, z_NxL, image_shape) -> jax.Array:
    """Latents → pixel means in [0, 1] (the images a generation produces)."""
    return jax.nn.sigmoid(decode_logits(params, z_NxL, image_shape))


def _bernoulli_nll(logits, x):
    # -[x log σ(l) + (1-x) log(1-σ(l))] = softplus(l) - x·l, stable for any logit.
    return jax.nn.softplus(logits) - x * logits


def negative_elbo(params: VAEParams, key, x_NxHxW, beta: float = 1.0) -> jax.Array:
    """Per-image −ELBO (nats) with one reparameterised draw: BCE(x, decode(z)) + β·KL(q ‖ N(0, I)).

    Equation ``eq-vae-elbo`` of ``chapters/vae.md``.
    """
    mu, logvar = encode(params, x_NxHxW)
    eps = jax.random.normal(key, mu.shape)
    z = mu + jnp.exp(0.5 * logvar) * eps
    logits = decode_logits(params, z, x_NxHxW.shape[1:])
    reconstruction = _bernoulli_nll(logits, x_NxHxW).sum(axis=(1, 2))
    kl = -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), axis=1)
    return reconstruction + beta * kl


def to_unit(images_uint8) -> jax.Array:
    return jnp.asarray(images_uint8, jnp.float32) / 255.0


# --------------------------------------------------------------------------- training


class TrainState(NamedTuple):
    params: VAEParams
    opt_state: optax.OptState


def optimizer(config: VAEConfig) -> optax.GradientTransformation:
    # Adam(weight_decay=λ) in PyTorch adds λ·θ to the gradient before the Adam moments.
    return optax.chain(optax.add_decayed_weights(config.weight_decay), optax.adam(config.learning_rate))


def train_init(key, config: VAEConfig) -> TrainState:
    params = init(key, config)
    return TrainState(params, optimizer(config).init(params))


def _batch_sharding():
    return leading_axis_sharding("batch") if jax.device_count() > 1 else None


def train_step(config: VAEConfig, state: TrainState, key, batch) -> tuple[TrainState, jax.Array]:
    """One Adam step on a batch (``uint8`` images, or grey levels in [0, 1]); returns the new
    state and the batch's mean −ELBO per image."""
    x = to_unit(batch) if batch.dtype == jnp.uint8 else batch
    sharding = _batch_sharding()
    if sharding is not None and x.shape[0] % jax.device_count() == 0:
        x = jax.lax.with_sharding_constraint(x, sharding)

    def loss(params):
        # The reference sums over the batch; with its L2 penalty that sets their relative weight.
        return negative_elbo(params, key, x, config.beta).sum()

    value, grads = jax.value_and_grad(loss)(state.params)
    updates, opt_state = optimizer(config).update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), value / x.shape[0]


def teacher_batch(config: VAEConfig, teacher: VAEParams, key) -> jax.Array:
    """A batch drawn from the previous generation as the authors' notebook draws it (cell 4):
    fresh z ~ N(0, I) decoded to pixel means, not quantised."""
    return decode(teacher, jax.random.normal(key, (config.batch_size, config.latent_dim)), config.image_shape)


def teacher_step(config: VAEConfig, state: TrainState, key, teacher: VAEParams) -> tuple[TrainState, jax.Array]:
    """:func:`train_step` on a fresh :func:`teacher_batch`."""
    key_batch, key_step = jax.random.split(key)
    return train_step(config, state, key_step, teacher_batch(config, teacher, key_batch))


# Compiled once per config: the batch, gathered outside, has the same shape whatever the
# size of the training set (which grows every generation under ``accumulate``).
_jit_train_step = jax.jit(train_step, static_argnums=(0,), donate_argnums=(1,))
_jit_teacher_step = jax.jit(teacher_step, static_argnums=(0,), donate_argnums=(1,))


@partial(jax.jit, static_argnums=(1, 2))
def _epoch_rows(key, n_images: int, shape: tuple[int, int]):
    return jax.random.permutation(key, n_images)[: shape[0] * shape[1]].reshape(shape)


def steps_per_epoch(config: VAEConfig, n_real: int) -> int:
    return max(1, n_real // config.batch_size)


@partial(jax.jit, static_argnums=(0,), donate_argnums=(1,))
def _train_epoch(config: VAEConfig, state: TrainState, key_steps, batches_SxBxHxW):
    """One epoch as a ``lax.scan`` over its batches: the step keys are the loop's."""

    def step(state, xs):
        i, batch = xs
        return train_step(config, state, jax.random.fold_in(key_steps, i), batch)

    return jax.lax.scan(step, state, (jnp.arange(len(batches_SxBxHxW)), batches_SxBxHxW))


@partial(jax.jit, static_argnums=(0, 3), donate_argnums=(1,))
def _teacher_epoch(config: VAEConfig, state: TrainState, key_steps, n_steps: int, teacher: VAEParams):
    """One epoch of :func:`teacher_step` as a ``lax.scan``: the step keys are the loop's."""

    def step(state, i):
        return teacher_step(config, state, jax.random.fold_in(key_steps, i), teacher)

    return jax.lax.scan(step, state, jnp.arange(n_steps))


def _scan_epochs() -> bool:
    # XLA:CPU runs convolutions inside a loop body about 25x slower than at top level
    # (measured, JAX 0.10), so on CPU each step is its own call; on accelerators one call
    # per epoch removes the per-step dispatch, which otherwise dominates these small steps.
    return jax.default_backend() != "cpu"


def train(
    config: VAEConfig, key, data_uint8: np.ndarray | None, *, n_real: int | None = None, progress: bool = False,
    scan: bool | None = None, teacher: VAEParams | None = None,
) -> tuple[VAEParams, np.ndarray]:
    """A fresh VAE trained on ``data_uint8``, or on batches drawn from ``teacher``; returns its
    parameters and the loss of every epoch.

    Every generation takes the same number of steps, ``epochs × (n_real // batch_size)``
    with ``n_real`` the size of the real training set: an accumulating regime sees more
    distinct images, not more compute. With ``teacher`` (the previous generation) every step
    draws its own batch with :func:`teacher_batch`, as the authors' notebook does, and
    ``data_uint8`` is not read. ``scan`` (default: on accelerators) runs each epoch as one
    compiled loop; the steps, keys and batches are the same either way.
    """
    if teacher is None and data_uint8 is None:
        raise ValueError("train needs data_uint8 or a teacher to draw its batches from")
    if teacher is not None and n_real is None:
        raise ValueError("training from a teacher needs n_real, the size of an epoch in images")
    n_real = len(data_uint8) if n_real is None else n_real
    steps = steps_per_epoch(config, n_real)
    if teacher is None and len(data_uint8) < steps * config.batch_size:
        raise ValueError(f"{len(data_uint8)} training images cannot fill {steps} batches of {config.batch_size}")
    scan = _scan_epochs() if scan is None else scan
    key_init, key_epochs = jax.random.split(key)
    state = train_init(key_init, config)
    data = None if teacher is not None else jnp.asarray(data_uint8)
    losses = []
    for epoch in tqdm(range(config.epochs), desc="epochs", leave=False, disable=not progress):
        key_rows, key_steps = jax.random.split(jax.random.fold_in(key_epochs, epoch))
        if teacher is None:
            rows = _epoch_rows(key_rows, len(data_uint8), (steps, config.batch_size))
        if scan:
            # The epoch's batches are gathered first: the scan's shapes then do not depend on
            # the size of the training set, which grows under ``accumulate``.
            state, epoch_losses = (_train_epoch(config, state, key_steps, data[rows]) if teacher is None
                                   else _teacher_epoch(config, state, key_steps, steps, teacher))
        else:
            epoch_losses = []
            for step in range(steps):
                key_step = jax.random.fold_in(key_steps, step)
                state, loss = (_jit_train_step(config, state, key_step, data[rows[step]]) if teacher is None
                               else _jit_teacher_step(config, state, key_step, teacher))
                epoch_losses.append(loss)
            epoch_losses = jnp.stack(epoch_losses)
        losses.append(float(jnp.mean(epoch_losses)))
    return state.params, np.asarray(losses)


# --------------------------------------------------------------------------- sampling and scoring


@partial(jax.jit, static_argnums=(2,))
def _decode_uint8(params, z, image_shape):
    return jnp.round(decode(params, z, image_shape) * 255.0).astype(jnp.uint8)


def decode_images(params: VAEParams, z_NxL, image_shape, batch: int = 2048) -> np.ndarray:
    """Decoded pixel means as ``uint8`` images, in batches."""
    return map_batches(lambda b, z: _decode_uint8(params, z, tuple(image_shape)), z_NxL, batch)


def generate(params: VAEParams, key, n: int, config: VAEConfig) -> np.ndarray:
    """``n`` images decoded from z ~ N(0, I): the data the next generation is trained on."""
    z = jax.random.normal(key, (n, config.latent_dim))
    return decode_images(params, z, config.image_shape)


@jax.jit
def _encode_mean(params, x_uint8):
    return encode(params, to_unit(x_uint8))[0]


def encode_means(params: VAEParams, images_uint8: np.ndarray, batch: int = 2048) -> np.ndarray:
    """μ(x) of the encoder for every image, N × L."""
    return map_batches(lambda b, x: _encode_mean(params, x), images_uint8, batch)


@partial(jax.jit, static_argnums=(3,))
def _negative_elbo_avg(params, key, x_uint8, n_draws):
    x = to_unit(x_uint8)
    draws = jax.vmap(lambda k: negative_elbo(params, k, x))(jax.random.split(key, n_draws))
    return draws.mean(0)


def negative_elbos(params: VAEParams, key, images_uint8: np.ndarray, n_draws: int = 8, batch: int = 1024) -> np.ndarray:
    """Per-image −ELBO in nats, averaged over ``n_draws`` reparameterised draws (same keys for every model)."""
    return map_batches(lambda b, x: _negative_elbo_avg(params, jax.random.fold_in(key, b), x, n_draws), images_uint8, batch)
