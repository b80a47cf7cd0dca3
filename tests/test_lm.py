"""Chapter 4's library: the OPT decoder against transformers, decoding, data, training, the recursion."""

import dataclasses
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from collapse import decoding, lm, lm_experiment, opt, text
from collapse.config import Regime
from collapse.store import ResultsStore

from fixtures import interrupt_call, run_on_devices, write_brown, write_wikitext

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_hf():
    """A tiny random ``OPTForCausalLM`` and the same weights as our pytree."""
    torch.manual_seed(0)
    hf_config = transformers.OPTConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        max_position_embeddings=64, word_embed_proj_dim=32, pad_token_id=1, bos_token_id=2, eos_token_id=2,
    )
    model = transformers.OPTForCausalLM(hf_config).eval()
    with torch.no_grad():  # make EOS likely, so that beams finish early and the EOS rules are exercised
        model.model.decoder.embed_tokens.weight[2] *= 4
    config = opt.config_from_hf(hf_config.to_dict())
    params = opt.from_hf_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, config)
    return model, config, params


def prompts(n=6, length=12, seed=1):
    tokens = np.random.default_rng(seed).integers(3, 96, size=(n, length))
    tokens[:, 0] = 2  # OPT's BOS
    return tokens


def test_logits_match_transformers(tiny_hf):
    model, config, params = tiny_hf
    tokens = prompts(3, 20)
    with torch.no_grad():
        reference = model(torch.tensor(tokens)).logits.numpy()
    ours = np.asarray(opt.forward(params, config, jnp.asarray(tokens)))
    assert np.abs(ours - reference).max() < 1e-4


def test_token_nll_is_the_cross_entropy_of_transformers_logits(tiny_hf):
    # token_nll applies the output head to the T - 1 scored positions only; the scores must be those of the full logits.
    model, config, params = tiny_hf
    tokens = prompts(3, 20)
    with torch.no_grad():
        logits = model(torch.tensor(tokens)).logits[:, :-1]
        reference = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), torch.tensor(tokens[:, 1:]).reshape(-1), reduction="none"
        ).reshape(3, 19).numpy()
    ours = np.asarray(lm.token_nll(params, config, jnp.asarray(tokens)))
    assert ours.shape == (3, 19)
    assert np.abs(ours - reference).max() < 1e-4


def test_published_names_without_the_model_prefix_convert_the_same(tiny_hf):
    # The safetensors of facebook/opt-125m name weights "decoder.…"; state_dict() names them "model.decoder.…".
    model, config, params = tiny_hf
    bare = {k.removeprefix("model."): v.numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    converted = opt.from_hf_state_dict(bare, config)
    for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(KeyError, match="fc1"):
        opt.from_hf_state_dict({k: v for k, v in bare.items() if "layers.1.fc1" not in k}, config)


def test_cached_decoding_gives_the_full_forward_logits(tiny_hf):
    _, config, params = tiny_hf
    tokens = jnp.asarray(prompts(3, 20))
    full = np.asarray(opt.forward(params, config, tokens))
    logits, cache = opt.prefill(params, config, tokens[:, :8], 12)
    np.testing.assert_allclose(np.asarray(logits), full[:, 7], atol=1e-5)
    for i in range(12):
        logits, cache = opt.decode_step(params, config, tokens[:, 8 + i, None], cache, i)
        np.testing.assert_allclose(np.asarray(logits[:, 0]), full[:, 8 + i], atol=1e-5)


@pytest.mark.parametrize("settings", [
    dict(num_beams=1, max_new_tokens=10, min_new_tokens=0, repetition_penalty=1.0),
    dict(num_beams=1, max_new_tokens=10, min_new_tokens=3, repetition_penalty=3.0),
    dict(num_beams=5, max_new_tokens=16, min_new_tokens=16, repetition_penalty=3.0),  # the released code's
    dict(num_beams=5, max_new_tokens=16, min_new_tokens=16, repetition_penalty=1.0),  # the paper's main settings
    dict(num_beams=5, max_new_tokens=16, min_new_tokens=16, repetition_penalty=2.0),  # the paper's ablation
    dict(num_beams=5, max_new_tokens=16, min_new_tokens=2, repetition_penalty=1.0),  # beams end at EOS
    dict(num_beams=3, max_new_tokens=12, min_new_tokens=0, repetition_penalty=1.3, length_penalty=0.5),
])
def test_greedy_and_beam_search_equal_transformers_generate(tiny_hf, settings):
    model, config, params = tiny_hf
    tokens = prompts()
    decode = decoding.DecodeConfig(**settings)
    with torch.no_grad():
        reference = model.generate(torch.tensor(tokens), do_sample=False, early_stopping=False,
                                   **{"length_penalty": 1.0, **settings}).numpy()[:, tokens.shape[1]:]
    reference = np.pad(reference, ((0, 0), (0, decode.max_new_tokens - reference.shape[1])), constant_values=config.pad_id)
    ours = np.asarray(decoding.generate(params, config, decode, tokens))
    np.testing.assert_array_equal(ours, reference)


def test_one_compiled_beam_search_serves_every_repetition_penalty(tiny_hf):
    # The penalty is an argument of the compiled search: the LM page's settings share its program.
    _, config, params = tiny_hf
    tokens = prompts()
    decode = decoding.DecodeConfig(num_beams=3, max_new_tokens=6, min_new_tokens=6)
    decoding._beam_search.clear_cache()
    found = {penalty: np.asarray(decoding.generate(params, config, dataclasses.replace(decode, repetition_penalty=penalty),
                                                    tokens)) for penalty in (1.0, 2.0, 3.0)}
    assert decoding._beam_search._cache_size() == 1
    assert not np.array_equal(found[1.0], found[3.0])  # the penalty reached the search


@pytest.mark.parametrize("n, k", [(480, 10), (103, 4), (20480, 10), (12, 5)])
def test_top_k_by_chunks_is_lax_top_k(n, k):
    rng = np.random.default_rng(n)
    few = np.full(n, -np.inf)
    few[rng.choice(n, k // 2, replace=False)] = rng.normal(size=k // 2)  # fewer finite entries than k
    rows = [rng.normal(size=n), np.round(rng.normal(size=n)), np.zeros(n), few]  # distinct; many ties; all tied
    x = jnp.asarray(np.stack(rows), jnp.float32)
    values, index = decoding.top_k(x, k)
    expected_values, expected_index = jax.lax.top_k(x, k)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(index, expected_index)


def test_early_eos_cases_really_end_early(tiny_hf):
    # Guards the parity test above: with EOS allowed, some sequences must actually stop.
    _, config, params = tiny_hf
    greedy = np.asarray(decoding.generate(params, config, decoding.DecodeConfig(num_beams=1, min_new_tokens=0,
                                                                                max_new_tokens=10), prompts()))
    assert (greedy == config.eos_id).any() and (greedy == config.pad_id).any()


def test_sampling_is_a_function_of_the_key(tiny_hf):
    _, config, params = tiny_hf
    decode = decoding.DecodeConfig(num_beams=1, do_sample=True, temperature=1.5, min_new_tokens=0, max_new_tokens=8)
    a, b, c = (np.asarray(decoding.generate(params, config, decode, prompts(), jax.random.key(k))) for k in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    with pytest.raises(ValueError, match="key"):
        decoding.generate(params, config, decode, prompts())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_new_tokens"):
        decoding.DecodeConfig(max_new_tokens=4, min_new_tokens=5)
    with pytest.raises(ValueError, match="n_heads"):
        opt.OPTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="preset"):
        opt.preset("opt-13b")
    with pytest.raises(ValueError, match="max_positions"):
        opt.forward(opt.init(opt.preset("tiny", 64), jax.random.key(0)), opt.preset("tiny", 64), jnp.zeros((1, 200), int))


def test_missing_pretrained_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
        opt.pretrained_folder("facebook/opt-125m")


def test_hf_config_of_opt_125m_gives_the_preset():
    published = dict(vocab_size=50272, max_position_embeddings=2048, hidden_size=768, num_hidden_layers=12,
                     num_attention_heads=12, ffn_dim=3072, word_embed_proj_dim=768, do_layer_norm_before=True,
                     activation_function="relu", dropout=0.1, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    assert opt.config_from_hf(published) == opt.preset("opt-125m")
    assert abs(opt.preset("opt-125m").n_params() - 125_239_296) < 1e5  # OPT-125m's published count
    with pytest.raises(ValueError, match="350m"):
        opt.config_from_hf({**published, "word_embed_proj_dim": 512})


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("release", ["tokenized", "raw"])
def test_wikitext_is_read_from_either_release(tmp_path, release):
    write_wikitext(tmp_path, release)
    corpus = text.load_wikitext(tmp_path, download=False)
    assert corpus.release == release and len(corpus.train) == 601 and corpus.train[0] == " = Heading = "
    assert not corpus.verified  # neither matches a published checksum


def test_missing_wikitext_says_how_to_get_it(tmp_path):
    with pytest.raises(text.CorpusUnavailable, match="COLLAPSE_DATA_DIR"):
        text.load_wikitext(tmp_path, download=False)


def test_brown_split_is_by_file_stratified_by_genre_and_tags_are_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nowhere"))
    write_brown(tmp_path)
    corpus = text.load_brown(tmp_path)
    split = text.brown_split({f"c{g}{i:02d}": genre for g, genre in zip("ab", ("news", "fiction")) for i in range(1, 13)})
    assert split["valid"] == ["cb09", "ca09"] and split["test"] == ["cb10", "ca10"]  # 9th and 10th of each genre
    assert len(split["train"]) == 20
    assert "/" not in " ".join(corpus.train) and len(corpus.test) == 2 * 30


def test_fallback_to_the_other_corpus_comes_with_a_notice(tmp_path, monkeypatch):
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nowhere"))
    write_brown(tmp_path)
    monkeypatch.setattr(text, "download_wikitext_raw", lambda root: (_ for _ in ()).throw(OSError("offline")))
    corpus, notice = text.load_or_fallback("wikitext-2", tmp_path)
    assert corpus.name == "brown" and "wikitext-2 could not be had" in notice


def test_blocks_and_tokenizer(tmp_path):
    write_wikitext(tmp_path)
    corpus = text.load_wikitext(tmp_path, download=False)
    tokenizer = text.train_bpe(corpus.train, 400, tmp_path / "bpe.json")
    again = text.train_bpe(corpus.train, 400, tmp_path / "bpe-again.json")
    assert (tmp_path / "bpe.json").read_text() == (tmp_path / "bpe-again.json").read_text()  # deterministic
    assert [tokenizer.token_to_id(t) for t in text.SPECIAL_TOKENS] == [0, 1, 2, 3]
    blocks = text.to_blocks(tokenizer, corpus.train, bos_id=2, block_size=16)
    ids = [2]
    for line in corpus.train:
        ids += tokenizer.encode(line, add_special_tokens=False).ids + [2]
    n = (len(ids) - 1) // 16
    np.testing.assert_array_equal(blocks, np.asarray(ids[: n * 16]).reshape(n, 16))
    assert text.decode(tokenizer, blocks[0]).startswith(" = Heading =")
    del again


def test_unk_is_one_token_with_its_space(tmp_path):
    """" <unk>" is a single token, as " word" is, and decodes back to itself (a lone "Ġ" token
    before every <unk> made a certain two-token unit that beam search looped on)."""
    lines = [" the <unk> of the <unk> <unk> town .", " <unk> is a word .", " a = b"] * 20
    tokenizer = text.train_bpe(lines, 300, tmp_path / "bpe.json")
    for line in lines[:3]:
        ids = tokenizer.encode(line, add_special_tokens=False).ids
        assert ids.count(text.UNK_ID) == line.count("<unk>")
        assert len(ids) == len(line.split())  # every word one token here: no lone space before <unk>
        assert text.decode(tokenizer, [2, *ids, 1]) == line


def test_unk_is_no_word_of_the_corpus(tmp_path):
    """A continuation that is " <unk>" over and over is not made of real words, though "<unk>" is in
    the tokenized release's text; real words still count (each block's first and last word are cut)."""
    lines = [" the <unk> of the <unk> <unk> town .", " <unk> is a word ."] * 20
    tokenizer = text.train_bpe(lines, 300, tmp_path / "bpe.json")
    words = lm_experiment.corpus_words(lines)
    assert "<unk>" not in words and {"the", "town", "."} <= words

    def block(line):
        return np.asarray([tokenizer.encode(line, add_special_tokens=False).ids], np.int32)

    assert lm_experiment.word_shares(tokenizer, block(" <unk>" * 12), words) == (0.0, 1.0)
    assert lm_experiment.word_shares(tokenizer, block(" the town <unk> of the town ."), words) == (4 / 5, 1 / 5)
    assert lm_experiment.word_shares(tokenizer, block(" the town zzq of the town ."), words) == (4 / 5, 0.0)


def test_competence_tells_placeholders_from_other_non_words():
    """Generation 0's word test, on hand-made summaries: words that are neither <unk> nor words of
    the corpus fail ``other_words_real``; <unk> alone fails ``real_words`` only."""
    summary = {"test_ppl": [80.0, 90.0], "zero_shot_ppl": 75.0, "unigram_ppl": 800.0, "first_repeat": [6.0, 5.0],
               "corpus_words": [0.72, 0.5], "placeholders": [0.26, 0.3], "real_placeholders": 0.027}
    z = lm_experiment.competence(summary)
    assert z["other_words"] == pytest.approx(0.72 / 0.74)
    assert (z["real_words"], z["other_words_real"]) == (False, True)
    assert z["far_below_unigram"] and z["loops_early"] and not z["fine_tuning_helped"]
    z = lm_experiment.competence({**summary, "corpus_words": [0.6, 0.5]})  # 81 % of the other words
    assert (z["real_words"], z["other_words_real"]) == (False, False)
    z = lm_experiment.competence({**summary, "corpus_words": [0.95, 0.5], "placeholders": [0.0, 0.0],
                                  "first_repeat": [20.0, 5.0], "test_ppl": [70.0, 90.0]})
    assert z["real_words"] and z["other_words_real"] and not z["loops_early"] and z["fine_tuning_helped"]
    assert lm_experiment.competence({**summary, "placeholders": [1.0, 1.0]})["other_words"] == 0.0


# --------------------------------------------------------------------------- training


@pytest.mark.behaviour
def test_training_lowers_the_loss_and_keeps_the_best_epoch():
    config = opt.preset("tiny", 32, dropout=0.0)
    rng = np.random.default_rng(0)
    pattern = np.tile(np.arange(4, 12), 4)  # a periodic sequence: learnable
    blocks = np.stack([np.roll(pattern, rng.integers(8)) for _ in range(64)]).astype(np.int32)
    params, history = lm.train(config, lm.TrainConfig(learning_rate=1e-2, batch_size=16, epochs=4), jax.random.key(0),
                               blocks, blocks[:16], init_params=opt.init(config, jax.random.key(1)), progress=False)
    assert history["valid_ppl"][-1] < history["valid_ppl"][0] / 2
    assert history["best_epoch"] == int(np.argmin(history["valid_ppl"]))
    assert lm.perplexity(params, config, blocks[:16]) == pytest.approx(min(history["valid_ppl"]), rel=1e-5)


def test_the_traced_run_length_gives_optaxs_schedule_and_adamw_step_to_the_bit():
    # The rate of every step of 96 runs: optax's two linear schedules, joined, with constants.
    for peak in (5e-5, 1e-3, 3e-4, 2e-5):
        for warmup_fraction in (0.0, 0.1, 0.06):
            for total in (1, 7, 40, 125, 1000, 1234, 5000, 20000):
                warmup = int(round(warmup_fraction * total))
                reference = optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup, 1)),
                                                  optax.linear_schedule(peak, 0.0, max(total - warmup, 1))], [warmup])
                counts = jnp.arange(total + 3, dtype=jnp.int32)
                want = np.asarray(jax.jit(jax.vmap(reference))(counts))
                got = np.asarray(jax.jit(jax.vmap(lm.learning_rate, (None, 0, None, None)))(
                    jnp.float32(peak), counts, jnp.int32(warmup), jnp.int32(total)))
                np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32), err_msg=f"{peak} {warmup} {total}")
    # Three steps of the optimiser against optax's clip + adamw with that schedule, in one compiled step each.
    config = lm.TrainConfig(learning_rate=1e-3, warmup=0.25, weight_decay=0.01, clip_norm=0.5)
    total = 8
    reference = optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(
        optax.join_schedules([optax.linear_schedule(0.0, 1e-3, 2), optax.linear_schedule(1e-3, 0.0, 6)], [2]),
        weight_decay=0.01))
    params = {"w": jax.random.normal(jax.random.key(0), (5, 3)), "b": jnp.arange(3.0)}
    ours, theirs = lm.init_state(config, params, total).opt_state, reference.init(params)
    p_ours = p_theirs = params
    for k in range(3):
        grads = jax.tree.map(lambda x: jnp.sin(x * (k + 1.5)), p_ours)
        u_ours, ours = jax.jit(lm.optimizer(config).update)(grads, ours, p_ours)
        u_theirs, theirs = jax.jit(reference.update)(grads, theirs, p_theirs)
        p_ours, p_theirs = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_theirs, u_theirs)
        for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(p_ours["w"]), np.asarray(params["w"]))  # the steps moved the parameters


def test_one_compiled_step_serves_runs_of_every_rate_length_and_weight_decay():
    config = opt.preset("tiny", 32, dropout=0.0)
    blocks = jnp.asarray(np.random.default_rng(0).integers(3, 32, size=(8, 16)).astype(np.int32))
    lm.step.clear_cache()
    moved = {}
    for train in (lm.TrainConfig(learning_rate=1e-3), lm.TrainConfig(learning_rate=3e-4, warmup=0.1, weight_decay=0.01),
                  lm.TrainConfig(learning_rate=1e-3, weight_decay=0.5)):
        state = lm.init_state(train, opt.init(config, jax.random.key(1)), 10)
        state, _ = lm.step(state, blocks, jax.random.key(2), config=config, tx=lm.optimizer(train))
        moved[train.learning_rate, train.weight_decay] = np.asarray(state.params.embed)
    assert lm.step._cache_size() == 1
    assert not np.array_equal(moved[1e-3, 0.0], moved[1e-3, 0.5])  # the decay reached the step


def test_micro_batches_take_the_same_step_as_one_batch(monkeypatch):
    config = opt.preset("tiny", 32, dropout=0.0)
    blocks = jnp.asarray(np.random.default_rng(0).integers(3, 32, size=(16, 16)).astype(np.int32))
    tx = optax.sgd(1.0)  # the update is the gradient itself (Adam's first step is its sign: unstable near 0)
    stepped = {}
    for micro in (16, 4):
        monkeypatch.setattr(lm, "eval_batch_size", lambda config, block_size, micro=micro: micro)
        lm.step.clear_cache()  # the step is traced again with this micro-batch size
        params = opt.init(config, jax.random.key(1))
        state = lm.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
        stepped[micro] = lm.step(state, blocks, jax.random.key(2), config=config, tx=tx)
    (one, loss_one), (four, loss_four) = stepped[16], stepped[4]
    assert float(loss_one["loss"]) == pytest.approx(float(loss_four["loss"]), rel=1e-4)
    start = opt.init(config, jax.random.key(1))
    for a, b, p in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params), jax.tree.leaves(start)):
        step_one, step_four = np.asarray(a) - np.asarray(p), np.asarray(b) - np.asarray(p)
        # Within 1 % of the leaf's largest step: XLA's SSE4.2 kernels differ by up to 0.2 % between the two
        # shapes (AVX-512: 1e-6), while a lost micro-batch or a missing 1/C would be off by 25 % or more.
        np.testing.assert_allclose(step_four, step_one, atol=1e-2 * np.abs(step_one).max() + 1e-9)
    assert max(np.abs(np.asarray(a) - np.asarray(p)).max() for a, p in
               zip(jax.tree.leaves(one.params), jax.tree.leaves(start))) > 1e-3  # the step moved the parameters


SHARDED = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from collapse import lm, opt
    config = opt.preset("tiny", 32)
    lm.eval_batch_size = lambda config, block_size: 4  # four micro-batches per step, each across every device
    blocks = np.random.default_rng(0).integers(3, 32, size=(64, 16)).astype(np.int32)
    params, history = lm.train(config, lm.TrainConfig(learning_rate=3e-3, batch_size=16, epochs=2), jax.random.key(0),
                               blocks, blocks[:20], init_params=opt.init(config, jax.random.key(1)), progress=False)
    np.savez(sys.argv[1], devices=jax.device_count(), ppl=history["valid_ppl"], **{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))})
    """
)


@pytest.mark.forced_devices
def test_batch_axis_sharded_over_four_devices_trains_the_same_model(tmp_path):
    results = {n: run_on_devices(SHARDED, n, tmp_path / f"{n}.npz") for n in (1, 4)}
    assert int(results[1]["devices"]) == 1 and int(results[4]["devices"]) == 4
    for name in set(results[1].files) - {"devices"}:
        np.testing.assert_allclose(results[1][name], results[4][name], rtol=2e-4, atol=2e-5, err_msg=name)  # summation order differs


# --------------------------------------------------------------------------- the recursion


def test_early_warning_metrics_on_hand_made_blocks():
    blocks = np.array([[5, 6, 7, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    assert lm_experiment.distinct_n(blocks, 1) == 7 / 12
    assert lm_experiment.distinct_n(blocks, 3) == 7 / 8  # (5,6,7) twice; the rest distinct
    assert lm_experiment.repetition_rate(blocks) == 1 / 8
    assert lm_experiment.tokens_before_repeat(blocks) == 4.5  # median of 3 (the repeat) and 6 (none: whole block)
    assert lm_experiment.unigram_entropy(np.array([[0, 1, 2, 3]]), 8) == pytest.approx(2.0)
    rare = lm_experiment.rare_token_blocks(np.array([[1, 1, 1, 2]]), np.array([[1, 1], [1, 2], [1, 3]]), 4, 0.3)
    np.testing.assert_array_equal(rare, [False, False, True])  # token 3 never seen in training


def tiny_data(tmp_path):
    write_wikitext(tmp_path / "data", n_lines=(300, 40, 40))
    corpus = text.load_wikitext(tmp_path / "data", download=False)
    tokenizer = text.train_bpe(corpus.train, 300, tmp_path / "bpe.json")
    blocks = {s: text.to_blocks(tokenizer, getattr(corpus, s), bos_id=2, block_size=16) for s in text.SPLITS}
    return lm_experiment.LMData(corpus, tokenizer, blocks["train"][:32], blocks["valid"][:16], blocks["test"][:16], None)


def test_a_chapter_measures_the_first_n_test_blocks_of_the_test_split_and_says_so(tmp_path, monkeypatch):
    write_wikitext(tmp_path / "data", n_lines=(200, 30, 30))
    monkeypatch.setenv("COLLAPSE_DATA_DIR", str(tmp_path / "data"))
    every = lm_experiment.load_data("wikitext-2", init="scratch", vocab_size=300, block_size=16)
    first = lm_experiment.load_data("wikitext-2", init="scratch", vocab_size=300, block_size=16, n_test=3)
    assert len(every.test) == every.test_split_blocks == first.test_split_blocks > 3
    np.testing.assert_array_equal(first.test, every.test[:3])
    np.testing.assert_array_equal(first.train, every.train)
    chapter = lm_experiment.chapter_config("ci", 0, init="scratch")
    assert chapter.n_test == 256
    assert f"measured on the first 3 of the {every.test_split_blocks:,} blocks" in chapter.describe(first)
    assert f"measured on all {every.test_split_blocks:,} blocks" in chapter.describe(every)
    with pytest.raises(ValueError, match="n_test"):
        dataclasses.replace(chapter, n_test=-1)


def tiny_run(regime="replace"):
    return lm_experiment.LMRun(
        "wikitext-2", "tokenized", "bpe-300", 32, 16, opt.preset("tiny", 300), "scratch",
        lm.TrainConfig(learning_rate=3e-3, batch_size=8, epochs=2),
        decoding.DecodeConfig(max_new_tokens=16, min_new_tokens=16, num_beams=2), 2, Regime.parse(regime), 0,
    )


@pytest.mark.stored
@pytest.mark.parametrize("regime", ["replace", "accumulate", "mix(0.25)"])
@pytest.mark.parametrize("init", ["scratch", "pretrained"])
def test_interrupted_lm_run_resumes_with_identical_results(tmp_path, regime, init, monkeypatch):
    # Pretrained: generations 1 and 2 of the resumed run start from the stored generation 0.
    data = with_general(tiny_data(tmp_path))
    config = tiny_run(regime) if init == "scratch" else tiny_pretrained_run(regime)
    straight = lm_experiment.run(config, data, store=ResultsStore(tmp_path / "a"), progress=False)
    calls = interrupt_call(monkeypatch, lm, "train", at=2)
    store = ResultsStore(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        lm_experiment.run(config, data, store=store, progress=False)
    assert lm_experiment.run_folder(config, data, store).finished_generations() == [0]
    resumed = lm_experiment.run(config, data, store=store, progress=False)
    assert len(calls) == 2 + 2  # generations 1 and 2 only: generation 0 was loaded
    assert resumed == straight
    run_a = lm_experiment.run_folder(config, data, ResultsStore(tmp_path / "a"))
    run_b = lm_experiment.run_folder(config, data, store)
    for n in range(3):
        np.testing.assert_array_equal(run_a.load_generation(n)["samples"], run_b.load_generation(n)["samples"])
        assert run_a.load_generation(n)["samples"].shape == (config.n_train, 16)


@pytest.mark.behaviour
def test_analysis_measures_every_generation(tmp_path):
    data = tiny_data(tmp_path)
    config = tiny_run()
    store = ResultsStore(tmp_path / "r")
    lm_experiment.run(config, data, store=store, progress=False)
    instruments = lm_experiment.Instruments(n_judged=0)
    assert lm_experiment.stored_analysis(config, instruments, data, store) is None  # reading computes nothing
    analysis = lm_experiment.analyse(config, instruments, data, store=store)
    stored = lm_experiment.stored_analysis(config, instruments, data, store)
    np.testing.assert_array_equal(stored["test_nll"], analysis["test_nll"])
    assert analysis["test_nll"].shape == (3, 16) and analysis["judged_nll"].shape == (3, 32)
    assert analysis["examples"].shape == (3, 1, 16)
    summary = lm_experiment.summarise(analysis)
    first = np.exp(analysis["test_nll"][0].mean())
    assert summary["test_ppl"][0] == pytest.approx(first, rel=1e-6)
    assert analysis["start_test_nll"].shape == (16,) and 0 <= analysis["corpus_words"].min() <= 1
    assert analysis["placeholders"].shape == analysis["corpus_words"].shape and 0 <= analysis["real_placeholders"] <= 1
    assert summary["unigram_ppl"] > 1 and summary["zero_shot_ppl"] > 1


def tiny_pretrained_run(regime="replace", **pretraining):
    return dataclasses.replace(
        tiny_run(regime), n_train=24, init="pretrained",
        pretraining=lm_experiment.Pretraining(**{"steps": 6, "segment": 2, "train": lm.TrainConfig(learning_rate=3e-3, batch_size=8),
                                                 **pretraining}))


def with_general(data):
    """``data`` with the last 16 test blocks standing in for a second corpus's training split."""
    return dataclasses.replace(data, general=data.test[::-1].copy(), general_name="brown")


def test_pretraining_text_holds_no_fine_tuning_validation_or_test_block(tmp_path):
    data = with_general(tiny_data(tmp_path))
    config = tiny_pretrained_run()
    blocks = lm_experiment.pretraining_blocks(config, data)
    np.testing.assert_array_equal(blocks, np.concatenate([data.train[24:], data.general]))
    fine_tuned = {row.tobytes() for row in data.train[:24]}
    assert not fine_tuned & {row.tobytes() for row in blocks}
    assert len(lm_experiment.pretraining_blocks(dataclasses.replace(config, n_train=0), data)) == len(data.general)


@pytest.mark.stored
def test_interrupted_pretraining_resumes_with_the_same_model(tmp_path, monkeypatch):
    data = with_general(tiny_data(tmp_path))
    config = tiny_pretrained_run()
    straight = lm_experiment.pretrain(config, data, store=ResultsStore(tmp_path / "a"), progress=False)
    calls = interrupt_call(monkeypatch, lm, "run_steps", at=2, note=lambda args, kwargs: kwargs["start"])
    store = ResultsStore(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        lm_experiment.pretrain(config, data, store=store, progress=False)
    assert not lm_experiment.pretraining_stored(config, data, store)  # one segment of three is not a pretraining
    resumed = lm_experiment.pretrain(config, data, store=store, progress=False)
    assert lm_experiment.pretraining_stored(config, data, store)
    assert calls == [0, 2, 2, 4]  # the second segment again, then the third: the first was kept
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again = lm_experiment.pretrain(config, data, store=store, progress=False)  # stored: no step taken
    assert calls == [0, 2, 2, 4]
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [len(list(p.glob("gen-*"))) for p in (tmp_path / "b" / "lm-pretrain").iterdir()] == [1]  # only the newest checkpoint is kept


@pytest.mark.stored
@pytest.mark.parametrize("regime", ["replace", "accumulate", "mix(0.25)"])
def test_every_generation_continues_the_original_blocks_and_starts_from_generation_0(tmp_path, regime, monkeypatch):
    data = with_general(tiny_data(tmp_path))
    config = dataclasses.replace(tiny_pretrained_run(regime), decode=dataclasses.replace(tiny_run().decode, repetition_penalty=2.0))
    store = ResultsStore(tmp_path / "r")
    prompts, decodes, starts = [], [], []
    real_continue, real_train = decoding.continue_blocks, lm.train

    def spy_continue(params, model, decode, blocks, **kwargs):
        prompts.append(np.array(blocks))
        decodes.append(decode)
        return real_continue(params, model, decode, blocks, **kwargs)

    def spy_train(*args, init_params, **kwargs):
        starts.append(jax.tree.map(np.asarray, init_params))
        return real_train(*args, init_params=init_params, **kwargs)

    monkeypatch.setattr(decoding, "continue_blocks", spy_continue)
    monkeypatch.setattr(lm, "train", spy_train)
    lm_experiment.run(config, data, store=store, progress=False)
    assert len(prompts) == 3 and decodes == [config.decode] * 3  # the setting's penalty reaches the beam search
    for blocks in prompts:
        np.testing.assert_array_equal(blocks, data.train[:24])  # never the generation's own training set
    pretrained = lm_experiment.pretrain(config, data, store=store, progress=False)
    generation_0 = lm_experiment.run_folder(config, data, store).load_generation(0)["params"]
    for got, expected in zip(starts, [pretrained, generation_0, generation_0]):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(a, np.asarray(b))


def test_chapter_settings_reach_the_run_config():
    for profile in ("ci", "cpu", "paper"):
        chapter = lm_experiment.chapter_config(profile)
        data = lm_experiment.LMData(text.Corpus("wikitext-2", "raw", [], [], [], True, ""), None,
                                    *(np.zeros((8, 64), np.int32),) * 3, None)
        for setting in chapter.settings + chapter.extra_settings:
            config = chapter.run_config(data, setting, 0)
            assert config.decode.repetition_penalty == setting.repetition_penalty
            assert config.train.epochs == setting.epochs and config.regime == Regime.parse(setting.regime)
        assert [s.repetition_penalty for s in chapter.settings] == [1.0, 1.0]  # the paper's text names none
        assert 2.0 in [s.repetition_penalty for s in chapter.extra_settings]  # its ablation


def test_chapter_configs_are_valid_and_paper_is_the_published_protocol():
    paper = lm_experiment.chapter_config("paper")
    assert paper.init == "opt-125m" and paper.n_generations == 9 and len(paper.seeds) == 5
    assert [(s.regime, s.epochs) for s in paper.settings] == [("replace", 5), ("mix(0.1)", 10)]
    assert paper.decode == decoding.DecodeConfig(max_new_tokens=64, min_new_tokens=64, num_beams=5, repetition_penalty=1.0)
    assert [s.repetition_penalty for s in paper.extra_settings] == [2.0, 3.0, 1.0]
    assert paper.train.learning_rate == 2e-5 and paper.train.batch_size == 128  # the released main.py's defaults
    for profile in ("ci", "cpu"):
        chapter = lm_experiment.chapter_config(profile)
        assert chapter.n_generations >= (5 if profile == "cpu" else 1)
    with pytest.raises(ValueError, match="corpus"):
        dataclasses.replace(paper, corpus="ptb")


def test_blocks_trained_follows_the_runners_training_set():
    """What the LM page says each regime fine-tunes on: the real blocks, then one batch of
    continuations a generation, replaced or accumulated."""
    assert [lm_experiment.blocks_trained("accumulate", 256, g) for g in (0, 1, 5)] == [256, 512, 1536]
    assert [lm_experiment.blocks_trained(r, 256, 5) for r in ("replace", "mix(0.1)")] == [256, 256]


def test_drift_verdicts_on_hand_made_curves():
    chapter = lm_experiment.chapter_config("ci")  # seeds 0 and 1, two generations after generation 0
    replace, mix = chapter.settings
    curves = {  # test perplexity at generations 0, 1, 2
        (replace.name, 0): [50.0, 60.0, 59.0],  # rose, then fell back a little
        (replace.name, 1): [50.0, 54.0, 58.0],  # kept rising
        (mix.name, 0): [50.0, 52.0, 53.0],  # rose less than replace
        (mix.name, 1): [50.0, 60.0, 61.0],  # rose more than replace
    }
    moved = lm_experiment.drift({key: {"test_ppl": np.array(c)} for key, c in curves.items()}, chapter)
    np.testing.assert_allclose(moved["rise"][replace.name], [9.0, 8.0])
    np.testing.assert_allclose(moved["first_step"], [10.0, 4.0])
    np.testing.assert_allclose(moved["after_first"], [-1.0, 4.0])
    assert (moved["rose"], moved["kept_lower"], moved["kept_rising"], moved["n_seeds"]) == (2, 1, 1, 2)
    assert moved["accumulated"] == {}  # not run: nothing to say
    accumulate, = [s for s in chapter.extra_settings if s.regime == "accumulate"]
    # Against replace's +9 in seed 0: +8.5 is less (not less than seed 1's +8, nor than their mean).
    for last, rose_less in ((58.5, True), (59.0, False)):
        curves[accumulate.name, 0] = [50.0, 55.0, last]
        moved = lm_experiment.drift({key: {"test_ppl": np.array(c)} for key, c in curves.items()}, chapter)
        assert moved["accumulated"] == {accumulate.name: {"rise": last - 50.0, "rose_less": rose_less}}
    assert lm_experiment.seeds_phrase(1, 2) == "in 1 of the 2 seeds"
    assert lm_experiment.seeds_phrase(2, 2) == "in every seed" and lm_experiment.seeds_phrase(0, 2) == "in no seed"
