"""A small image classifier, trained once on real labels, that labels generated images.

A two-hidden-layer MLP (784 → 512 → 512 → classes for MNIST) trained with Adam; it
reaches about 98 % test accuracy on MNIST in a few epochs on a CPU. It is a measuring
instrument, not a subject: every generation's samples are labelled by the same one.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .config import check_int, check_positive
from .sharding import map_batches


class Layer(NamedTuple):
    w: jax.Array
    b: jax.Array


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    hidden: int = 512  # units in each of the two hidden layers
    epochs: int = 5  # passes over the real training set
    batch_size: int = 128  # images per step
    learning_rate: float = 1e-3  # Adam step size

    def __post_init__(self) -> None:
        check_int("hidden", self.hidden, minimum=1)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("learning_rate", self.learning_rate)


def init(key, n_in: int, hidden: int, n_classes: int, depth: int = 2) -> list[Layer]:
    """He-initialised weights of an MLP with ``depth`` hidden layers of ``hidden`` units."""
    sizes = (n_in, *([hidden] * depth), n_classes)
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        Layer(jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), jnp.zeros(b))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]


def logits(params: list[Layer], images_uint8) -> jax.Array:
    h = jnp.asarray(images_uint8, jnp.float32).reshape(images_uint8.shape[0], -1) / 255.0
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer.w + layer.b)
    return h @ params[-1].w + params[-1].b


def update(learning_rate: float, params, opt_state, x, y):
    """One Adam step on the mean cross-entropy of a batch: ``(params, opt_state)``."""

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()

    grads = jax.grad(loss)(params)
    updates, opt_state = optax.adam(learning_rate).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


@partial(jax.jit, static_argnums=(0,), donate_argnums=(1, 2))
def _step(config: ClassifierConfig, params, opt_state, x, y):
    return update(config.learning_rate, params, opt_state, x, y)


def train(config: ClassifierConfig, key, images_uint8: np.ndarray, labels: np.ndarray, n_classes: int) -> list[Layer]:
    key_init, key_epochs = jax.random.split(key)
    params = init(key_init, int(np.prod(images_uint8.shape[1:])), config.hidden, n_classes)
    opt_state = optax.adam(config.learning_rate).init(params)
    x, y = jnp.asarray(images_uint8), jnp.asarray(labels)
    steps = max(1, len(x) // config.batch_size)
    for epoch in range(config.epochs):
        order = jax.random.permutation(jax.random.fold_in(key_epochs, epoch), len(x))
        for s in range(steps):
            rows = order[s * config.batch_size : (s + 1) * config.batch_size]
            params, opt_state = _step(config, params, opt_state, x[rows], y[rows])
    return params


_jit_logits = jax.jit(logits)


def confidence(params: list[Layer], images_uint8: np.ndarray, batch: int = 4096) -> np.ndarray:
    """The probability the classifier gives its most likely class, for every image."""
    return map_batches(lambda b, x: jnp.max(jax.nn.softmax(_jit_logits(params, x), -1), -1), images_uint8, batch)


def predict(params: list[Layer], images_uint8: np.ndarray, batch: int = 4096) -> np.ndarray:
    """The most likely class of every image."""
    return map_batches(lambda b, x: jnp.argmax(_jit_logits(params, x), -1), images_uint8, batch)
