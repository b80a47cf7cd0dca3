"""Chapter 4's experiment: generations of OPT-style language models on WikiText-2.

The paper's procedure (Shumailov et al. 2024, "Model collapse in language models"):

* every generation starts from a pretrained model (the published OPT-125m, or a small OPT
  pretrained here once, :func:`pretrain`, on general English text that holds none of the
  fine-tuning blocks and none of the validation or test text);
* generation 0 is that model fine-tuned on the real 64-token blocks, keeping the epoch with
  the best validation perplexity; it is the base model of every later generation
  ("the best-performing model on the original task ... as the base model");
* generation n writes generation n+1's data by continuing **every original training block**
  with exactly 64 new tokens (5-way beam search; the repetition penalty is the setting's), mixed
  with real blocks as the data regime says.

:func:`run` goes through the shared resumable driver (:func:`collapse.runner.run_generations`),
so every finished generation's parameters, generated blocks and metrics are on disk and
an interrupted run resumes; so does the pretraining, in segments. :func:`analyse` measures
every stored generation with fixed instruments: the real test blocks, the generation-0 model
as a judge of the generated data, the words and repeats of the generated text, and one real
prompt continued by every generation.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from . import decoding, distributed, lm, opt, records, text
from .chapter import check_chapter, executed_note
from .config import Regime, check_choice, check_int, check_positive, check_seed, to_dict
from .distributed import agree, load_shared
from .paths import results_dir
from .runner import generation_zero_dir, require_finished, run_generations, stream_key, training_set
from .store import DamagedEntry, ResultsStore, RunDir, array_digest, locked

VERSION = "4"  # of the runs: bump when training or generation changes (2: the paper's prompts and base model;
# 3: the schedule's run length in the optimiser state, weights moved by float rounding, checkpoints of another
# structure; 4: the weight decay in that state too, checkpoints of another structure)
ANALYSIS_VERSION = "6"  # of the measurements: bump when analyse() changes (runs are kept); 6: <unk>'s share
INITS = ("scratch", "pretrained", "opt-125m")


@dataclasses.dataclass(frozen=True)
class Pretraining:
    """The one-time pretraining of the ``pretrained`` start, on general text (see :func:`pretrain`)."""

    # AdamW steps of train.batch_size blocks. cpu: 1.85 passes over the text. The model was short of steps, not of
    # step size: test perplexity before fine-tuning 105 after 1,200 steps, 69 after 2,400; 119 at twice the peak
    # step (1,200 steps). 2,000 steps took 515 s on 2 cores (the page run alone), within the 10 minutes allowed.
    steps: int = 2000
    train: lm.TrainConfig = lm.TrainConfig(learning_rate=2e-3, warmup=0.02, weight_decay=0.01, batch_size=64)  # epochs unused
    segment: int = 100  # steps between checkpoints: an interrupted pretraining resumes from the last one
    seed: int = 0  # one pretrained model for every chain (as OPT-125m is one model), whatever the chain's seed

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=1)
        check_int("segment", self.segment, minimum=1)
        check_seed("seed", self.seed)

    @property
    def n_segments(self) -> int:
        """Checkpoints of a finished pretraining (the last segment may be short)."""
        return math.ceil(self.steps / self.segment)


@dataclasses.dataclass(frozen=True)
class LMRun:
    """One chain of language-model generations."""

    corpus: str = "wikitext-2"  # the corpus actually loaded
    release: str = "raw"  # which of its releases (raw, tokenized, nltk)
    tokenizer: str = "gpt2"  # "gpt2" (OPT's) or "bpe-<V>" (trained on the text the model learns from)
    n_train: int = 0  # real training blocks (0 = all of the split)
    n_valid: int = 0  # validation blocks that choose the best epoch (0 = all)
    model: opt.OPTConfig = opt.OPTConfig()  # architecture of every generation
    init: str = "opt-125m"  # generation 0 starts from OPT-125m, from the model pretrained here, or from a random init
    train: lm.TrainConfig = lm.TrainConfig()  # optimiser and epochs of every generation
    decode: decoding.DecodeConfig = decoding.DecodeConfig()  # how each generation writes the next one's data
    n_generations: int = 9  # generations after generation 0
    regime: Regime = Regime()  # what generation n+1 is trained on
    seed: int = 0  # every random number of the run derives from it (the pretraining has its own)
    pretraining: Pretraining | None = None  # how the "pretrained" start is made (None for the others)

    def __post_init__(self) -> None:
        check_choice("init", self.init, INITS)
        check_int("n_train", self.n_train, minimum=0)  # negative would slice from the end
        check_int("n_valid", self.n_valid, minimum=0)
        check_int("n_generations", self.n_generations, minimum=0)
        check_seed("seed", self.seed)
        if (self.init == "pretrained") != (self.pretraining is not None):
            raise ValueError(f"pretraining must be given exactly when init='pretrained' (init={self.init!r})")


@dataclasses.dataclass(frozen=True)
class LMData:
    corpus: text.Corpus
    tokenizer: object  # a ``tokenizers.Tokenizer``
    train: np.ndarray  # blocks, int32 N × 64
    valid: np.ndarray
    test: np.ndarray
    notice: str | None  # what the reader must know about the data, if anything
    general: np.ndarray | None = None  # training blocks of the other corpus: general text to pretrain on
    general_name: str | None = None  # which corpus ``general`` is
    test_split_blocks: int = 0  # blocks of the whole test split (``test`` may hold only its first ones)


def tokenizer_path(corpus: text.Corpus, vocab_size: int, general: text.Corpus | None = None) -> Path:
    """The cached BPE of the training text (its digest is in the name: other text, other file)."""
    lines = corpus.train + (general.train if general is not None else [])
    extra = f"+{general.name}" if general is not None else ""
    return results_dir() / "tokenizers" / (f"{corpus.name}-{corpus.release}{extra}-bpe{vocab_size}-v{text.BPE_VERSION}-"
                                                  f"{text.text_digest(lines)}.json")


def load_data(corpus_name: str, *, init: str, vocab_size: int, block_size: int = 64, n_test: int = 0) -> LMData:
    """Blocks of the corpus (or, with a notice, the other one), with OPT's tokenizer or a trained BPE;
    the test split's first ``n_test`` blocks (0 = all).

    With ``init="pretrained"`` the other corpus's training split is loaded too, as general text to
    pretrain on, and the BPE is trained on both training splits (never on validation or test text).
    """
    corpus, notice = text.load_or_fallback(corpus_name)
    if corpus.name == "wikitext-2" and not corpus.verified:  # said on the page (Brown has no published checksum)
        unverified = (f"The {corpus.name} files this page read ({corpus.source}) do not match the published checksums "
                      "(a test fixture, a modified copy, or a copy put there by hand): its numbers are not the "
                      "published data's.")
        notice = unverified if notice is None else f"{notice} {unverified}"
    general = None
    if init == "pretrained":
        other = text.CORPORA[1 - text.CORPORA.index(corpus.name)]
        try:
            general = text.load_corpus(other)
        except text.CorpusUnavailable as error:
            missing = (f"The {other} corpus could not be had, so the pretraining used only the part of "
                       f"{corpus.name}'s training split that is not fine-tuned on. ({error})")
            notice = missing if notice is None else f"{notice} {missing}"
    if init == "opt-125m":
        tokenizer = text.gpt2_tokenizer(opt.pretrained_folder())
    else:
        lines = corpus.train + (general.train if general is not None else [])
        tokenizer = text.train_bpe(lines, vocab_size, tokenizer_path(corpus, vocab_size, general))
    blocks = {s: text.to_blocks(tokenizer, getattr(corpus, s), bos_id=2, block_size=block_size) for s in text.SPLITS}
    short = [s for s, b in blocks.items() if len(b) == 0]
    if short:  # fail here, before any training, not after generation 0
        raise text.CorpusDamaged(f"the {', '.join(short)} split of {corpus.source} has fewer than {block_size} tokens")
    general_blocks = None if general is None else text.to_blocks(tokenizer, general.train, bos_id=2, block_size=block_size)
    return LMData(corpus, tokenizer, blocks["train"], blocks["valid"], blocks["test"][: n_test or None], notice,
                  general_blocks, None if general is None else general.name, len(blocks["test"]))


def pretraining_blocks(config: LMRun, data: LMData) -> np.ndarray:
    """The pretraining text: the training blocks the run does not fine-tune on, then the general corpus's.
    None of the run's real training blocks, and no validation or test text."""
    rest = data.train[config.n_train:] if config.n_train else data.train[:0]
    general = data.general if data.general is not None else data.train[:0]
    return np.concatenate([rest, general])


def pretrain(config: LMRun, data: LMData, *, store: ResultsStore | None = None, progress: bool = True) -> opt.OPTParams:
    """The ``pretrained`` start: ``config.pretraining.steps`` steps on :func:`pretraining_blocks`, once.

    Stored in the results store under the model, the pretraining config and a digest of the text,
    so every chain, setting and page that asks for the same pretraining shares one. It is saved
    every ``segment`` steps (only the newest checkpoint is kept); an interrupted pretraining resumes
    from there and takes exactly the steps of an uninterrupted one (:func:`collapse.lm.run_steps`).
    """
    pre = config.pretraining
    blocks = pretraining_blocks(config, data)
    steps_per_epoch = lm.full_batches(pre.train, len(blocks))  # refused here, before any step, if too few
    run_dir = _pretraining_dir(config, blocks, store)
    n_segments = pre.n_segments
    key = stream_key(pre.seed, "lm/pretrain")
    with locked(run_dir.path):
        state, done = None, 0
        latest = max(run_dir.finished_generations(), default=0)
        if agree(latest > 0):
            try:
                state = load_shared(lambda: run_dir.load_generation(latest)["params"], f"segment {latest} in {run_dir.path}")
                state = jax.tree.map(jax.numpy.asarray, state)
                done = latest
            except DamagedEntry as error:  # started again from the beginning
                run_dir.set_aside_generation(latest, str(error))
        if done < n_segments:
            if state is None:
                state = lm.init_state(pre.train, opt.init(config.model, jax.random.fold_in(key, 0)), pre.steps)
            bar = tqdm(total=pre.steps, initial=min(done * pre.segment, pre.steps), desc="pretraining",
                       unit="step", disable=not progress)
            for k in range(done + 1, n_segments + 1):
                start, stop = (k - 1) * pre.segment, min(k * pre.segment, pre.steps)
                state, losses = lm.run_steps(state, config.model, pre.train, jax.random.fold_in(key, 1), blocks,
                                             start=start, stop=stop, bar=bar)
                loss = float(np.mean(jax.device_get(losses)))
                bar.set_postfix_str(f"loss {loss:.2f}, epoch {stop / steps_per_epoch:.2f}")
                run_dir.save_generation(k, params=jax.tree.map(np.asarray, state), samples=np.zeros(0, np.int32),
                                        metrics={"steps": stop, "train_loss": loss})
                if k > 1:
                    run_dir.remove_generation(k - 1)
            bar.close()
    return jax.tree.map(jax.numpy.asarray, state.params)


def _pretraining_dir(config: LMRun, blocks: np.ndarray, store: ResultsStore | None = None) -> RunDir:
    """Where :func:`pretrain` keeps its checkpoints: keyed by the model, the pretraining config and the
    text (``blocks``, from :func:`pretraining_blocks`)."""
    return (store or ResultsStore()).run_dir("lm-pretrain", VERSION, {
        "model": config.model, "pretraining": config.pretraining, "data": array_digest(blocks)})


def pretraining_stored(config: LMRun, data: LMData, store: ResultsStore | None = None) -> bool:
    """Whether :func:`pretrain` would load a finished pretraining instead of taking steps."""
    if config.init != "pretrained":
        return False
    run_dir = _pretraining_dir(config, pretraining_blocks(config, data), store)
    return max(run_dir.finished_generations(), default=0) >= config.pretraining.n_segments


def initial_params(config: LMRun, data: LMData, *, store: ResultsStore | None = None, progress: bool = True) -> opt.OPTParams:
    """Where generation 0's training starts: OPT-125m's weights, the model :func:`pretrain` made, or a random init."""
    if config.init == "opt-125m":
        model, params, _ = opt.load_pretrained()
        if model != dataclasses.replace(config.model, dropout=model.dropout):
            raise ValueError(f"the run's model {config.model} is not OPT-125m's {model}")
        return params
    if config.init == "pretrained":
        return pretrain(config, data, store=store, progress=progress)
    return opt.init(config.model, stream_key(config.seed, "lm/init"))


def data_digest(config: LMRun, data: LMData) -> str:
    """A hash of every block a run of ``config`` reads: its real training, validation and test blocks,
    and the pretraining text."""
    pretraining = pretraining_blocks(config, data) if config.init == "pretrained" else data.train[:0]
    return array_digest(data.train[: config.n_train or None], data.valid[: config.n_valid or None], data.test, pretraining)


def run_folder(config: LMRun, data: LMData, store: ResultsStore | None = None) -> RunDir:
    """Where the run of ``config`` on ``data`` keeps its generations (keyed by both)."""
    return (store or ResultsStore()).run_dir("lm", VERSION, {"run": config, "data": data_digest(config, data)})


def run(config: LMRun, data: LMData, *, store: ResultsStore | None = None, progress: bool = True) -> list[dict]:
    """Train (or load) generations 0..n_generations; returns each generation's metrics.

    Generation 0 trains from :func:`initial_params`; every later generation from generation 0's
    parameters (the paper's base model). Every generation continues the original training blocks.
    """
    store = store or ResultsStore()
    real = data.train[: config.n_train or None]
    valid = data.valid[: config.n_valid or None]
    run_dir = run_folder(config, data, store)
    history = {}

    def train(key, blocks):
        if "base" in history:
            start = history["base"]
        elif agree(run_dir.has_generation(0)):  # a resumed run: generation 0 is stored
            start = history["base"] = load_shared(lambda: run_dir.load_generation(0)["params"],
                                                  f"generation 0 in {run_dir.path}")
        else:  # generation 0
            start = initial_params(config, data, store=store, progress=progress)
        params, history["last"] = lm.train(config.model, config.train, key, blocks, valid, init_params=start,
                                           progress=progress)
        history.setdefault("base", params)  # generation 0's best epoch: the start of every later generation
        return params

    def generate(key, params, blocks):
        del key, blocks  # beam search draws nothing; the prompts are the original blocks, whatever was trained on
        return decoding.continue_blocks(params, config.model, config.decode, real, progress=progress,
                                        desc="writing the next generation's data")

    metrics = run_generations(
        run_dir, seed=config.seed, real_data=real, n_generations=config.n_generations, regime=config.regime,
        train=train, generate=generate, evaluate=lambda params, samples: dict(history["last"]), progress=progress,
        zero_shared_with=generation_zero_dir(store, "lm", VERSION, config, data_digest(config, data)),
    )
    return metrics


# --------------------------------------------------------------------------- measurements


def distinct_n(blocks_NxT: np.ndarray, n: int) -> float:
    """Distinct n-grams over all n-grams of the blocks (within blocks): 1 = no n-gram repeats anywhere."""
    grams = np.lib.stride_tricks.sliding_window_view(blocks_NxT, n, axis=1).reshape(-1, n)
    return len(np.unique(grams, axis=0)) / len(grams)


def _repeated_grams(row_T: np.ndarray, n: int) -> list[bool]:
    """For each n-gram of a block, in order, whether it already occurred earlier in the block."""
    seen, repeated = set(), []
    for gram in zip(*(row_T[i:] for i in range(n))):
        repeated.append(gram in seen)
        seen.add(gram)
    return repeated


def repetition_rate(blocks_NxT: np.ndarray, n: int = 3) -> float:
    """Share of n-grams that already occurred earlier in the same block (loops, stutters)."""
    flags = [_repeated_grams(row, n) for row in blocks_NxT]
    return sum(map(sum, flags)) / sum(map(len, flags))


def tokens_before_repeat(blocks_NxT: np.ndarray, n: int = 3) -> float:
    """Median, over blocks, of the position of the first n-gram that repeats an earlier one of the
    same block (a block with no repeat counts its whole length): how soon the text starts to loop."""
    firsts = [next((j for j, repeated in enumerate(_repeated_grams(row, n)) if repeated), len(row))
              for row in blocks_NxT]
    return float(np.median(firsts))


def unigram_entropy(blocks_NxT: np.ndarray, vocab_size: int) -> float:
    """Entropy (bits) of the token frequencies of the blocks."""
    counts = np.bincount(blocks_NxT.ravel(), minlength=vocab_size).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))  # max: no "-0.0" for a single token


def unigram_perplexity(train_NxT: np.ndarray, test_MxT: np.ndarray, vocab_size: int) -> float:
    """Perplexity of the test blocks under the training blocks' token frequencies (add-one smoothed),
    over the tokens :func:`collapse.lm.perplexity` predicts (all but each block's first): the
    baseline of a model that has learnt which tokens are common and nothing of their order."""
    counts = np.bincount(train_NxT.ravel(), minlength=vocab_size) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-log_p[test_MxT[:, 1:]].mean()))


# Marks in a corpus's text that stand for a word and are none: the tokenized WikiText-2 puts "<unk>" where a
# rare word was (2.7 % of its training words). Counted as words, they let a continuation that is " <unk>" over
# and over (generation 0's at the cpu profile, on that release) score 99.8 % "words of the corpus".
PLACEHOLDERS = frozenset({text.SPECIAL_TOKENS[text.UNK_ID]})


def corpus_words(lines: list[str]) -> frozenset[str]:
    """The whitespace-separated words of a corpus's text, less :data:`PLACEHOLDERS`."""
    return frozenset(word for line in lines for word in line.split()) - PLACEHOLDERS


def word_shares(tokenizer, blocks_NxT: np.ndarray, words: frozenset[str]) -> tuple[float, float]:
    """Shares of the words of the decoded blocks that are words of ``words``, and that are
    :data:`PLACEHOLDERS`. Each block's first and last word are left out: a 64-token cut may split them."""
    inner = [w for row in blocks_NxT for w in text.decode(tokenizer, row).split()[1:-1]]
    n = max(len(inner), 1)
    return sum(w in words for w in inner) / n, sum(w in PLACEHOLDERS for w in inner) / n


def rare_token_blocks(train_NxT: np.ndarray, test_MxT: np.ndarray, vocab_size: int, fraction: float = 0.1) -> np.ndarray:
    """Mask of the test blocks whose rarest token (by training frequency) is among the rarest ``fraction`` of blocks'."""
    counts = np.bincount(train_NxT.ravel(), minlength=vocab_size)
    rarest = counts[test_MxT].min(axis=1)
    # Ties at the cut go to the rare side; the mask then holds at least ``fraction`` of the blocks.
    return rarest <= np.quantile(rarest, fraction)


@dataclasses.dataclass(frozen=True)
class Instruments:
    """What every generation is measured with."""

    n_judged: int = 2000  # generated blocks scored by the generation-0 model (0 = all)
    rare_fraction: float = 0.1  # test blocks with the rarest tokens
    n_examples: int = 1  # real test prompts every generation continues


def analyse(config: LMRun, instruments: Instruments, data: LMData, *, store: ResultsStore | None = None) -> dict:
    """Measure every generation of a finished run. Arrays over generations ``G``:
    ``test_nll`` (G × test blocks), ``judged_nll`` (G × n_judged: generation-0 model on each
    generation's data), ``distinct_1/2/3``, ``repetition``, ``entropy``, ``corpus_words`` and
    ``placeholders`` (G,; the last two from :func:`word_shares`),
    ``examples`` (G × n_examples × 64 tokens), ``valid_ppl`` and ``train_loss`` (G × epochs),
    ``best_epoch`` (G,); and ``start_test_nll`` (the starting model's, before fine-tuning: the
    zero-shot perplexity), ``unigram_ppl``, ``rare`` (mask of test blocks) and the same text
    statistics of the real training blocks (``real_*``)."""
    store = store or ResultsStore()
    key = _analysis_key(config, instruments, data)
    run_dir = run_folder(config, data, store)
    real = data.train[: config.n_train or None]

    def compute():
        require_finished(run_dir, config.n_generations)
        judge = run_dir.load_generation(0)["params"]
        prompts = data.test[: instruments.n_examples]
        words = corpus_words(data.corpus.train)
        out = {k: [] for k in ("test_nll", "judged_nll", "distinct_1", "distinct_2", "distinct_3", "repetition",
                               "first_repeat", "entropy", "corpus_words", "placeholders", "examples", "valid_ppl",
                               "train_loss", "best_epoch")}
        for n in range(config.n_generations + 1):
            record = run_dir.load_generation(n)
            samples = record["samples"][: instruments.n_judged or None]
            out["test_nll"].append(lm.sequence_nll(record["params"], config.model, data.test))
            out["judged_nll"].append(lm.sequence_nll(judge, config.model, samples))
            for k in (1, 2, 3):
                out[f"distinct_{k}"].append(distinct_n(samples, k))
            out["repetition"].append(repetition_rate(samples))
            out["first_repeat"].append(tokens_before_repeat(samples))
            out["entropy"].append(unigram_entropy(samples, config.model.vocab_size))
            shares = word_shares(data.tokenizer, samples, words)
            out["corpus_words"].append(shares[0])
            out["placeholders"].append(shares[1])
            out["examples"].append(np.asarray(decoding.generate(record["params"], config.model, config.decode, prompts)))
            for k in ("valid_ppl", "train_loss", "best_epoch"):
                out[k].append(record["metrics"][k])
        result = {k: np.asarray(v) for k, v in out.items()}
        result["start_test_nll"] = zero_shot_nll(config, data, store=store)
        result["unigram_ppl"] = unigram_perplexity(data.train, data.test, config.model.vocab_size)
        result["rare"] = rare_token_blocks(real, data.test, config.model.vocab_size, instruments.rare_fraction)
        judged_real = real[: instruments.n_judged or None]
        result["real_judged_nll"] = lm.sequence_nll(judge, config.model, judged_real)
        for k in (1, 2, 3):
            result[f"real_distinct_{k}"] = distinct_n(judged_real, k)
        result["real_repetition"] = repetition_rate(judged_real)
        result["real_first_repeat"] = tokens_before_repeat(judged_real)
        result["real_entropy"] = unigram_entropy(judged_real, config.model.vocab_size)
        result["real_corpus_words"], result["real_placeholders"] = word_shares(data.tokenizer, judged_real, words)
        return result

    return store.cached("lm-analysis", ANALYSIS_VERSION, key, compute)


def zero_shot_nll(config: LMRun, data: LMData, *, store: ResultsStore | None = None) -> np.ndarray:
    """Each test block's mean negative log-likelihood under the starting model, before any fine-tuning;
    computed once for every run that starts from the same model."""
    store = store or ResultsStore()
    key = {"model": config.model, "init": config.init, "pretraining": config.pretraining,
           "seed": config.seed if config.init == "scratch" else None,  # only a random init depends on the seed
           "data": array_digest(data.test, pretraining_blocks(config, data) if config.init == "pretrained" else data.test[:0])}

    def compute():
        start = initial_params(config, data, store=store, progress=False)
        return {"nll": lm.sequence_nll(start, config.model, data.test)}

    return store.cached("lm-zero-shot", ANALYSIS_VERSION, key, compute)["nll"]


def _analysis_key(config: LMRun, instruments: Instruments, data: LMData) -> dict:
    return {"run": config, "instruments": instruments, "data": data_digest(config, data)}


def stored_analysis(config: LMRun, instruments: Instruments, data: LMData, store: ResultsStore | None = None) -> dict | None:
    """The analysis :func:`analyse` stored for this run, or None: trains and measures nothing."""
    return (store or ResultsStore()).stored("lm-analysis", ANALYSIS_VERSION, _analysis_key(config, instruments, data))


def summarise(analysis: dict) -> dict:
    """Per-generation numbers of an analysis, small enough to record as JSON."""
    test_nll, rare = analysis["test_nll"], analysis["rare"]
    floats = lambda a: [float(x) for x in np.ravel(a)]  # noqa: E731
    return {
        "test_ppl": floats(np.exp(test_nll.mean(axis=1))),
        "zero_shot_ppl": float(np.exp(analysis["start_test_nll"].mean())),
        "unigram_ppl": float(analysis["unigram_ppl"]),
        "rare_ppl": floats(np.exp(test_nll[:, rare].mean(axis=1))),
        "common_ppl": floats(np.exp(test_nll[:, ~rare].mean(axis=1))),
        "judged_ppl_median": floats(np.exp(np.median(analysis["judged_nll"], axis=1))),
        **{k: floats(analysis[k]) for k in ("distinct_1", "distinct_2", "distinct_3", "repetition", "first_repeat",
                                             "entropy", "corpus_words", "placeholders", "best_epoch")},
        **{k: float(analysis[k]) for k in ("real_distinct_2", "real_repetition", "real_first_repeat", "real_entropy",
                                            "real_corpus_words", "real_placeholders")},
    }


# --------------------------------------------------------------------------- verdicts


def over_seeds(summaries: dict, setting: "Setting", seeds, name: str) -> np.ndarray:
    """seeds × generations of one summary series of one setting."""
    return np.array([summaries[setting.name, s][name] for s in seeds])


def competence(summary: dict) -> dict:
    """Is generation 0 a competent language model? From one chain's summary:

    * ``far_below_unigram``: its test perplexity is at most half that of the training tokens'
      frequencies alone (``unigram_ppl``);
    * ``real_words``: at least 90 % of the words it writes are words of the corpus (``<unk>`` is none);
    * ``other_words_real``: the same test on the words that are not :data:`PLACEHOLDERS`, whose
      share of its words is ``placeholders`` (``real_placeholders`` in real text);
    * ``loops_early``: half of its continuations repeat a 3-gram within their first 16 tokens.
    """
    ppl_0, placeholders = summary["test_ppl"][0], summary["placeholders"][0]
    other_words = summary["corpus_words"][0] / (1 - placeholders) if placeholders < 1 else 0.0
    return {
        "ppl_0": ppl_0, "zero_shot": summary["zero_shot_ppl"], "unigram": summary["unigram_ppl"],
        "placeholders": placeholders, "real_placeholders": summary["real_placeholders"], "other_words": other_words,
        "far_below_unigram": bool(ppl_0 <= summary["unigram_ppl"] / 2),
        "real_words": bool(summary["corpus_words"][0] >= 0.9),
        "other_words_real": bool(other_words >= 0.9),
        "loops_early": bool(summary["first_repeat"][0] < 16),
        "fine_tuning_helped": bool(ppl_0 < summary["zero_shot_ppl"]),
    }


def drift(summaries: dict, chapter: "LMChapter") -> dict:
    """The two paper settings compared over the chapter's seeds.

    ``rise``: last-generation minus generation-0 test perplexity, per setting (one per seed);
    ``rose``: the seeds in which it rose without original data; ``kept_lower``: the seeds in
    which keeping 10 % real data rose less than using none. The shape of the first setting's
    rise, per seed: ``first_step`` (generation 1 minus generation 0), ``after_first`` (last
    generation minus generation 1) and ``kept_rising``, the seeds in which ``after_first > 0``.
    ``accumulated``: for each ``accumulate`` setting the chapter ran (first seed only), its rise and
    whether it rose less than the first setting in the same seed.
    """
    replace, mix = chapter.settings
    ppl = {s.name: over_seeds(summaries, s, chapter.seeds, "test_ppl") for s in chapter.settings}
    rise = {name: p[:, -1] - p[:, 0] for name, p in ppl.items()}
    first_step = ppl[replace.name][:, 1] - ppl[replace.name][:, 0]
    after_first = ppl[replace.name][:, -1] - ppl[replace.name][:, 1]
    accumulated = {}
    for s in chapter.extra_settings:
        if s.regime == "accumulate" and (s.name, chapter.seed) in summaries:
            p = summaries[s.name, chapter.seed]["test_ppl"]
            accumulated[s.name] = {"rise": float(p[-1] - p[0]), "rose_less": bool(p[-1] - p[0] < rise[replace.name][0])}
    return {
        "rise": rise,
        "rose": int((rise[replace.name] > 0).sum()),
        "kept_lower": int((rise[mix.name] < rise[replace.name]).sum()),
        "first_step": first_step,
        "after_first": after_first,
        "kept_rising": int((after_first > 0).sum()),
        "n_seeds": len(chapter.seeds),
        "accumulated": accumulated,
    }


def blocks_trained(regime: str, n_real: int, generation: int) -> int:
    """How many blocks generation ``generation`` fine-tunes on under ``regime``, with ``n_real`` real
    blocks and as many continuations written by each generation: the runner's own training set."""
    real = np.zeros((n_real, 1), np.int32)
    return len(training_set(Regime.parse(regime), jax.random.key(0), real, [real] * generation))


def seeds_phrase(k: int, n: int) -> str:
    """"in every seed", "in no seed" or "in k of the n seeds"."""
    if n == 1:
        return "in the one seed run" if k else "not in the one seed run"
    return "in every seed" if k == n else "in no seed" if k == 0 else f"in {k} of the {n} seeds"


# --------------------------------------------------------------------------- the chapter


@dataclasses.dataclass(frozen=True)
class Setting:
    """One protocol of the chapter: the data regime, epochs and repetition penalty of every generation."""

    name: str  # what the chapter calls it
    regime: str  # replace / accumulate / mix(alpha)
    epochs: int  # training epochs of every generation
    repetition_penalty: float = 1.0  # of the beam search that writes the next generation's data (1 = none)

    def __post_init__(self) -> None:
        Regime.parse(self.regime)
        check_int("epochs", self.epochs, minimum=1)
        check_positive("repetition_penalty", self.repetition_penalty)


# The paper's two settings (Fig. 1b,c): its text names no repetition penalty for them.
PAPER_SETTINGS = (
    Setting("5 epochs, no original data", "replace", 5),
    Setting("10 epochs, 10% original data", "mix(0.1)", 10),
)
PENALTY_2 = Setting("5 epochs, no original data, penalty 2", "replace", 5, 2.0)  # the paper's "Ablation: Repetitions"
PENALTY_3 = Setting("5 epochs, no original data, penalty 3", "replace", 5, 3.0)  # the released main.py's generate() call
ACCUMULATE = Setting("5 epochs, accumulating all data", "accumulate", 5)  # Gerstgrasser et al. 2024


@dataclasses.dataclass(frozen=True)
class LMChapter:
    """What chapter 4 runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    seeds: tuple[int, ...] = (0,)  # one chain per seed and main setting
    corpus: str = "wikitext-2"  # the fine-tuning corpus (wikitext-2 or brown); the other is pretraining text
    init: str = "pretrained"  # "opt-125m" (the paper's model), "pretrained" (pretrained here) or "scratch"
    model_preset: str = "cpu"  # opt.PRESETS name (opt-125m's sizes when init="opt-125m")
    vocab_size: int = 4096  # of the BPE trained when init is not "opt-125m"
    n_train: int = 256  # real training blocks fine-tuned on and continued every generation (0 = all)
    n_valid: int = 256  # validation blocks that choose the best epoch (0 = all)
    n_test: int = 0  # test blocks every generation is measured on, the split's first ones (0 = all)
    n_generations: int = 5  # after generation 0
    settings: tuple[Setting, ...] = PAPER_SETTINGS  # run with every seed
    extra_settings: tuple[Setting, ...] = (PENALTY_2,)  # ablations, run with the first seed only
    # Fine-tuning: a quarter of the pretraining's peak step (1e-3 moved a generation's test perplexity 92 -> 145 in
    # one generation, 2e-4 by 2 %, at cpu sizes); the epochs come from the setting.
    train: lm.TrainConfig = lm.TrainConfig(learning_rate=5e-4, warmup=0.05, weight_decay=0.01, batch_size=64)
    decode: decoding.DecodeConfig = decoding.DecodeConfig(repetition_penalty=1.0)  # 5 beams, 64 new tokens; the penalty comes from the setting
    pretraining: Pretraining = Pretraining()  # of the "pretrained" start
    instruments: Instruments = Instruments()

    def __post_init__(self) -> None:
        check_chapter(self.profile, self.seeds[0] if self.seeds else 0)
        for seed in self.seeds:
            check_seed("seeds[...]", seed)
        check_choice("corpus", self.corpus, text.CORPORA)
        check_choice("init", self.init, INITS)
        check_choice("model_preset", self.model_preset, tuple(opt.PRESETS))
        check_int("vocab_size", self.vocab_size, minimum=260)  # 256 bytes + 4 special tokens
        check_int("n_train", self.n_train, minimum=0)
        check_int("n_valid", self.n_valid, minimum=0)
        check_int("n_test", self.n_test, minimum=0)
        check_int("n_generations", self.n_generations, minimum=1)
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        names = [s.name for s in self.settings + self.extra_settings]
        if len(set(names)) != len(names):
            raise ValueError(f"settings must have distinct names, not {names}")

    @property
    def seed(self) -> int:
        """The page's seed: the first of :attr:`seeds`."""
        return self.seeds[0]

    def load_data(self) -> LMData:
        """The chapter's corpus, tokenized for its model, with its :attr:`n_test` test blocks."""
        return load_data(self.corpus, init=self.init, vocab_size=self.vocab_size, n_test=self.n_test)

    def model(self) -> opt.OPTConfig:
        return opt.OPTConfig() if self.init == "opt-125m" else opt.preset(self.model_preset, self.vocab_size)

    def describe(self, data: LMData | None = None) -> str:
        model = self.model()
        tokenizer = ("GPT-2's tokenizer" if self.init == "opt-125m" else
                     "a byte-level BPE trained on the training text" + (" of both corpora" if self.init == "pretrained" else ""))
        start = {"opt-125m": "the published OPT-125m weights (fine-tuning, as the paper)",
                 "pretrained": (f"a model pretrained here for {self.pretraining.steps:,} steps of "
                                f"{self.pretraining.train.batch_size} blocks on general text (the paper fine-tunes "
                                "the pretrained OPT-125m)"),
                 "scratch": "one random initialisation (training from scratch; the paper fine-tunes OPT-125m)"}[self.init]
        if data is None:
            where, n_train, sizes = f"{self.corpus}", self.n_train, ""
        else:
            release = {"raw": "the raw release (`wikitext-2-raw-v1`, the paper's)",
                       "tokenized": "the tokenized release (`wikitext-2-v1`: rare words replaced by `<unk>`; the paper "
                                    "used the raw one)",
                       "nltk": "NLTK's tagged files, tags removed"}[data.corpus.release]
            where, n_train = f"{data.corpus.name}, {release}", len(data.train[: self.n_train or None])
            measured = (f"all {len(data.test):,} blocks" if len(data.test) == data.test_split_blocks else
                        f"the first {len(data.test):,} of the {data.test_split_blocks:,} blocks")
            sizes = (f"; the corpus's whole training split is {len(data.train):,} blocks here. Test perplexity is "
                     f"measured on {measured} of the real test split")
            if self.init == "pretrained":
                config = self.run_config(data, self.settings[0], self.seed)
                n_pre = len(pretraining_blocks(config, data))
                general = f" and the {data.general_name} corpus's training split" if data.general_name else ""
                sizes += (f". The pretraining text is the rest of the training split{general}: {n_pre:,} blocks "
                          f"({n_pre * 64 / 1e6:.1f} M tokens), none of them fine-tuned on")
        return executed_note(
            f"profile `{self.profile}`, seeds {list(self.seeds)}, on {where}. Generation 0 is a "
            f"{model.n_layers}-layer OPT decoder of width {model.d_model} ({model.n_params() / 1e6:.2f} M parameters, "
            f"vocabulary {model.vocab_size:,} of {tokenizer}), started from {start} and fine-tuned on "
            f"{n_train:,} real 64-token blocks ({n_train * 64:,} tokens); {self.n_generations} generations follow "
            f"generation 0{sizes}.",
            data.notice if data is not None else None,
        )

    def run_config(self, data: LMData, setting: Setting, seed: int) -> LMRun:
        tokenizer = "gpt2" if self.init == "opt-125m" else f"bpe-{self.vocab_size}"
        return LMRun(
            data.corpus.name, data.corpus.release, tokenizer, self.n_train, self.n_valid, self.model(), self.init,
            dataclasses.replace(self.train, epochs=setting.epochs),
            dataclasses.replace(self.decode, repetition_penalty=setting.repetition_penalty), self.n_generations,
            Regime.parse(setting.regime), seed, self.pretraining if self.init == "pretrained" else None,
        )


def chapter_config(profile: str, seed: int = 0, corpus: str = "wikitext-2", init: str | None = None) -> LMChapter:
    """The sizes of chapter 4 at ``profile``: same code, different numbers. The profile's
    ``n`` chains run seeds ``seed, seed + 1, …, seed + n - 1``."""
    check_chapter(profile, seed)
    if profile == "ci":
        return LMChapter(
            profile, (seed, seed + 1), corpus, init or "pretrained", "ci", vocab_size=1024, n_train=128, n_valid=64,
            n_test=256,  # of 7,164: measuring all of them every generation built this page alone in 185 s, not 130
            n_generations=2, train=lm.TrainConfig(learning_rate=3e-3, warmup=0.05, weight_decay=0.01, batch_size=32),
            settings=(Setting("5 epochs, no original data", "replace", 2), Setting("10 epochs, 10% original data", "mix(0.1)", 3)),
            extra_settings=(dataclasses.replace(PENALTY_2, epochs=2), dataclasses.replace(ACCUMULATE, epochs=2)),
            pretraining=Pretraining(steps=60, segment=20, train=lm.TrainConfig(learning_rate=3e-3, warmup=0.05, batch_size=32)),
            instruments=Instruments(n_judged=128),
        )
    if profile == "cpu":
        return LMChapter(profile, (seed, seed + 1), corpus, init or "pretrained", extra_settings=(PENALTY_2, ACCUMULATE))
    return LMChapter(
        profile, tuple(seed + k for k in range(5)), corpus, init or "opt-125m", "opt-125m", n_train=0, n_valid=0,
        n_generations=9, extra_settings=(PENALTY_2, PENALTY_3, ACCUMULATE),
        # The released main.py's defaults (AdamW, 2e-5, batch 128); its schedule is in plt_model.py, not released.
        train=lm.TrainConfig(learning_rate=2e-5, batch_size=128), instruments=Instruments(n_judged=0),
    )


def run_chapter(chapter: LMChapter, data: LMData, *, settings=None, seeds=None, store=None, progress=True) -> dict:
    """Train and measure every (setting, seed): ``{(setting name, seed): (run config, analysis)}``.
    By default the main settings with every seed, then the extra settings with the first seed."""
    if settings is None:
        pairs = [(s, seed) for s in chapter.settings for seed in chapter.seeds]
        pairs += [(s, chapter.seed) for s in chapter.extra_settings]
    else:
        pairs = [(s, seed) for s in settings for seed in (seeds or chapter.seeds)]
    out = {}
    for setting, seed in pairs:
        config = chapter.run_config(data, setting, seed)
        run(config, data, store=store, progress=progress)
        out[setting.name, seed] = (config, analyse(config, chapter.instruments, data, store=store))
    return out


RECORD_COMMAND = "python -m collapse.lm_experiment --profile paper --seed K --record"


def load_recorded(profile: str, corpus: str, seed: int) -> dict | None:
    """A recorded run of ``profile`` (see :func:`main`), or None if none was recorded."""
    return records.load("lm", profile, corpus, seed)


def record_is_current(record: dict) -> bool:
    """Whether a record was made with the sizes ``chapter_config`` gives its profile today."""
    return records.is_current(record, chapter_config)


def main(argv: list[str] | None = None) -> None:
    """Run chapter 4's experiment at a profile outside the book (a GPU host), and record its summary.

    ``python -m collapse.lm_experiment --profile paper --seed 0 --record`` trains every setting of
    the profile, the ablations included, with that seed (resuming finished generations) and writes ``chapters/recorded/lm-paper-<corpus>-seed<k>.json``
    after each, so a run cut short keeps what it finished.
    """
    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--profile", default="paper", choices=("ci", "cpu", "paper"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", default="wikitext-2", choices=text.CORPORA)
    parser.add_argument("--init", choices=INITS, help="default: the profile's")
    parser.add_argument("--record", action="store_true", help="write chapters/recorded/lm-<profile>-<corpus>-seed<k>.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    distributed.initialize()  # several processes, when the environment names them (collapse.distributed)
    config_args = {"profile": args.profile, "seed": args.seed, "corpus": args.corpus, "init": args.init}
    chapter = chapter_config(**config_args)  # a bad profile or seed fails here, before any work
    path = records.path("lm", args.profile, args.corpus, args.seed)
    if args.record:
        records.check_writable(path)
    data = chapter.load_data()
    if data.notice:
        print("warning:", data.notice)
    record = records.new(chapter, config_args, corpus=data.corpus.name, release=data.corpus.release, settings={})
    for setting in chapter.settings + chapter.extra_settings:
        start = time.perf_counter()
        (config, analysis), = run_chapter(chapter, data, settings=[setting], seeds=[args.seed], progress=not args.quiet).values()
        record["settings"][setting.name] = {"seconds": time.perf_counter() - start, "run": to_dict(config), **summarise(analysis)}
        ppl = record["settings"][setting.name]["test_ppl"]
        print(f"{setting.name}: {record['settings'][setting.name]['seconds']:.0f} s, test ppl {ppl[0]:.1f} -> {ppl[-1]:.1f}",
              flush=True)
        if args.record:
            records.write(path, record)


if __name__ == "__main__":
    main()
