"""An OPT-architecture decoder (Zhang et al. 2022) in JAX: the language model of chapter 4.

OPT as ``transformers.OPTForCausalLM`` builds it for ``do_layer_norm_before=True`` (every
size but 350m): token embeddings tied to the output head, learned positions looked up at
``position + 2`` (OPT's offset), pre-LayerNorm blocks of multi-head attention with biases
and a ReLU feed-forward layer, and a final LayerNorm. Dropout on the embeddings, after the
attention projection and after the feed-forward layer, as OPT has it.

Parameters are a :class:`OPTParams` pytree whose blocks are stacked along a leading layer
axis, so the layers run as one ``lax.scan`` (one layer compiled, whatever the depth).
:func:`from_hf_state_dict` converts the weights of a ``transformers`` model (or of the
published ``facebook/opt-125m`` safetensors, :func:`load_pretrained`) into that pytree.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .config import check_int, check_unit_interval

POSITION_OFFSET = 2  # OPT looks position p up at row p + 2 of its position table


class LayerNorm(NamedTuple):
    scale: jax.Array  # D
    bias: jax.Array  # D


class Dense(NamedTuple):
    w: jax.Array  # in × out
    b: jax.Array  # out


class Block(NamedTuple):
    """One decoder layer; in :class:`OPTParams` every leaf has a leading layer axis."""

    ln_attn: LayerNorm
    qkv: Dense  # D × 3D: queries, keys, values side by side
    out: Dense  # D × D
    ln_ffn: LayerNorm
    fc1: Dense  # D × F
    fc2: Dense  # F × D


class OPTParams(NamedTuple):
    embed: jax.Array  # V × D, also the output head (tied)
    positions: jax.Array  # (max_positions + 2) × D
    blocks: Block  # stacked: every leaf is n_layers × ...
    ln_final: LayerNorm


@dataclasses.dataclass(frozen=True)
class OPTConfig:
    """Dimensions of the decoder; the defaults are ``facebook/opt-125m``'s."""

    vocab_size: int = 50272  # tokens (OPT pads GPT-2's 50 265 to a multiple of 8)
    max_positions: int = 2048  # longest sequence the position table covers
    d_model: int = 768  # width of the residual stream
    n_layers: int = 12  # decoder blocks
    n_heads: int = 12  # attention heads; d_model must divide evenly
    d_ffn: int = 3072  # hidden width of the feed-forward layer
    dropout: float = 0.1  # on embeddings, attention output and feed-forward output, in training only
    pad_id: int = 1  # OPT's <pad>
    bos_id: int = 2  # OPT's </s>, which starts every sequence
    eos_id: int = 2  # and also ends one

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_positions", "d_model", "n_layers", "n_heads", "d_ffn"):
            check_int(name, getattr(self, name), minimum=1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        check_unit_interval("dropout", self.dropout)
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}={value} must be a token id in [0, vocab_size={self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def n_params(self) -> int:
        d, f, v = self.d_model, self.d_ffn, self.vocab_size
        per_layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
        return v * d + (self.max_positions + POSITION_OFFSET) * d + self.n_layers * per_layer + 2 * d


# Sizes from the tests' toy up to the paper's model. The vocabulary is the tokenizer's.
PRESETS = {
    "tiny": dict(max_positions=128, d_model=32, n_layers=2, n_heads=4, d_ffn=64),  # tests
    "ci": dict(max_positions=128, d_model=64, n_layers=2, n_heads=4, d_ffn=256),  # CI, minutes on 2 cores
    "cpu": dict(max_positions=128, d_model=128, n_layers=2, n_heads=4, d_ffn=512),  # the laptop book
    "small": dict(max_positions=512, d_model=256, n_layers=4, n_heads=4, d_ffn=1024),  # a bigger laptop run
    "opt-125m": dict(),  # facebook/opt-125m exactly
}


def preset(name: str, vocab_size: int = 50272, **overrides) -> OPTConfig:
    """The :data:`PRESETS` size ``name`` for a tokenizer of ``vocab_size`` tokens."""
    if name not in PRESETS:
        raise ValueError(f"model preset {name!r} is not known; choose one of {tuple(PRESETS)}")
    return OPTConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})


def init(config: OPTConfig, key: jax.Array) -> OPTParams:
    """Random weights as OPT initialises them: N(0, 0.02²) matrices, zero biases, unit LayerNorms."""
    d, f, n = config.d_model, config.d_ffn, config.n_layers
    k = jax.random.split(key, 6)
    normal = lambda key, shape: 0.02 * jax.random.normal(key, shape, jnp.float32)  # noqa: E731
    ones, zeros = (lambda *s: jnp.ones(s, jnp.float32)), (lambda *s: jnp.zeros(s, jnp.float32))
    blocks = Block(
        ln_attn=LayerNorm(ones(n, d), zeros(n, d)),
        qkv=Dense(normal(k[2], (n, d, 3 * d)), zeros(n, 3 * d)),
        out=Dense(normal(k[3], (n, d, d)), zeros(n, d)),
        ln_ffn=LayerNorm(ones(n, d), zeros(n, d)),
        fc1=Dense(normal(k[4], (n, d, f)), zeros(n, f)),
        fc2=Dense(normal(k[5], (n, f, d)), zeros(n, d)),
    )
    embed = normal(k[0], (config.vocab_size, d)).at[config.pad_id].set(0.0)  # OPT zeroes its padding row
    positions = normal(k[1], (config.max_positions + POSITION_OFFSET, d))
    return OPTParams(embed, positions, blocks, LayerNorm(ones(d), zeros(d)))


# --------------------------------------------------------------------------- the forward pass


def _layer_norm(x, ln: LayerNorm, eps: float = 1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * ln.scale + ln.bias


def _dropout(x, rate: float, key):
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _attend(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_TxS):
    scale = q_BxTxHxK.shape[-1] ** -0.5
    scores = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK * scale, k_BxSxHxK)
    scores = jnp.where(mask_TxS, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhts,bshk->bthk", weights, v_BxSxHxK)


def _block(config: OPTConfig, block: Block, x_BxTxD, attend, key):
    """One pre-LN layer; ``attend(q, k, v)`` supplies keys and values (the cache, when decoding)."""
    b, t, d = x_BxTxD.shape
    h = _layer_norm(x_BxTxD, block.ln_attn)
    qkv = h @ block.qkv.w + block.qkv.b
    q, k, v = (a.reshape(b, t, config.n_heads, config.head_dim) for a in jnp.split(qkv, 3, axis=-1))
    attended, extra = attend(q, k, v)
    keys = (None, None) if key is None else jax.random.split(key)
    x = x_BxTxD + _dropout(attended.reshape(b, t, d) @ block.out.w + block.out.b, config.dropout, keys[0])
    h = _layer_norm(x, block.ln_ffn)
    h = jax.nn.relu(h @ block.fc1.w + block.fc1.b) @ block.fc2.w + block.fc2.b
    return x + _dropout(h, config.dropout, keys[1]), extra


def _embed(params: OPTParams, config: OPTConfig, tokens_BxT, start: int | jax.Array, key):
    t = tokens_BxT.shape[1]
    positions = jax.lax.dynamic_slice_in_dim(params.positions, start + POSITION_OFFSET, t, axis=0)
    return _dropout(params.embed[tokens_BxT] + positions[None], config.dropout, key)


def head(params: OPTParams, x):
    """Logits ``… × V`` of hidden states ``… × D``: the final LayerNorm, then the tied output head."""
    return _layer_norm(x, params.ln_final) @ params.embed.T


def forward(params: OPTParams, config: OPTConfig, tokens_BxT: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """Next-token logits ``B × T × V`` of unpadded sequences; dropout only when ``key`` is given."""
    return head(params, hidden_states(params, config, tokens_BxT, key))


def hidden_states(params: OPTParams, config: OPTConfig, tokens_BxT: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """The last layer's outputs ``B × T × D`` (before the final LayerNorm and the output head)."""
    t = tokens_BxT.shape[1]
    if t > config.max_positions:
        raise ValueError(f"sequences of {t} tokens are longer than max_positions={config.max_positions}")
    keys = (None, None) if key is None else jax.random.split(key)
    x = _embed(params, config, tokens_BxT, 0, keys[0])
    causal = jnp.tril(jnp.ones((t, t), bool))

    def layer(x, inputs):
        block, layer_key = inputs
        x, _ = _block(config, block, x, lambda q, k, v: (_attend(q, k, v, causal), None), layer_key)
        return x, None

    layer_keys = None if key is None else jax.random.split(keys[1], config.n_layers)
    x, _ = jax.lax.scan(layer, x, (params.blocks, layer_keys))
    return x


# --------------------------------------------------------------------------- decoding with a cache


class Cache(NamedTuple):
    """Keys and values per layer for J continuations of each of B prompts (tuples of ``n_layers`` arrays).

    The prompt's part is stored once per prompt and shared by its continuations (beams
    never copy it); the continuations' part has one row per continuation. Heads come
    before positions so that a one-token query attends with batched matrix products.
    """

    prompt_k: tuple  # B × H × T × K
    prompt_v: tuple
    k: tuple  # B × J × H × N × K, N = new tokens
    v: tuple


def _layer(params: OPTParams, i: int) -> Block:
    return jax.tree.map(lambda x: x[i], params.blocks)


def prefill(params: OPTParams, config: OPTConfig, tokens_BxT: jax.Array, n_new: int, n_continuations: int = 1
            ) -> tuple[jax.Array, Cache]:
    """Run the prompts (unpadded, all of length T); returns the last position's logits ``B × V`` and a
    cache with room for ``n_new`` tokens in each of ``n_continuations`` continuations per prompt."""
    b, t = tokens_BxT.shape
    if t + n_new > config.max_positions:
        raise ValueError(f"prompt plus new tokens ({t + n_new}) exceed max_positions={config.max_positions}")
    x = _embed(params, config, tokens_BxT, 0, None)
    causal = jnp.tril(jnp.ones((t, t), bool))
    prompt_k, prompt_v = [], []
    for i in range(config.n_layers):

        def attend(q, k, v):
            prompt_k.append(k.transpose(0, 2, 1, 3))
            prompt_v.append(v.transpose(0, 2, 1, 3))
            return _attend(q, k, v, causal), None

        x, _ = _block(config, _layer(params, i), x, attend, None)
    empty = tuple(jnp.zeros((b, n_continuations, config.n_heads, n_new, config.head_dim), x.dtype) for _ in prompt_k)
    return head(params, x[:, -1]), Cache(tuple(prompt_k), tuple(prompt_v), empty, empty)


def decode_step(params: OPTParams, config: OPTConfig, tokens_BxJ: jax.Array, cache: Cache, step) -> tuple[jax.Array, Cache]:
    """Feed new token number ``step`` (0-based) of every continuation; returns logits ``B × J × V``
    and the cache with its keys and values added."""
    b, j = tokens_BxJ.shape
    t = cache.prompt_k[0].shape[2]
    x = _embed(params, config, tokens_BxJ.reshape(b * j, 1), t + step, None)
    visible = jnp.arange(cache.k[0].shape[3]) <= step
    scale = config.head_dim**-0.5
    new_k, new_v = list(cache.k), list(cache.v)
    for i in range(config.n_layers):

        def attend(q, k, v):
            # q, k, v: (B·J) × 1 × H × K. The new key and value go in at ``step``.
            q, k, v = (a.reshape(b, j, config.n_heads, config.head_dim) for a in (q, k, v))
            new_k[i] = jax.lax.dynamic_update_slice(new_k[i], k[:, :, :, None], (0, 0, 0, step, 0))
            new_v[i] = jax.lax.dynamic_update_slice(new_v[i], v[:, :, :, None], (0, 0, 0, step, 0))
            q = q * scale
            scores = jnp.concatenate([
                jnp.einsum("bjhk,bhsk->bjhs", q, cache.prompt_k[i]),
                jnp.where(visible, jnp.einsum("bjhk,bjhnk->bjhn", q, new_k[i]), jnp.finfo(q.dtype).min),
            ], axis=-1)
            weights = jax.nn.softmax(scores, axis=-1)
            out = (jnp.einsum("bjhs,bhsk->bjhk", weights[..., :t], cache.prompt_v[i])
                   + jnp.einsum("bjhn,bjhnk->bjhk", weights[..., t:], new_v[i]))
            return out.reshape(b * j, 1, config.n_heads, config.head_dim), None

        x, _ = _block(config, _layer(params, i), x, attend, None)
    logits = head(params, x[:, 0]).reshape(b, j, -1)
    return logits, Cache(cache.prompt_k, cache.prompt_v, tuple(new_k), tuple(new_v))


def reorder(cache: Cache, source_BxJ: jax.Array) -> Cache:
    """Continuation j of prompt b becomes a copy of continuation ``source[b, j]`` (beam search)."""
    index = source_BxJ[:, :, None, None, None]
    take = lambda c: jnp.take_along_axis(c, index, axis=1)  # noqa: E731
    return Cache(cache.prompt_k, cache.prompt_v, tuple(map(take, cache.k)), tuple(map(take, cache.v)))


# --------------------------------------------------------------------------- weights from transformers


def from_hf_state_dict(state: Mapping[str, np.ndarray], config: OPTConfig) -> OPTParams:
    """Convert ``OPTForCausalLM`` weights (names as in its ``state_dict`` or the published
    safetensors, with or without the ``model.`` prefix; arrays out × in) into :class:`OPTParams`."""
    state = {k.removeprefix("model."): np.asarray(v, np.float32) for k, v in state.items()}
    prefix = "decoder."
    if f"{prefix}project_in.weight" in state:
        raise ValueError("this OPT has embedding projections (opt-350m); only d_model == word_embed_proj_dim is supported")

    def get(name):
        try:
            return state[prefix + name]
        except KeyError:
            raise KeyError(f"weight {prefix + name!r} is missing from the OPT state dict") from None

    def dense(name):
        return Dense(get(f"{name}.weight").T, get(f"{name}.bias"))

    def norm(name):
        return LayerNorm(get(f"{name}.weight"), get(f"{name}.bias"))

    layers = []
    for i in range(config.n_layers):
        a = f"layers.{i}."
        q, k, v = (dense(f"{a}self_attn.{n}_proj") for n in "qkv")
        layers.append(Block(
            ln_attn=norm(f"{a}self_attn_layer_norm"),
            qkv=Dense(np.concatenate([q.w, k.w, v.w], axis=1), np.concatenate([q.b, k.b, v.b])),
            out=dense(f"{a}self_attn.out_proj"),
            ln_ffn=norm(f"{a}final_layer_norm"),
            fc1=dense(f"{a}fc1"),
            fc2=dense(f"{a}fc2"),
        ))
    blocks = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *layers)
    params = OPTParams(jnp.asarray(get("embed_tokens.weight")), jnp.asarray(get("embed_positions.weight")),
                       blocks, jax.tree.map(jnp.asarray, norm("final_layer_norm")))
    expected = jax.tree.map(jnp.shape, jax.eval_shape(lambda key: init(config, key), jax.random.key(0)))
    found = jax.tree.map(jnp.shape, params)
    if expected != found:
        raise ValueError(f"the weights do not have the shapes of {config}")
    return params


def config_from_hf(hf: Mapping) -> OPTConfig:
    """An :class:`OPTConfig` from a ``transformers`` OPT ``config.json`` (checking it is the architecture here)."""
    if not hf.get("do_layer_norm_before", True) or hf.get("word_embed_proj_dim", hf["hidden_size"]) != hf["hidden_size"]:
        raise ValueError("only pre-LayerNorm OPT models without embedding projections are supported (not opt-350m)")
    if hf.get("activation_function", "relu") != "relu":
        raise ValueError(f"activation {hf['activation_function']!r}: only OPT's ReLU is supported")
    return OPTConfig(
        vocab_size=hf["vocab_size"], max_positions=hf["max_position_embeddings"], d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"], d_ffn=hf["ffn_dim"],
        dropout=float(hf.get("dropout", 0.1)), pad_id=hf.get("pad_token_id", 1), bos_id=hf.get("bos_token_id", 2),
        eos_id=hf.get("eos_token_id", 2),
    )


PRETRAINED_FILES = ["config.json", "*.safetensors", "vocab.json", "merges.txt"]


def pretrained_folder(name: str = "facebook/opt-125m") -> Path:
    """The local folder of a published OPT model: the Hugging Face cache, else a download.

    Raises ``FileNotFoundError`` saying how to get the weights when neither works.
    Nothing is downloaded at import time, only when this is called.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:  # pragma: no cover - huggingface_hub is a dependency
        raise FileNotFoundError("loading OPT weights needs huggingface_hub (pip install huggingface_hub)") from error
    errors = []
    for local_only in (True, False):
        try:
            folder = Path(snapshot_download(name, allow_patterns=PRETRAINED_FILES, local_files_only=local_only))
        except Exception as error:  # offline, unknown repo, no cache: try the next way, then explain
            errors.append(f"{'cache' if local_only else 'download'}: {type(error).__name__}: {error}")
            continue
        if list(folder.glob("*.safetensors")) and (folder / "config.json").is_file():
            return folder
        errors.append(f"{folder} has no safetensors weights")
    raise FileNotFoundError(
        f"The weights of {name} are neither in the Hugging Face cache nor downloadable here. On a machine with "
        f"the internet run `huggingface-cli download {name}` (or set HF_HOME to a cache that has them), or use "
        f"init='scratch'. ({'; '.join(errors)})"
    )


def load_pretrained(name: str = "facebook/opt-125m") -> tuple[OPTConfig, OPTParams, Path]:
    """``(config, params, folder)`` of a published OPT model (see :func:`pretrained_folder`)."""
    from safetensors.numpy import load_file

    folder = pretrained_folder(name)
    config = config_from_hf(json.loads((folder / "config.json").read_text()))
    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(path)))
    return config, from_hf_state_dict(state, config), folder
