"""Language-model throughput: the library's OPT against ``transformers.OPTForCausalLM``, in one process.

Both use the same configuration, batch and decoding settings:

* training: next-token cross-entropy on batches of 64-token blocks, AdamW with gradient
  clipping (the library: :func:`collapse.lm.step`, jitted, donated state; the reference:
  ``OPTForCausalLM(labels=...)``, ``torch.optim.AdamW``, ``clip_grad_norm_``), tokens/s;
* generation: 64 new tokens per 64-token prompt by 5-way beam search with repetition
  penalty 3.0 and ``min_new_tokens=64`` (the released code's data generation; the library:
  :func:`collapse.decoding.beam_search`; the reference: ``generate()``), new tokens/s.

Model-FLOPs utilisation of training is ``6 N + 12 L T d`` FLOPs per token (N: parameters
in matrix products, including the tied output head) over the best float32 matrix-multiply
rate measured in the same run (JAX, square matrices). Timings are the best of
``--repeats`` after warm-up (compilation excluded). PyTorch runs on CUDA when it can.
On a GPU the ``opt-125m`` configuration is added. Usage::

    python benchmarks/lm.py [--preset cpu] [--vocab 4096] [--batch 64] [--prompts 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_time, record

from collapse import decoding, lm, opt


def matmul_peak(n: int, repeats: int) -> float:
    """Best float32 FLOP/s of an n × n matrix product under JAX on the default device."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    return 2 * n**3 / best_time(lambda: f(a).block_until_ready(), repeats)


def train_flops_per_token(config: opt.OPTConfig, t: int) -> float:
    d, f, layers = config.d_model, config.d_ffn, config.n_layers
    matrix_params = layers * (4 * d * d + 2 * d * f) + config.vocab_size * d
    return 6 * matrix_params + 12 * layers * t * d


def torch_model(config: opt.OPTConfig, params: opt.OPTParams, device: str):
    import torch
    import transformers

    hf = transformers.OPTConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, ffn_dim=config.d_ffn, max_position_embeddings=config.max_positions,
        word_embed_proj_dim=config.d_model, dropout=0.0, pad_token_id=config.pad_id, bos_token_id=config.bos_id,
        eos_token_id=config.eos_id,
    )
    model = transformers.OPTForCausalLM(hf).to(device)
    del params  # same shapes and initial scale; the weights' values do not change the timing
    return model, torch


def bench(config: opt.OPTConfig, batch: int, n_prompts: int, steps: int, repeats: int, torch_device: str, peak: float):
    t = 64
    rng = np.random.default_rng(0)
    blocks = rng.integers(4, config.vocab_size, size=(batch, t)).astype(np.int32)
    prompts = rng.integers(4, config.vocab_size, size=(n_prompts, t)).astype(np.int32)
    decode = decoding.DecodeConfig(max_new_tokens=64, min_new_tokens=64, num_beams=5, repetition_penalty=3.0)
    config = dataclasses.replace(config, dropout=0.0)

    # --- library
    train_config = lm.TrainConfig(learning_rate=1e-4, batch_size=batch)
    tx = lm.optimizer(train_config)
    params = opt.init(config, jax.random.key(0))
    state = lm.init_state(train_config, params, 10_000)  # copies the parameters: the step donates its buffers
    x = jnp.asarray(blocks)
    key = jax.random.key(1)

    def jax_steps():
        nonlocal state
        for _ in range(steps):
            state, metrics = lm.step(state, x, key, config=config, tx=tx)
        metrics["loss"].block_until_ready()

    jax_steps()
    jax_train = steps * batch * t / best_time(jax_steps, repeats)
    jax_generate_fn = lambda: decoding.beam_search(params, config, decode, jnp.asarray(prompts))[0].block_until_ready()  # noqa: E731
    jax_generate_fn()
    jax_generate = n_prompts * decode.max_new_tokens / best_time(jax_generate_fn, repeats)

    # --- reference
    model, torch = torch_model(config, params, torch_device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tx_blocks = torch.tensor(blocks, dtype=torch.long, device=torch_device)

    def sync():
        if torch_device == "cuda":
            torch.cuda.synchronize()

    def torch_steps():
        model.train()
        for _ in range(steps):
            loss = model(input_ids=tx_blocks, labels=tx_blocks).loss
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
        sync()

    torch_steps()
    torch_train = steps * batch * t / best_time(torch_steps, repeats)
    model.eval()
    torch_prompts = torch.tensor(prompts, dtype=torch.long, device=torch_device)

    def torch_generate_fn():
        with torch.no_grad():
            model.generate(torch_prompts, num_beams=5, max_new_tokens=64, min_new_tokens=64, repetition_penalty=3.0,
                           do_sample=False, early_stopping=False)
        sync()

    torch_generate_fn()
    torch_generate = n_prompts * decode.max_new_tokens / best_time(torch_generate_fn, repeats)
    mfu = jax_train * train_flops_per_token(config, t) / peak
    torch_mfu = torch_train * train_flops_per_token(config, t) / peak
    return dict(jax_train=jax_train, torch_train=torch_train, jax_generate=jax_generate, torch_generate=torch_generate,
                mfu=mfu, torch_mfu=torch_mfu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=tuple(opt.PRESETS))
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary (opt-125m always uses 50 272)")
    parser.add_argument("--batch", type=int, default=64, help="training blocks per step")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per beam-search call")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args()

    import torch

    device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    peak = matmul_peak(4096 if jax.default_backend() != "cpu" else 1024, args.repeats)
    print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; PyTorch {torch.__version__} on {device}")
    print(f"float32 matmul peak measured here: {peak / 1e9:,.1f} GFLOP/s")
    configs = [(args.preset, opt.preset(args.preset, 50272 if args.preset == "opt-125m" else args.vocab))]
    if jax.default_backend() == "gpu" and args.preset != "opt-125m":
        configs.append(("opt-125m", opt.preset("opt-125m")))
    for name, config in configs:
        r = bench(config, args.batch, args.prompts, args.steps, args.repeats, device, peak)
        print(f"\n{name}: {config.n_params() / 1e6:.2f} M parameters, vocabulary {config.vocab_size}, batch {args.batch} x 64 tokens")
        print(f"  training   tokens/s  library {r['jax_train']:>12,.0f}   transformers {r['torch_train']:>12,.0f}   "
              f"ratio {r['jax_train'] / r['torch_train']:.2f}x   MFU library {100 * r['mfu']:.1f} %, "
              f"transformers {100 * r['torch_mfu']:.1f} %")
        print(f"  beam search new tokens/s  library {r['jax_generate']:>8,.0f}   transformers {r['torch_generate']:>8,.0f}   "
              f"ratio {r['jax_generate'] / r['torch_generate']:.2f}x   ({args.prompts} prompts, 5 beams, 64 new tokens)")
        record("lm training", f"{name}, batch {args.batch}x64", r["jax_train"], r["torch_train"], "tokens/s",
               f"transformers on {device}", mfu=r["mfu"])
        record("lm beam search", f"{name}, {args.prompts} prompts, 5 beams", r["jax_generate"], r["torch_generate"],
               "new tokens/s", f"transformers on {device}")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
