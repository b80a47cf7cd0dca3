"""Text generation with the OPT decoder: greedy, sampling and beam search, jitted and batched.

The rules follow ``transformers``' ``generate()`` so that the two give the same tokens:

* repetition penalty (Keskar et al. 2019, as ``RepetitionPenaltyLogitsProcessor``): the score of
  every token already in the sequence (prompt included) is divided by the penalty if
  positive and multiplied by it if negative -- applied to logits in greedy decoding and
  sampling, to log-probabilities in beam search;
* no end-of-sequence token before ``min_new_tokens`` new tokens;
* beam search keeps the ``2 × beams`` best continuations of all beams each step; those
  ending in EOS (or reaching ``max_new_tokens``) among the best ``beams`` are finished
  hypotheses, scored by summed log-probability / length ** ``length_penalty``; the best
  ``beams`` unfinished ones run on. Finished hypotheses stop being accepted once no running
  beam can beat the worst of them (``early_stopping=False``'s heuristic).

Every loop is a ``lax.scan`` of ``max_new_tokens`` steps over a key/value cache; sequences
that ended are filled with the pad token, as ``generate()`` returns them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .config import check_int, check_positive
from .opt import OPTConfig, OPTParams, decode_step, prefill, reorder
from .sharding import map_batches

_NEG = -1.0e9  # the "impossible" score generate() adds (not -inf: sums stay finite)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How continuations are produced; the defaults are the paper's data-generation settings."""

    max_new_tokens: int = 64  # tokens generated per prompt
    min_new_tokens: int = 64  # EOS is forbidden before this many (64 = exactly 64 new tokens)
    num_beams: int = 5  # 1 = greedy or sampling; >1 = beam search
    repetition_penalty: float = 3.0  # the released code's value (the paper's ablation discusses 2.0); 1 = none
    length_penalty: float = 1.0  # exponent of the length normalisation of finished beams
    do_sample: bool = False  # sample instead of taking the argmax (num_beams=1 only)
    temperature: float = 1.0  # divides the logits before sampling

    def __post_init__(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        check_int("min_new_tokens", self.min_new_tokens, minimum=0)
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens={self.min_new_tokens} exceeds max_new_tokens={self.max_new_tokens}")
        check_int("num_beams", self.num_beams, minimum=1)
        check_positive("repetition_penalty", self.repetition_penalty)
        check_positive("temperature", self.temperature)
        if self.do_sample and self.num_beams > 1:
            raise ValueError("do_sample=True is only implemented for num_beams=1")


def _penalise(scores_BxV, seen_BxV, penalty):
    """A penalty of 1 changes nothing: x · 1 and x / 1 are x exactly."""
    return jnp.where(seen_BxV, jnp.where(scores_BxV < 0, scores_BxV * penalty, scores_BxV / penalty), scores_BxV)


def _forbid_eos(scores_BxV, step, config: OPTConfig, decode: DecodeConfig):
    too_early = step < decode.min_new_tokens
    return scores_BxV.at[:, config.eos_id].set(jnp.where(too_early, -jnp.inf, scores_BxV[:, config.eos_id]))


def _seen(tokens_BxT, vocab_size: int):
    rows = jnp.arange(tokens_BxT.shape[0])[:, None]
    return jnp.zeros((tokens_BxT.shape[0], vocab_size), bool).at[rows, tokens_BxT].set(True)


@functools.partial(jax.jit, static_argnames=("config", "decode"))
def greedy_or_sample(params: OPTParams, config: OPTConfig, decode: DecodeConfig, prompts_BxT, key=None):
    """``B × max_new_tokens`` new tokens, one sequence per prompt (argmax, or a draw if ``do_sample``)."""
    b, t = prompts_BxT.shape
    logits, cache = prefill(params, config, prompts_BxT, decode.max_new_tokens)
    keys = jax.random.split(key if key is not None else jax.random.key(0), decode.max_new_tokens)

    def step(carry, inputs):
        logits, cache, seen, done = carry
        i, key_i = inputs
        scores = _forbid_eos(_penalise(logits, seen, decode.repetition_penalty), i, config, decode)
        if decode.do_sample:
            token = jax.random.categorical(key_i, scores / decode.temperature, axis=-1)
        else:
            token = jnp.argmax(scores, axis=-1)
        token = jnp.where(done, config.pad_id, token).astype(prompts_BxT.dtype)
        seen = seen.at[jnp.arange(b), token].set(True)
        done = done | (token == config.eos_id)
        logits, cache = decode_step(params, config, token[:, None], cache, i)
        return (logits[:, 0], cache, seen, done), token

    carry = (logits, cache, _seen(prompts_BxT, config.vocab_size), jnp.zeros(b, bool))
    _, tokens = jax.lax.scan(step, carry, (jnp.arange(decode.max_new_tokens), keys))
    return tokens.T


# Lanes per chunk of :func:`top_k`. lax.top_k sorts on XLA:CPU: the 2k = 10 best of 5 beams × 4,096
# scores took 0.96 ms for 32 prompts and 8.1 ms for 256 (a seventh of a beam step); by chunks
# 0.17 and 1.65 ms (2-core EPYC, chunks of 32 to 256 measured, 64 best at 256 prompts).
_TOP_K_CHUNK = 64


def top_k(x_BxN, k: int):
    """``lax.top_k`` over the last axis, exactly (ties to the lower index), without sorting the rows.

    Each row is cut into chunks of ``_TOP_K_CHUNK``; the k chunks with the largest maxima (ties
    to the lower chunk) hold the k largest entries: an entry of any other chunk is beaten by those
    k maxima, each larger, or equal and at a lower index. ``lax.top_k`` then runs on those k chunks
    in their order along the row, so ties still go to the lower index. The row is padded with
    -inf to whole chunks; a pad never beats a real entry, which is as large and earlier. Rows
    too short for 4k chunks of two go to ``lax.top_k`` itself.
    """
    b, n = x_BxN.shape
    chunk = min(_TOP_K_CHUNK, n // (4 * k))
    if chunk < 2:
        return jax.lax.top_k(x_BxN, k)
    n_chunks = -(-n // chunk)
    x = jnp.pad(x_BxN, ((0, 0), (0, n_chunks * chunk - n)), constant_values=-jnp.inf).reshape(b, n_chunks, chunk)
    _, chunks_BxK = jax.lax.top_k(x.max(-1), k)
    chunks_BxK = jnp.sort(chunks_BxK, axis=-1)
    candidates = jnp.take_along_axis(x, chunks_BxK[:, :, None], axis=1).reshape(b, k * chunk)
    values, position = jax.lax.top_k(candidates, k)
    return values, jnp.take_along_axis(chunks_BxK, position // chunk, axis=1) * chunk + position % chunk


def _gather_beams(x_BxKx, index_BxJ):
    """Rows ``index`` of every batch item's beams: ``B × J × ...``."""
    return jnp.take_along_axis(x_BxKx, index_BxJ.reshape(index_BxJ.shape + (1,) * (x_BxKx.ndim - 2)), axis=1)


def beam_search(params: OPTParams, config: OPTConfig, decode: DecodeConfig, prompts_BxT):
    """The best beam's ``B × max_new_tokens`` new tokens and its score ``B`` (see the module text).

    The repetition penalty is an argument of the compiled search, not a constant of it, so the
    LM page's penalties (none; 2, and 3 at ``paper``) share one program per prompt count: at ``ci`` it compiled
    the search four times, 11.5 s on 2 cores, and now twice. A penalty of 1 still changes no score.
    """
    return _beam_search(params, config, dataclasses.replace(decode, repetition_penalty=1.0), prompts_BxT,
                        jnp.float32(decode.repetition_penalty))


@functools.partial(jax.jit, static_argnames=("config", "decode"))
def _beam_search(params: OPTParams, config: OPTConfig, decode: DecodeConfig, prompts_BxT, penalty):
    b, t = prompts_BxT.shape
    k, n, v = decode.num_beams, decode.max_new_tokens, config.vocab_size
    logits, cache = prefill(params, config, prompts_BxT, n, k)
    # Every beam starts as the prompt; only the first may extend at step 0 (no duplicate beams).
    logits = jnp.repeat(logits, k, axis=0)
    seen = jnp.repeat(_seen(prompts_BxT, v), k, axis=0).reshape(b, k, v)
    running_tokens = jnp.full((b, k, n), config.pad_id, prompts_BxT.dtype)
    running_scores = jnp.tile(jnp.asarray([0.0] + [_NEG] * (k - 1), jnp.float32), (b, 1))
    finished = (running_tokens, jnp.full((b, k), _NEG, jnp.float32), jnp.zeros((b, k), bool))
    improvable = jnp.ones((b,), bool)  # can a running beam still beat the worst finished one?
    in_top_k = jnp.arange(2 * k) < k  # only the best k candidates may finish

    def step(carry, i):
        logits, cache, seen, running_tokens, running_scores, finished, improvable = carry
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        log_probs = _forbid_eos(_penalise(log_probs, seen.reshape(b * k, v), penalty), i, config, decode)
        totals = (log_probs.reshape(b, k, v) + running_scores[:, :, None]).reshape(b, k * v)
        cand_scores, flat = top_k(totals, 2 * k)
        cand_beam, cand_token = flat // v, (flat % v).astype(running_tokens.dtype)
        cand_tokens = _gather_beams(running_tokens, cand_beam).at[:, :, i].set(cand_token)
        ends = (cand_token == config.eos_id) | (i == n - 1)

        # The best k candidates that did not end run on.
        _, keep = jax.lax.top_k(cand_scores + ends * _NEG, k)
        running_scores = _gather_beams(cand_scores + ends * _NEG, keep)
        running_tokens = _gather_beams(cand_tokens, keep)
        source = _gather_beams(cand_beam, keep)  # the beam each survivor extends
        next_token = _gather_beams(cand_token, keep)
        seen = _gather_beams(seen, source)
        seen = seen.at[jnp.arange(b)[:, None], jnp.arange(k)[None, :], next_token].set(True)

        # Candidates among the best k that ended join the finished hypotheses if they are better.
        just_finished = ends & in_top_k[None, :]
        normalised = cand_scores / ((i + 1) ** decode.length_penalty)
        normalised = normalised + (~improvable)[:, None] * _NEG + (~just_finished) * _NEG
        tokens_f, scores_f, done_f = finished
        merged_scores = jnp.concatenate([scores_f, normalised], axis=1)
        _, best = jax.lax.top_k(merged_scores, k)
        finished = (
            _gather_beams(jnp.concatenate([tokens_f, cand_tokens], axis=1), best),
            _gather_beams(merged_scores, best),
            _gather_beams(jnp.concatenate([done_f, just_finished], axis=1), best),
        )

        logits, cache = decode_step(params, config, next_token, reorder(cache, source), i)
        logits = logits.reshape(b * k, v)

        best_possible = running_scores[:, 0] / ((i + 1) ** decode.length_penalty)
        worst_finished = jnp.where(finished[2], jnp.min(finished[1], axis=1, keepdims=True), _NEG)
        improvable = improvable & jnp.any(best_possible[:, None] > worst_finished, axis=1)
        return (logits, cache, seen, running_tokens, running_scores, finished, improvable), None

    carry = (logits, cache, seen, running_tokens, running_scores, finished, improvable)
    carry, _ = jax.lax.scan(step, carry, jnp.arange(n))
    tokens_f, scores_f, _ = carry[5]
    return tokens_f[:, 0], scores_f[:, 0]


def generate(params: OPTParams, config: OPTConfig, decode: DecodeConfig, prompts_BxT, key=None) -> jax.Array:
    """New tokens ``B × max_new_tokens`` for each prompt, by the method ``decode`` names."""
    prompts = jnp.asarray(prompts_BxT, jnp.int32)
    if decode.num_beams > 1:
        return beam_search(params, config, decode, prompts)[0]
    if decode.do_sample and key is None:
        raise ValueError("sampling needs a key")
    return greedy_or_sample(params, config, decode, prompts, key)


def continue_blocks(
    params: OPTParams, config: OPTConfig, decode: DecodeConfig, prompts_NxT: np.ndarray, *, key=None,
    batch_size: int = 256, progress: bool = True, desc: str = "generating",
) -> np.ndarray:
    """:func:`generate` over many prompts, ``batch_size`` at a time (the last batch padded with
    copies of its last prompt, so only two shapes compile); returns ``N × max_new_tokens``."""
    batch = min(batch_size, len(prompts_NxT))

    def one_batch(b, rows):
        return generate(params, config, decode, rows, None if key is None else jax.random.fold_in(key, b * batch))

    return map_batches(one_batch, prompts_NxT, batch_size, pad=True, progress=progress, desc=desc).astype(np.int32)
