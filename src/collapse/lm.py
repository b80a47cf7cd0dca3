"""Training and scoring the OPT decoder on blocks of tokens.

``step(state, batch) -> (state, metrics)`` is one AdamW step on the mean next-token
cross-entropy of a batch of blocks. Batches are sharded along their leading axis over
every device (data parallel; the parameters are replicated), so the same code runs on
one CPU, one GPU, or several devices. :func:`train` runs epochs over shuffled blocks and
keeps the parameters of the epoch with the best validation perplexity, as the paper does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from .config import check_int, check_positive, check_unit_interval
from .opt import OPTConfig, OPTParams, head, hidden_states
from .sharding import map_batches, shard_leading_axis


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimiser and schedule of one generation."""

    learning_rate: float = 5e-5  # peak AdamW step (Hugging Face Trainer's default, for fine-tuning OPT)
    warmup: float = 0.0  # fraction of the steps with a linear warm-up; then linear decay to 0
    weight_decay: float = 0.0  # AdamW's decoupled decay (Trainer's default)
    clip_norm: float = 1.0  # global gradient-norm clip (Trainer's default)
    batch_size: int = 128  # blocks per step; a multiple of the device count
    epochs: int = 5  # passes over the training blocks (the paper: 5, or 10 with real data kept)

    def __post_init__(self) -> None:
        check_positive("learning_rate", self.learning_rate)
        check_unit_interval("warmup", self.warmup)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        check_positive("clip_norm", self.clip_norm)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("epochs", self.epochs, minimum=1)


class TrainState(NamedTuple):
    params: OPTParams
    opt_state: optax.OptState
    step: jax.Array


class RunSchedule(NamedTuple):
    """What the compiled step reads from its state, not from constants: the steps taken, and the
    run's peak rate, warm-up, length and weight decay.

    So runs of any length, rate and decay share one compiled step. When each run length built
    its own schedule, the LM page at ``ci`` compiled the step five times (pretraining, and
    fine-tuning runs of four lengths), 23.5 s on 2 cores; with the schedule here and the decay
    a constant, twice (pretraining has no decay, fine-tuning 0.01), 9.0 s; now once. The rate is
    the same to the bit (every step of 96 runs checked against optax's ``join_schedules`` of two
    ``linear_schedule``-s, and three whole updates against optax's ``adamw``;
    ``tests/test_lm.py``), but the compiled step is another program, and trained weights differ
    from the former step's by float rounding: the page's last test perplexity at ``ci`` moved
    from 428.75197 to 428.75188 when the schedule became state."""

    count: jax.Array  # int32 steps taken
    peak: jax.Array  # float32 rate at the end of the warm-up
    warmup: jax.Array  # int32 steps of the linear warm-up
    total: jax.Array  # int32 steps of the whole run
    weight_decay: jax.Array  # float32 AdamW's decoupled decay


def learning_rate(peak, count, warmup, total) -> jax.Array:
    """The rate of step ``count``: a linear rise from 0 to ``peak`` over ``warmup`` steps, then a
    linear fall to 0 at step ``total`` (optax's ``linear_schedule`` arithmetic, term for term)."""
    rise, fall = jnp.maximum(warmup, 1), jnp.maximum(total - warmup, 1)
    up = (0.0 - peak) * (1 - jnp.clip(count, 0, rise) / rise) + peak
    down = (peak - 0.0) * (1 - jnp.clip(count - warmup, 0, fall) / fall) + 0.0
    return jnp.where(count < warmup, up, down)


def decay_and_scale_by_run_schedule() -> optax.GradientTransformation:
    """AdamW's last two stages with the run's settings read from :class:`RunSchedule`: the
    decayed weights added (optax's ``add_decayed_weights``), then the updates times minus the
    rate of :func:`learning_rate` (``scale_by_learning_rate``), term for term. :func:`init_state`
    sets the run's values."""

    def init(params) -> RunSchedule:
        del params
        zero, zero_f = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
        return RunSchedule(zero, zero_f, zero, jnp.ones((), jnp.int32), zero_f)

    def update(updates, state: RunSchedule, params=None):
        if params is None:
            raise ValueError("the weight decay needs the parameters: call update(updates, state, params)")
        updates = jax.tree.map(lambda g, p: g + state.weight_decay * p, updates, params)
        step_size = -1 * learning_rate(state.peak, state.count, state.warmup, state.total)
        updates = jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
        return updates, state._replace(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Clipping, then AdamW (optax's ``adamw``, its rate and decay read from :class:`RunSchedule`)."""
    return _optimizer(config.clip_norm)


@functools.lru_cache(maxsize=32)  # one per clip norm: the jitted step is reused by every run that shares it
def _optimizer(clip_norm: float) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_adam(),
        decay_and_scale_by_run_schedule(),
    )


def token_nll(params: OPTParams, config: OPTConfig, blocks_BxT, key=None) -> jax.Array:
    """``B × (T-1)`` negative log-likelihoods of each block's tokens after the first.

    The output head runs on the T - 1 positions that are scored, not on all T with the last
    sliced off: the head is over half the FLOPs, and the slice copied its B × T × V logits. At
    the cpu preset that trains 1.14x faster (15.2 k -> 17.3 k tokens/s, batch 64) and scores
    1.11x faster (64 k -> 71 k tokens/s, 16 blocks a batch; 2-core EPYC). The scores are the same
    to the bit; the head's gradient sums one row fewer, so it differs by float rounding (at most
    4.8e-7 of its largest entry)."""
    logits = head(params, hidden_states(params, config, blocks_BxT, key)[:, :-1]).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, blocks_BxT[:, 1:])


def eval_batch_size(config: OPTConfig, block_size: int) -> int:
    """Blocks per scoring batch. On CPU, as many as keep the batch's float32 logits (B × T × V)
    within 16 MiB, about the last-level cache: at the cpu preset (V = 4,096, T = 64) 16 blocks
    score 52 k tokens/s against 35 k with 256 (2-core EPYC, best of 3). Elsewhere 256. Always a
    multiple of the device count (the batch is sharded)."""
    devices = jax.device_count()
    if jax.default_backend() != "cpu":
        return 256 * devices
    fit = 2**22 // (block_size * config.vocab_size)
    return max(1, fit // devices) * devices


@functools.partial(jax.jit, static_argnames=("config", "tx"), donate_argnames=("state",))
def step(state: TrainState, blocks_BxT, key, *, config: OPTConfig, tx) -> tuple[TrainState, dict]:
    """One AdamW step on the mean token cross-entropy of the batch.

    On CPU the gradient is summed over micro-batches of :func:`eval_batch_size` blocks (a
    ``lax.scan``), so that each one's logits stay in cache: at the cpu preset, batch 64 trains
    at 12.2 k tokens/s in four micro-batches against 10.0 k in one (2-core EPYC, best of 3).
    Micro-batch ``c`` holds rows ``c, c + C, c + 2C, …`` (``C`` micro-batches), so each spans
    every device when the batch is sharded; its dropout key is ``fold_in(key, c)``.
    """
    b, t = blocks_BxT.shape
    micro = eval_batch_size(config, t)
    chunks = b // micro if b % micro == 0 and b > micro else 1
    parts_CxMxT = blocks_BxT.reshape(b // chunks, chunks, t).swapaxes(0, 1)

    def accumulate(total, inputs):
        c, part = inputs
        loss, grads = jax.value_and_grad(lambda p: token_nll(p, config, part, jax.random.fold_in(key, c)).mean())(state.params)
        return jax.tree.map(jnp.add, total, (loss, grads)), None

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
    (loss, grads), _ = jax.lax.scan(accumulate, zero, (jnp.arange(chunks), parts_CxMxT))
    loss, grads = jax.tree.map(lambda x: x / chunks, (loss, grads))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1), {"loss": loss}


@functools.partial(jax.jit, static_argnames=("config",))
def _sequence_nll(params, blocks_BxT, *, config):
    return token_nll(params, config, blocks_BxT).mean(axis=1)


def sequence_nll(params: OPTParams, config: OPTConfig, blocks_NxT: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Mean negative log-likelihood of each block (its perplexity is ``exp`` of it): ``N``."""
    batch_size = batch_size or eval_batch_size(config, blocks_NxT.shape[1])
    nll = map_batches(lambda b, rows: _sequence_nll(params, rows, config=config), blocks_NxT, batch_size, shard=True)
    return nll.astype(np.float32)


def perplexity(params: OPTParams, config: OPTConfig, blocks_NxT: np.ndarray, batch_size: int | None = None) -> float:
    """``exp`` of the mean token negative log-likelihood (all blocks have the same length).

    Equation ``eq-lm-perplexity`` of ``chapters/lm.md``.
    """
    return float(math.exp(sequence_nll(params, config, blocks_NxT, batch_size).mean()))


def init_state(config: TrainConfig, params: OPTParams, total_steps: int) -> TrainState:
    """A fresh optimiser state for ``total_steps`` steps from ``params`` (copied: steps donate their buffers)."""
    params = jax.tree.map(jnp.array, params)
    *others, schedule = optimizer(config).init(params)
    warmup = int(round(config.warmup * total_steps))
    schedule = schedule._replace(peak=jnp.asarray(config.learning_rate, jnp.float32), warmup=jnp.asarray(warmup, jnp.int32),
                                 total=jnp.asarray(total_steps, jnp.int32),
                                 weight_decay=jnp.asarray(config.weight_decay, jnp.float32))
    return TrainState(params, (*others, schedule), jnp.zeros((), jnp.int32))


def run_steps(
    state: TrainState, model: OPTConfig, config: TrainConfig, key: jax.Array, blocks_NxT: np.ndarray, *,
    start: int, stop: int, bar=None,
) -> tuple[TrainState, list]:
    """Steps ``start .. stop - 1`` of a run (its length is in ``state``, see :func:`init_state`); returns the
    state and the steps' losses.

    Step ``s`` takes batch ``s mod E`` (``E`` full batches per epoch; the remainder of fewer than
    ``batch_size`` blocks sits out that epoch, a different one each time) of epoch ``s div E``'s
    random order, and its dropout key from ``(key, epoch, s mod E)``: a run cut into pieces takes
    exactly the steps of a run in one piece, so an interrupted run resumes where it stopped.
    """
    steps_per_epoch = len(blocks_NxT) // config.batch_size
    tx = optimizer(config)
    losses, orders = [], {}
    for s in range(start, stop):
        epoch, i = divmod(s, steps_per_epoch)
        if epoch not in orders:
            key_order, key_dropout = jax.random.split(jax.random.fold_in(key, epoch))
            orders = {epoch: (np.asarray(jax.random.permutation(key_order, len(blocks_NxT))), key_dropout)}
        order, key_dropout = orders[epoch]
        rows = np.sort(order[i * config.batch_size : (i + 1) * config.batch_size])
        batch = shard_leading_axis(jnp.asarray(blocks_NxT[rows]), "batch")
        state, metrics = step(state, batch, jax.random.fold_in(key_dropout, i), config=model, tx=tx)
        losses.append(metrics["loss"])
        if bar is not None:
            bar.update()
    return state, losses


def full_batches(config: TrainConfig, n_blocks: int) -> int:
    """Full batches per epoch of ``n_blocks`` blocks; refuses a batch that the devices cannot share or the blocks cannot fill."""
    if config.batch_size % jax.device_count():
        raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {jax.device_count()} devices")
    n = n_blocks // config.batch_size
    if n == 0:
        raise ValueError(f"{n_blocks} training blocks are fewer than one batch ({config.batch_size})")
    return n


def train(
    model: OPTConfig, config: TrainConfig, key: jax.Array, blocks_NxT: np.ndarray, valid_NxT: np.ndarray, *,
    init_params: OPTParams, progress: bool = True,
) -> tuple[OPTParams, dict]:
    """Train from ``init_params`` for ``config.epochs`` epochs; return the parameters of the epoch with
    the lowest validation perplexity and the history (``train_loss``, ``valid_ppl`` per epoch, ``best_epoch``).

    Each epoch visits the blocks in a fresh random order in full batches (:func:`run_steps`).
    """
    steps_per_epoch = full_batches(config, len(blocks_NxT))
    total = steps_per_epoch * config.epochs
    state = init_state(config, init_params, total)
    history = {"train_loss": [], "valid_ppl": []}
    best, best_ppl = None, math.inf
    epochs = tqdm(range(config.epochs), desc="epochs", disable=not progress, leave=False)
    for epoch in epochs:
        state, losses = run_steps(state, model, config, key, blocks_NxT, start=epoch * steps_per_epoch,
                                  stop=(epoch + 1) * steps_per_epoch)
        history["train_loss"].append(float(np.mean(jax.device_get(losses))))
        ppl = perplexity(state.params, model, valid_NxT)
        history["valid_ppl"].append(ppl)
        epochs.set_postfix_str(f"valid ppl {ppl:.1f}")
        if best is None or ppl < best_ppl:
            best_ppl, history["best_epoch"] = ppl, epoch
            best = jax.tree.map(np.asarray, state.params)
    return jax.tree.map(jnp.asarray, best), history
