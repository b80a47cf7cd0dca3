"""Chapter 4's experiment: generations of OPT-style language models on WikiText-2.

Generation 0 is trained on real 64-token blocks; generation n+1 on the continuations
generation n writes for every block of its own training set (5-beam search, repetition
penalty, exactly 64 new tokens), mixed with real blocks as the data regime says. Every
generation starts from the same point (the published OPT-125m weights, or one random
initialisation) and keeps the epoch with the best validation perplexity.

:func:`run` goes through the shared resumable driver (:func:`collapse.runner.run_generations`),
so every finished generation's parameters, generated blocks and metrics are on disk and
an interrupted run resumes. :func:`analyse` measures every stored generation with fixed
instruments: the real test blocks, the generation-0 model as a judge of the generated
data, and one real prompt continued by every generation.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from . import decoding, distributed, lm, opt, records, text
from .chapter import check_chapter, executed_note
from .config import Regime, check_choice, check_int, check_seed, to_dict
from .paths import results_dir
from .runner import generation_zero_dir, require_finished, run_generations, stream_key
from .store import ResultsStore, RunDir, array_digest

VERSION = "1"  # of the runs: bump when training or generation changes
ANALYSIS_VERSION = "2"  # of the measurements: bump when analyse() changes (runs are kept)
INITS = ("scratch", "opt-125m")


@dataclasses.dataclass(frozen=True)
class LMRun:
    """One chain of language-model generations."""

    corpus: str = "wikitext-2"  # the corpus actually loaded
    release: str = "raw"  # which of its releases (raw, tokenized, nltk)
    tokenizer: str = "gpt2"  # "gpt2" (OPT's) or "bpe-<V>" (trained on the training split)
    n_train: int = 0  # real training blocks (0 = all of the split)
    n_valid: int = 0  # validation blocks that choose the best epoch (0 = all)
    model: opt.OPTConfig = opt.OPTConfig()  # architecture of every generation
    init: str = "opt-125m"  # every generation starts from these weights, or from one random init ("scratch")
    train: lm.TrainConfig = lm.TrainConfig()  # optimiser and epochs of every generation
    decode: decoding.DecodeConfig = decoding.DecodeConfig()  # how each generation writes the next one's data
    n_generations: int = 9  # generations after generation 0
    regime: Regime = Regime()  # what generation n+1 is trained on
    seed: int = 0  # every random number of the run derives from it

    def __post_init__(self) -> None:
        check_choice("init", self.init, INITS)
        check_int("n_train", self.n_train, minimum=0)  # negative would slice from the end
        check_int("n_valid", self.n_valid, minimum=0)
        check_int("n_generations", self.n_generations, minimum=0)
        check_seed("seed", self.seed)


@dataclasses.dataclass(frozen=True)
class LMData:
    corpus: text.Corpus
    tokenizer: object  # a ``tokenizers.Tokenizer``
    train: np.ndarray  # blocks, int32 N × 64
    valid: np.ndarray
    test: np.ndarray
    notice: str | None  # what the reader must know about the data, if anything


def tokenizer_path(corpus: text.Corpus, vocab_size: int) -> Path:
    """The cached BPE of this corpus's training text (its digest is in the name: other text, other file)."""
    return results_dir() / "tokenizers" / f"{corpus.name}-{corpus.release}-bpe{vocab_size}-{text.text_digest(corpus.train)}.json"


def load_data(corpus_name: str, *, init: str, vocab_size: int, block_size: int = 64) -> LMData:
    """Blocks of the corpus (or, with a notice, the other one), with OPT's tokenizer or a trained BPE."""
    corpus, notice = text.load_or_fallback(corpus_name)
    if corpus.name == "wikitext-2" and not corpus.verified:  # said on the page (Brown has no published checksum)
        unverified = (f"The {corpus.name} files this page read ({corpus.source}) do not match the published checksums "
                      "(a test fixture, a modified copy, or a copy put there by hand): its numbers are not the "
                      "published data's.")
        notice = unverified if notice is None else f"{notice} {unverified}"
    if init == "opt-125m":
        tokenizer = text.gpt2_tokenizer(opt.pretrained_folder())
    else:
        tokenizer = text.train_bpe(corpus.train, vocab_size, tokenizer_path(corpus, vocab_size))
    blocks = {s: text.to_blocks(tokenizer, getattr(corpus, s), bos_id=2, block_size=block_size) for s in text.SPLITS}
    short = [s for s, b in blocks.items() if len(b) == 0]
    if short:  # fail here, before any training, not after generation 0
        raise text.CorpusDamaged(f"the {', '.join(short)} split of {corpus.source} has fewer than {block_size} tokens")
    return LMData(corpus, tokenizer, blocks["train"], blocks["valid"], blocks["test"], notice)


def initial_params(config: LMRun) -> opt.OPTParams:
    """Where every generation's training starts: OPT-125m's weights, or the seed's random init."""
    if config.init == "opt-125m":
        model, params, _ = opt.load_pretrained()
        if model != dataclasses.replace(config.model, dropout=model.dropout):
            raise ValueError(f"the run's model {config.model} is not OPT-125m's {model}")
        return params
    return opt.init(config.model, stream_key(config.seed, "lm/init"))


def data_digest(config: LMRun, data: LMData) -> str:
    """A hash of every block a run of ``config`` reads: its real training, validation and test blocks."""
    return array_digest(data.train[: config.n_train or None], data.valid[: config.n_valid or None], data.test)


def run_folder(config: LMRun, data: LMData, store: ResultsStore | None = None) -> RunDir:
    """Where the run of ``config`` on ``data`` keeps its generations (keyed by both)."""
    return (store or ResultsStore()).run_dir("lm", VERSION, {"run": config, "data": data_digest(config, data)})


def run(config: LMRun, data: LMData, *, store: ResultsStore | None = None, progress: bool = True) -> list[dict]:
    """Train (or load) generations 0..n_generations; returns each generation's metrics."""
    store = store or ResultsStore()
    real = data.train[: config.n_train or None]
    valid = data.valid[: config.n_valid or None]
    run_dir = run_folder(config, data, store)
    history = {}

    def train(key, blocks):
        if "start" not in history:  # loaded once, and only if a generation is still to train
            history["start"] = initial_params(config)
        params, history["last"] = lm.train(config.model, config.train, key, blocks, valid,
                                           init_params=history["start"], progress=progress)
        return params

    def generate(key, params, blocks):
        if len(blocks) > len(real):  # accumulate: continue as many blocks as the real set has
            blocks = blocks[np.sort(np.asarray(jax.random.choice(key, len(blocks), (len(real),), replace=False)))]
        return decoding.continue_blocks(params, config.model, config.decode, blocks, progress=progress,
                                        desc="writing the next generation's data")

    def evaluate(params, samples):
        return {**history["last"], "test_ppl": lm.perplexity(params, config.model, data.test)}

    metrics = run_generations(
        run_dir, seed=config.seed, real_data=real, n_generations=config.n_generations, regime=config.regime,
        train=train, generate=generate, evaluate=evaluate, progress=progress,
        zero_shared_with=generation_zero_dir(store, "lm", VERSION, config, data_digest(config, data)),
    )
    return metrics


# --------------------------------------------------------------------------- measurements


def distinct_n(blocks_NxT: np.ndarray, n: int) -> float:
    """Distinct n-grams over all n-grams of the blocks (within blocks): 1 = no n-gram repeats anywhere."""
    grams = np.lib.stride_tricks.sliding_window_view(blocks_NxT, n, axis=1).reshape(-1, n)
    return len(np.unique(grams, axis=0)) / len(grams)


def repetition_rate(blocks_NxT: np.ndarray, n: int = 3) -> float:
    """Share of n-grams that already occurred earlier in the same block (loops, stutters)."""
    repeated = total = 0
    for row in blocks_NxT:
        seen = set()
        for gram in zip(*(row[i:] for i in range(n))):
            repeated += gram in seen
            seen.add(gram)
            total += 1
    return repeated / total


def unigram_entropy(blocks_NxT: np.ndarray, vocab_size: int) -> float:
    """Entropy (bits) of the token frequencies of the blocks."""
    counts = np.bincount(blocks_NxT.ravel(), minlength=vocab_size).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))  # max: no "-0.0" for a single token


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
    generation's data), ``distinct_1/2/3``, ``repetition``, ``entropy`` (G,), ``examples``
    (G × n_examples × 64 tokens), ``rare`` (mask of test blocks), ``valid_ppl`` and
    ``train_loss`` (G × epochs), ``best_epoch`` (G,)."""
    store = store or ResultsStore()
    key = _analysis_key(config, instruments, data)
    run_dir = run_folder(config, data, store)
    real = data.train[: config.n_train or None]

    def compute():
        require_finished(run_dir, config.n_generations)
        judge = run_dir.load_generation(0)["params"]
        prompts = data.test[: instruments.n_examples]
        out = {k: [] for k in ("test_nll", "judged_nll", "distinct_1", "distinct_2", "distinct_3", "repetition",
                               "entropy", "examples", "valid_ppl", "train_loss", "best_epoch")}
        for n in range(config.n_generations + 1):
            record = run_dir.load_generation(n)
            samples = record["samples"][: instruments.n_judged or None]
            out["test_nll"].append(lm.sequence_nll(record["params"], config.model, data.test))
            out["judged_nll"].append(lm.sequence_nll(judge, config.model, samples))
            for k in (1, 2, 3):
                out[f"distinct_{k}"].append(distinct_n(samples, k))
            out["repetition"].append(repetition_rate(samples))
            out["entropy"].append(unigram_entropy(samples, config.model.vocab_size))
            out["examples"].append(np.asarray(decoding.generate(record["params"], config.model, config.decode, prompts)))
            for k in ("valid_ppl", "train_loss", "best_epoch"):
                out[k].append(record["metrics"][k])
        result = {k: np.asarray(v) for k, v in out.items()}
        result["rare"] = rare_token_blocks(real, data.test, config.model.vocab_size, instruments.rare_fraction)
        result["real_judged_nll"] = lm.sequence_nll(judge, config.model, real[: instruments.n_judged or None])
        for k in (1, 2, 3):
            result[f"real_distinct_{k}"] = distinct_n(real, k)
        result["real_repetition"] = repetition_rate(real)
        result["real_entropy"] = unigram_entropy(real, config.model.vocab_size)
        return result

    return store.cached("lm-analysis", ANALYSIS_VERSION, key, compute)


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
        "rare_ppl": floats(np.exp(test_nll[:, rare].mean(axis=1))),
        "common_ppl": floats(np.exp(test_nll[:, ~rare].mean(axis=1))),
        "judged_ppl_median": floats(np.exp(np.median(analysis["judged_nll"], axis=1))),
        **{k: floats(analysis[k]) for k in ("distinct_1", "distinct_2", "distinct_3", "repetition", "entropy", "best_epoch")},
    }


# --------------------------------------------------------------------------- the chapter


@dataclasses.dataclass(frozen=True)
class Setting:
    """One of the paper's two protocols."""

    name: str  # what the chapter calls it
    regime: str  # replace / accumulate / mix(alpha)
    epochs: int  # training epochs of every generation


PAPER_SETTINGS = (
    Setting("5 epochs, no original data", "replace", 5),
    Setting("10 epochs, 10% original data", "mix(0.1)", 10),
)


@dataclasses.dataclass(frozen=True)
class LMChapter:
    """What chapter 4 runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    seeds: tuple[int, ...] = (0,)  # one chain per seed and setting
    corpus: str = "wikitext-2"  # the main corpus (wikitext-2 or brown)
    compare_corpus: str = "brown"  # the second corpus, under the first setting, first seed
    init: str = "scratch"  # "opt-125m" (the paper: fine-tuning) or "scratch"
    model_preset: str = "cpu"  # opt.PRESETS name (opt-125m's sizes when init="opt-125m")
    vocab_size: int = 4096  # of the BPE trained when init="scratch"
    n_train: int = 1024  # real training blocks (0 = all)
    n_valid: int = 256  # validation blocks (0 = all)
    n_generations: int = 5  # after generation 0
    settings: tuple[Setting, ...] = PAPER_SETTINGS
    train: lm.TrainConfig = lm.TrainConfig(learning_rate=2e-3, warmup=0.05, weight_decay=0.01, batch_size=64)  # epochs come from the setting
    decode: decoding.DecodeConfig = decoding.DecodeConfig()  # the paper's: 5 beams, penalty 3.0, 64 new tokens
    instruments: Instruments = Instruments()

    def __post_init__(self) -> None:
        check_chapter(self.profile, self.seeds[0] if self.seeds else 0)
        for seed in self.seeds:
            check_seed("seeds[...]", seed)
        check_choice("corpus", self.corpus, text.CORPORA)
        check_choice("compare_corpus", self.compare_corpus, text.CORPORA)
        check_choice("init", self.init, INITS)
        check_choice("model_preset", self.model_preset, tuple(opt.PRESETS))
        check_int("vocab_size", self.vocab_size, minimum=260)  # 256 bytes + 4 special tokens
        check_int("n_train", self.n_train, minimum=0)
        check_int("n_valid", self.n_valid, minimum=0)
        check_int("n_generations", self.n_generations, minimum=1)
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        for setting in self.settings:
            Regime.parse(setting.regime)

    @property
    def seed(self) -> int:
        """The page's seed: the first of :attr:`seeds`."""
        return self.seeds[0]

    def describe(self, data: LMData | None = None) -> str:
        model = opt.OPTConfig() if self.init == "opt-125m" else opt.preset(self.model_preset, self.vocab_size)
        tokenizer = "GPT-2" if self.init == "opt-125m" else "byte-level BPE trained on the training split"
        start = ("the published OPT-125m weights (fine-tuning, as the paper)" if self.init == "opt-125m" else
                 "one random initialisation (training from scratch; the paper fine-tunes OPT-125m)")
        if data is None:
            where, n_train, sizes = f"{self.corpus}", self.n_train, ""
        else:
            release = {"raw": "the raw release (`wikitext-2-raw-v1`, the paper's)",
                       "tokenized": "the tokenized release (`wikitext-2-v1`: rare words replaced by `<unk>`; the paper "
                                    "used the raw one)",
                       "nltk": "NLTK's tagged files, tags removed"}[data.corpus.release]
            where, n_train = f"{data.corpus.name}, {release}", len(data.train[: self.n_train or None])
            sizes = (f"; the corpus's whole training split is {len(data.train):,} blocks here. Test perplexity is "
                     f"measured on all {len(data.test):,} blocks of the real test split")
        return executed_note(
            f"profile `{self.profile}`, seeds {list(self.seeds)}, on {where}. Every generation trains a "
            f"{model.n_layers}-layer OPT decoder of width {model.d_model} ({model.n_params() / 1e6:.2f} M parameters, "
            f"vocabulary {model.vocab_size:,} of the {tokenizer} tokenizer) from {start} on {n_train:,} real 64-token "
            f"blocks ({n_train * 64:,} tokens); {self.n_generations} generations follow generation 0{sizes}.",
            data.notice if data is not None else None,
        )

    def run_config(self, data: LMData, setting: Setting, seed: int) -> LMRun:
        if self.init == "opt-125m":
            model, tokenizer = opt.OPTConfig(), "gpt2"
        else:
            model, tokenizer = opt.preset(self.model_preset, self.vocab_size), f"bpe-{self.vocab_size}"
        return LMRun(
            data.corpus.name, data.corpus.release, tokenizer, self.n_train, self.n_valid, model, self.init,
            dataclasses.replace(self.train, epochs=setting.epochs), self.decode, self.n_generations,
            Regime.parse(setting.regime), seed,
        )


def chapter_config(profile: str, seed: int = 0, corpus: str = "wikitext-2", init: str | None = None) -> LMChapter:
    """The sizes of chapter 4 at ``profile``: same code, different numbers. The profile's
    ``n`` chains run seeds ``seed, seed + 1, …, seed + n - 1``."""
    check_chapter(profile, seed)
    other = "brown" if corpus == "wikitext-2" else "wikitext-2"
    if profile == "ci":
        return LMChapter(
            profile, (seed,), corpus, other, init or "scratch", "ci", vocab_size=1024, n_train=128, n_valid=64,
            n_generations=2, train=lm.TrainConfig(learning_rate=3e-3, warmup=0.05, weight_decay=0.01, batch_size=32),
            decode=decoding.DecodeConfig(max_new_tokens=64, min_new_tokens=64, num_beams=5),
            settings=(Setting("5 epochs, no original data", "replace", 2), Setting("10 epochs, 10% original data", "mix(0.1)", 3)),
            instruments=Instruments(n_judged=128),
        )
    if profile == "cpu":
        return LMChapter(profile, (seed,), corpus, other, init or "scratch")
    return LMChapter(
        profile, tuple(seed + k for k in range(5)), corpus, other, init or "opt-125m", "opt-125m", n_train=0, n_valid=0,
        n_generations=9, train=lm.TrainConfig(learning_rate=5e-5, batch_size=128), instruments=Instruments(n_judged=0),
    )


def run_chapter(chapter: LMChapter, data: LMData, *, settings=None, seeds=None, store=None, progress=True) -> dict:
    """Train and measure every (setting, seed): ``{(setting name, seed): (run config, analysis)}``."""
    out = {}
    for setting in settings or chapter.settings:
        for seed in seeds or chapter.seeds:
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

    ``python -m collapse.lm_experiment --profile paper --seed 0 --record`` trains both settings
    (resuming finished generations) and writes ``chapters/recorded/lm-paper-<corpus>-seed<k>.json``
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
    data = load_data(chapter.corpus, init=chapter.init, vocab_size=chapter.vocab_size)
    if data.notice:
        print("warning:", data.notice)
    record = records.new(chapter, config_args, corpus=data.corpus.name, release=data.corpus.release, settings={})
    for setting in chapter.settings:
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
