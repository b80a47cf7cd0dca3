"""Chapter 3's experiment: generations of VAEs on MNIST, and what they lose in the tails.

:func:`run` trains generations 0..G through the shared resumable driver
(:func:`collapse.runner.run_generations`): every finished generation's parameters,
samples and metrics are in the run directory, and an interrupted run resumes at the
next unfinished generation. :func:`analyse` then measures every stored generation
with instruments fixed once: the generation-0 encoder, a classifier trained on real
labels, the real test images split into head and tail by their generation-0 ELBO, and
a fixed set of latent draws for the sample grids.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import classifier, distributed, records, vae
from .config import Regime, check_choice, check_int, check_seed, check_unit_interval
from .chapter import check_chapter, executed_note
from .mnist import ChapterData, Images, load_data
from .runner import generation_zero_dir, require_finished, run_generations, stream_key
from .store import ResultsStore, RunDir, array_digest

VERSION = "1"

# How generation n + 1 draws its training images from generation n:
# "fixed": one set of n_train images, decoded once and stored as 8-bit grey levels (this book's);
# "per-batch": fresh z ~ N(0, I) decoded inside every batch, never quantised: about
#   epochs × n_train images per generation (the authors' notebook, cell 4; only under replace).
SAMPLINGS = ("fixed", "per-batch")
PER_BATCH = " (per-batch)"  # the suffix that names a run with per-batch sampling: "replace (per-batch)"


def parse_run(name: str) -> tuple[Regime, str]:
    """A run's name on the page and in records → (regime, sampling): ``"mix(0.1)"`` or
    ``"replace (per-batch)"``."""
    text = str(name).strip()
    sampling = "per-batch" if text.endswith(PER_BATCH) else "fixed"
    regime = Regime.parse(text.removesuffix(PER_BATCH))
    check_sampling(regime, sampling)
    return regime, sampling


def check_sampling(regime: Regime, sampling: str) -> None:
    """``sampling`` is one of SAMPLINGS, and per-batch sampling comes only with ``replace``."""
    check_choice("sampling", sampling, SAMPLINGS)
    if sampling == "per-batch" and regime != Regime():
        raise ValueError(f"sampling='per-batch' draws every image from the previous generation, so it needs "
                         f"regime 'replace', not {str(regime)!r}")


def run_name(regime: Regime | str, sampling: str = "fixed") -> str:
    """The inverse of :func:`parse_run`."""
    return str(Regime.parse(regime)) + (PER_BATCH if sampling == "per-batch" else "")


@dataclasses.dataclass(frozen=True)
class VAERun:
    """One chain of VAE generations: data, model, number of generations, regime, seed."""

    dataset: str = "mnist"  # the data set actually loaded (mnist, fashion-mnist, sklearn-digits)
    n_train: int = 60_000  # real training images (the first n of the training split)
    model: vae.VAEConfig = vae.VAEConfig()  # architecture and optimiser of every generation
    n_generations: int = 20  # generations after generation 0
    regime: Regime = Regime()  # what generation n+1 is trained on
    seed: int = 0  # every random number of the run derives from it
    sampling: str = "fixed"  # one of SAMPLINGS: how generation n+1's images are drawn from generation n

    def __post_init__(self) -> None:
        check_int("n_train", self.n_train, minimum=1)
        check_int("n_generations", self.n_generations, minimum=0)
        check_seed("seed", self.seed)
        check_sampling(self.regime, self.sampling)
        if self.n_train < self.model.batch_size:
            raise ValueError(f"n_train={self.n_train} is smaller than one batch ({self.model.batch_size})")


def run_folder(config: VAERun, real_train: np.ndarray, store: ResultsStore | None = None) -> RunDir:
    """Where the run of ``config`` on these real images keeps its generations (keyed by both)."""
    return (store or ResultsStore()).run_dir("vae", VERSION, {"run": config, "data": array_digest(real_train)})


def run(config: VAERun, real_train: np.ndarray, *, store: ResultsStore | None = None, progress: bool = True) -> list[dict]:
    """Train (or load) generations 0..n_generations; returns each generation's metrics."""
    store = store or ResultsStore()
    if len(real_train) != config.n_train:
        raise ValueError(f"{len(real_train)} real images given, the config says n_train={config.n_train}")
    run_dir = run_folder(config, real_train, store)
    losses = {}

    def train(key, data, previous):
        teacher = previous if config.sampling == "per-batch" else None  # None for generation 0: real data
        params, losses["epochs"] = vae.train(config.model, key, None if teacher is not None else data,
                                             n_real=config.n_train, progress=progress, teacher=teacher)
        return params

    def generate(key, params, data):
        # Under per-batch sampling these images are not trained on; they are what analyse() measures.
        return vae.generate(params, key, config.n_train, config.model)

    def evaluate(params, samples):
        return {"train_loss": [float(x) for x in losses["epochs"]], "n_train_images": int(len(samples))}

    metrics = run_generations(
        run_dir, seed=config.seed, real_data=real_train, n_generations=config.n_generations,
        regime=config.regime, train=train, generate=generate, evaluate=evaluate, progress=progress,
        # generation 0 trains on real data whatever the sampling, so every run of these data shares it
        zero_shared_with=generation_zero_dir(store, "vae", VERSION, dataclasses.replace(config, sampling="fixed"),
                                             array_digest(real_train)),
        train_on_previous=True,
    )
    return metrics


# --------------------------------------------------------------------------- measurements


def class_entropy(counts: np.ndarray) -> float:
    """Entropy (nats) of a histogram of class labels."""
    p = counts / counts.sum()
    p = p[p > 0]
    return float(max(0.0, -(p * np.log(p)).sum()))  # max: no "-0.0" for a single class


def classes_kept(counts, min_share: float = 0.01) -> np.ndarray:
    """Indices of the classes that hold at least ``min_share`` of a label histogram."""
    counts = np.asarray(counts)
    return np.flatnonzero(counts / counts.sum() >= min_share)


@jax.jit
def _nearest_neighbour_distances(x_NxD):
    sq = jnp.sum(x_NxD**2, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x_NxD @ x_NxD.T
    d2 = jnp.where(jnp.eye(x_NxD.shape[0], dtype=bool), jnp.inf, d2)
    return jnp.sqrt(jnp.maximum(jnp.min(d2, axis=1), 0.0))


def diversity(images_uint8: np.ndarray, n: int = 2000) -> dict[str, float]:
    """Mean per-pixel variance, and mean Euclidean distance (pixels in [0, 1]) to the nearest other image among the first ``n``."""
    x = images_uint8.reshape(len(images_uint8), -1).astype(np.float32) / 255.0
    nn = _nearest_neighbour_distances(jnp.asarray(x[:n]))
    return {"pixel_variance": float(x.var(axis=0).mean()), "nn_distance": float(nn.mean())}


@dataclasses.dataclass(frozen=True)
class Instruments:
    """What every generation is measured with, fixed once per chapter."""

    n_latent_samples: int = 5000  # generated images encoded by the generation-0 encoder
    tail_fraction: float = 0.1  # the least likely real test images under generation 0
    elbo_draws: int = 2  # reparameterised draws per ELBO estimate (each averages over thousands of images)
    n_grid: int = 32  # fixed latent draws decoded by every generation
    n_diversity: int = 2000  # samples in the nearest-neighbour measure
    classifier: classifier.ClassifierConfig = classifier.ClassifierConfig()  # labels the samples

    def __post_init__(self) -> None:
        check_int("n_latent_samples", self.n_latent_samples, minimum=2)
        check_unit_interval("tail_fraction", self.tail_fraction)
        check_int("elbo_draws", self.elbo_draws, minimum=1)
        check_int("n_grid", self.n_grid, minimum=1)
        check_int("n_diversity", self.n_diversity, minimum=2)


def train_classifier(config: classifier.ClassifierConfig, real: Images, seed: int, store: ResultsStore | None = None):
    """The label classifier of a data set (stored: trained once per config)."""
    store = store or ResultsStore()
    key = {"dataset": real.dataset, "data": array_digest(real.images, real.labels), "config": config, "seed": seed}

    def compute():
        params = classifier.train(config, stream_key(seed, "vae/classifier"), real.images, real.labels, len(real.classes))
        return {f"{i}{name}": np.asarray(a) for i, layer in enumerate(params) for name, a in zip("wb", layer)}

    arrays = store.cached("classifier", VERSION, key, compute)
    return [classifier.Layer(jnp.asarray(arrays[f"{i}w"]), jnp.asarray(arrays[f"{i}b"])) for i in range(len(arrays) // 2)]


# A sample counts as a recognisable image of its class when the real-data classifier gives
# that class more than this probability (compared with the same share for real test images).
CONFIDENT = 0.9


def analyse(
    config: VAERun,
    instruments: Instruments,
    real_train: np.ndarray,
    real_test: Images,
    label_params,
    *,
    store: ResultsStore | None = None,
) -> dict[str, np.ndarray]:
    """Measure every generation of a finished run (stored under run and instruments).

    Returns arrays over generations ``G = n_generations + 1``: ``latent_sigma`` (G,),
    ``latents`` (G × n × L, generation-0 encoder means of each generation's samples),
    ``class_counts`` (G × classes), ``confident_share`` (G,: share of samples the classifier
    labels with probability > ``CONFIDENT``; ``real_confident_share`` for real test images),
    ``test_nelbo`` (G × test images), ``tail`` (mask of
    test images), ``grid`` (G × n_grid × H × W), ``pixel_variance`` and ``nn_distance``
    (G,), ``train_loss`` (G × epochs).
    """
    store = store or ResultsStore()
    run_dir = run_folder(config, real_train, store)
    key = {"run": run_dir.path.name, "instruments": instruments, "test": array_digest(real_test.images, real_test.labels),
           "labeller": array_digest(*jax.tree.leaves(label_params))}

    def compute():
        require_finished(run_dir, config.n_generations)
        records = [run_dir.load_generation(n) for n in range(config.n_generations + 1)]
        encoder0 = records[0]["params"]
        keys = jax.random.split(stream_key(config.seed, "vae/analysis"), 3)
        z_grid = jax.random.normal(keys[0], (instruments.n_grid, config.model.latent_dim))
        out = {k: [] for k in ("latents", "class_counts", "confident_share", "test_nelbo", "grid", "pixel_variance",
                               "nn_distance", "train_loss")}
        for record in records:
            samples = record["samples"]
            out["latents"].append(vae.encode_means(encoder0, samples[: instruments.n_latent_samples]))
            labels = classifier.predict(label_params, samples)
            out["class_counts"].append(np.bincount(labels, minlength=len(real_test.classes)))
            out["confident_share"].append(np.mean(classifier.confidence(label_params, samples) > CONFIDENT))
            out["test_nelbo"].append(vae.negative_elbos(record["params"], keys[1], real_test.images, instruments.elbo_draws))
            out["grid"].append(vae.decode_images(record["params"], z_grid, config.model.image_shape))
            for name, value in diversity(samples, instruments.n_diversity).items():
                out[name].append(value)
            out["train_loss"].append(record["metrics"]["train_loss"])
        result = {k: np.asarray(v) for k, v in out.items()}
        result["latent_sigma"] = result["latents"].std(axis=1).mean(axis=1)
        # The tail is chosen with independent draws: choosing and scoring with the same noisy
        # estimate would make the chosen tail look worse at generation 0 than it is, and
        # every later generation look better (regression to the mean).
        nelbo0 = vae.negative_elbos(encoder0, keys[2], real_test.images, instruments.elbo_draws)
        result["tail"] = nelbo0 >= np.quantile(nelbo0, 1.0 - instruments.tail_fraction)
        real = diversity(real_test.images, instruments.n_diversity)
        result["real_pixel_variance"], result["real_nn_distance"] = real["pixel_variance"], real["nn_distance"]
        result["real_confident_share"] = np.mean(classifier.confidence(label_params, real_test.images) > CONFIDENT)
        result["real_latent_sigma"] = vae.encode_means(encoder0, real_test.images[: instruments.n_latent_samples]).std(0).mean()
        return result

    return store.cached("vae-analysis", VERSION, key, compute)


def classifier_accuracy(label_params, real_test: Images) -> float:
    return float((classifier.predict(label_params, real_test.images) == real_test.labels).mean())


# --------------------------------------------------------------------------- the chapter


@dataclasses.dataclass(frozen=True)
class VAEChapter:
    """What chapter 3 runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    seed: int = 0  # base seed of every run in the chapter
    dataset: str = "mnist"  # the main data set (mnist or fashion-mnist)
    n_train: int = 10_000  # real training images
    n_test: int = 10_000  # real test images for the ELBO split
    model: vae.VAEConfig = vae.VAEConfig(capacity=32, batch_size=128, epochs=5)  # every generation's VAE
    n_generations: int = 5  # generations after generation 0
    # side by side: regimes, and "replace (per-batch)" for the authors' sampling (see SAMPLINGS)
    regimes: tuple[str, ...] = ("replace", "accumulate", "mix(0.1)")
    compare_dataset: str = "fashion-mnist"  # the second data set, under the first regime
    instruments: Instruments = Instruments()

    def __post_init__(self) -> None:
        check_chapter(self.profile, self.seed)
        check_choice("dataset", self.dataset, ("mnist", "fashion-mnist"))
        check_choice("compare_dataset", self.compare_dataset, ("mnist", "fashion-mnist"))
        check_int("n_test", self.n_test, minimum=10)
        for name in self.regimes:
            parse_run(name)

    @property
    def seeds(self) -> tuple[int, ...]:
        return (self.seed,)

    def describe(self, data: ChapterData | None = None) -> str:
        n_train = self.n_train if data is None else min(self.n_train, len(data.train.images))
        h, w = self.model.image_shape if data is None else data.train.images.shape[1:]
        where = f" on `{data.train.dataset}`" if data is not None else ""
        n_test = self.n_test if data is None else len(data.test.images)
        return executed_note(
            f"profile `{self.profile}` and seed `{self.seed}`{where}: {n_train:,} real training images of {h}×{w} "
            f"pixels, {self.n_generations} generations after generation 0, VAEs of capacity {self.model.capacity} and "
            f"latent dimension {self.model.latent_dim}, {self.model.epochs} epochs of batch {self.model.batch_size} "
            f"per generation, and {n_test:,} real test images.",
            data.notice if data is not None else None,
        )

    def run_config(self, dataset: str, name: str, n_train: int | None = None, image_shape=None) -> VAERun:
        """The run called ``name`` (a regime, or ``"replace (per-batch)"``) on ``dataset``."""
        model = self.model if image_shape is None else dataclasses.replace(self.model, image_shape=tuple(image_shape))
        regime, sampling = parse_run(name)
        return VAERun(dataset, n_train or self.n_train, model, self.n_generations, regime, self.seed, sampling)


def chapter_config(profile: str, seed: int = 0, dataset: str = "mnist") -> VAEChapter:
    """The sizes of chapter 3 at ``profile``: same code, different numbers."""
    check_chapter(profile, seed)
    other = "fashion-mnist" if dataset == "mnist" else "mnist"
    if profile == "ci":
        return VAEChapter(
            profile, seed, dataset, n_train=1024, n_test=1000, compare_dataset=other,
            model=vae.VAEConfig(capacity=8, batch_size=128, epochs=2), n_generations=2,
            regimes=("replace", "accumulate", "mix(0.1)", "replace" + PER_BATCH),
            instruments=Instruments(n_latent_samples=1000, elbo_draws=1, n_grid=16, n_diversity=500,
                                    classifier=classifier.ClassifierConfig(hidden=128, epochs=2)),
        )
    if profile == "cpu":
        # Per-batch sampling is left out here: on 2 cores it adds about 27 % to a generation's
        # training (5.55 against 4.36 s an epoch, measured) and a fourth chain to a page that
        # already takes 13 minutes; the recorded `paper` runs hold it.
        return VAEChapter(profile, seed, dataset, compare_dataset=other)
    return VAEChapter(
        profile, seed, dataset, n_train=60_000, n_test=10_000, compare_dataset=other,
        model=vae.VAEConfig(), n_generations=20, instruments=Instruments(classifier=classifier.ClassifierConfig(epochs=10)),
        regimes=("replace", "accumulate", "mix(0.1)", "replace" + PER_BATCH),
    )


def run_chapter(
    chapter: VAEChapter, data: ChapterData, *, regimes=None, store: ResultsStore | None = None, progress: bool = True,
) -> tuple[dict[str, VAERun], dict[str, dict], list]:
    """Train and measure every regime of ``chapter`` on ``data``: (runs, analyses, classifier)."""
    n_train = min(chapter.n_train, len(data.train.images))
    labeller = train_classifier(chapter.instruments.classifier, data.train, chapter.seed, store)
    runs, analyses = {}, {}
    for name in regimes or chapter.regimes:
        name = run_name(*parse_run(name))
        runs[name] = chapter.run_config(data.train.dataset, name, n_train, data.train.images.shape[1:])
        run(runs[name], data.train.images[:n_train], store=store, progress=progress)
        analyses[name] = analyse(runs[name], chapter.instruments, data.train.images[:n_train], data.test, labeller,
                                 store=store)
    return runs, analyses, labeller


def summarise(analysis: dict[str, np.ndarray]) -> dict[str, list | float]:
    """The per-generation numbers of an analysis, small enough to record as JSON."""
    nelbo, tail = analysis["test_nelbo"], analysis["tail"]
    floats = lambda a: [float(x) for x in np.ravel(a)]  # noqa: E731
    return {
        "latent_sigma": floats(analysis["latent_sigma"]),
        "real_latent_sigma": float(analysis["real_latent_sigma"]),
        "class_counts": [[int(c) for c in row] for row in analysis["class_counts"]],
        "label_entropy": [class_entropy(c) for c in analysis["class_counts"]],
        "confident_share": floats(analysis["confident_share"]),
        "real_confident_share": float(analysis["real_confident_share"]),
        "tail_nelbo": floats(nelbo[:, tail].mean(axis=1)),
        "head_nelbo": floats(nelbo[:, ~tail].mean(axis=1)),
        "pixel_variance": floats(analysis["pixel_variance"]),
        "nn_distance": floats(analysis["nn_distance"]),
        "real_pixel_variance": float(analysis["real_pixel_variance"]),
        "real_nn_distance": float(analysis["real_nn_distance"]),
        "final_train_loss": floats(np.asarray(analysis["train_loss"])[:, -1]),
        # the authors' statistic, when the analysis kept the 100 images it takes
        **({"latent_spread_pooled": floats(pooled_latent_spread(analysis["latents"]))}
           if np.shape(analysis["latents"])[1] >= PAPER_SPREAD_IMAGES else {}),
    }


# --------------------------------------------------------------------------- tail and head


def tail_versus_head(tail_change_S, head_change_S) -> str:
    """What the change of mean −ELBO (nats, generation 0 to the last) of the real tail and
    head says, over one or more seeds, no more strongly than the numbers do.

    Nats are per image: an image with more ink carries more nats, and the tail holds such
    images, so more nats lost is not by itself "forgotten first"; percentages of the
    starting level are no better (they depend on where each part started). The verdict
    says only which part lost more likelihood.
    """
    tail, head = np.atleast_1d(tail_change_S), np.atleast_1d(head_change_S)
    every = "in every seed" if len(tail) > 1 else "in this run"
    if np.all(tail > head):
        return f"the tail lost more nats per image than the head {every}"
    if np.all(tail < head):
        return f"the tail lost fewer nats per image than the head {every}"
    return "the seeds do not agree on whether the tail or the head lost more nats per image"


def least_likely_class_shares(test_nelbo_GxN: np.ndarray, labels_N: np.ndarray, n_classes: int,
                              fraction: float = 0.1) -> np.ndarray:
    """Per generation, the share of each class among the ``fraction`` of real test images that
    generation finds least likely (highest −ELBO): ``G × classes``, rows summing to 1.

    A rank within each generation, so it does not depend on the scale of the −ELBO.
    """
    nelbo = np.asarray(test_nelbo_GxN)
    k = max(1, int(round(fraction * nelbo.shape[1])))
    worst = np.argsort(-nelbo, axis=1, kind="stable")[:, :k]
    return np.stack([np.bincount(labels_N[w], minlength=n_classes) / k for w in worst])


def forgotten_classes(least_likely_GxC: np.ndarray, sample_counts_GxC: np.ndarray, alpha: float = 0.05) -> dict:
    """Are the real images a late generation finds least likely those of the classes it stopped drawing?

    Across classes, the Spearman correlation between the change (generation 0 to the last)
    of each class's share of the generation's own samples and the change of its share among
    the least likely real test images. Forgetting a class predicts a negative correlation.
    Returns ``rho``, ``p`` (two-sided) and a verdict computed from them at level ``alpha``.
    """
    from scipy import stats

    samples = np.asarray(sample_counts_GxC, float)
    sample_share = samples / samples.sum(1, keepdims=True)
    drawn = sample_share[-1] - sample_share[0]
    least = least_likely_GxC[-1] - least_likely_GxC[0]
    rho, p = stats.spearmanr(drawn, least)
    rho, p = float(rho), float(p)
    if not np.isfinite(rho):
        verdict = "the shares did not change, so there is nothing to relate"
    elif p < alpha and rho < 0:
        verdict = ("the classes the generations drew less of became more common among the real images the last "
                   "generation finds least likely")
    elif p < alpha:
        verdict = ("the classes the generations drew *more* of became more common among the least likely real "
                   "images, the opposite of forgetting them")
    else:
        verdict = f"no clear relation between the classes drawn less and the least likely real images at level {alpha:g}"
    return {"rho": rho, "p": p, "verdict": verdict, "drawn_change": drawn, "least_likely_change": least}


# --------------------------------------------------------------------------- the authors' latent spread

# Source: the authors' released notebook (Zakahler/curse_recurse, VAE_experiments.ipynb).
# * cell 14 (commented out) keeps ``mu_sig``: (mean, std) of the latents for five runs;
#   these are the stds.
# * cell 9: entry i is ``vae_gen`` of loop iteration i, trained on images decoded by the
#   previous model (``vae_init``, trained on MNIST, for i = 0), so entry i is generation i + 1
#   in this book's numbering, where generation 0 is fitted to real data.
# * cells 9 and 13: the statistic is ``np.std`` of the generation-0 encoder's means of 100
#   images decoded from fresh N(0, I) latents by that generation, all 20 coordinates pooled.
PAPER_LATENT_SPREAD = (
    (0.6995303, 0.60134965, 0.5541111, 0.48931533, 0.46653777),
    (0.69527394, 0.59368867, 0.5296458, 0.48430806, 0.4310458),
    (0.6922824, 0.60909194, 0.53359216, 0.4891546, 0.45829764),
    (0.67841727, 0.605033, 0.52345085, 0.48296788, 0.42802373),
    (0.67357385, 0.60761327, 0.5273319, 0.46807787, 0.43289876),
)
PAPER_LATENT_GENERATIONS = (1, 2, 3, 4, 5)  # this book's generation index of each entry
PAPER_SPREAD_IMAGES = 100  # images per generation in the notebook's statistic
PAPER_SPREAD_SOURCE = ("the authors' released notebook `VAE_experiments.ipynb` (Zakahler/curse_recurse): "
                       "cell 14 (`mu_sig`, five runs), statistic of cells 9 and 13")


def pooled_latent_spread(latents_GxNxL: np.ndarray, n_images: int = PAPER_SPREAD_IMAGES) -> np.ndarray:
    """The notebook's statistic per generation: the standard deviation of the generation-0
    encoder means of the first ``n_images`` images, all L coordinates pooled (``np.std`` of
    an ``n_images × L`` array). Pooling adds the spread *between* coordinate means to the
    per-coordinate spread σ̄ the book reports, so the two are not interchangeable."""
    latents = np.asarray(latents_GxNxL)
    if latents.shape[1] < n_images:
        raise ValueError(f"the notebook's statistic takes {n_images} images; the analysis kept {latents.shape[1]}")
    return latents[:, :n_images].reshape(len(latents), -1).std(axis=1)


def paper_spread_comparison(pooled_G: np.ndarray) -> dict:
    """The page's pooled spread beside the authors' five runs, at the same generations.

    Compares the ratio s₅ / s₁ (the notebook's last entry over its first; generation 0 is
    not in the notebook). Returns the five runs' ratios, the page's ratio (None when the
    page ran fewer than 5 generations) and a verdict computed from them.
    """
    paper = np.asarray(PAPER_LATENT_SPREAD)
    first, last = PAPER_LATENT_GENERATIONS[0], PAPER_LATENT_GENERATIONS[-1]
    paper_ratios = paper[:, -1] / paper[:, 0]
    low, high = float(paper_ratios.min()), float(paper_ratios.max())
    if len(pooled_G) <= last:
        return {"paper_ratios": paper_ratios, "low": low, "high": high, "ratio": None,
                "verdict": f"this page ran fewer than {last} generations, so it cannot be set beside them"}
    ratio = float(pooled_G[last] / pooled_G[first])
    return {"paper_ratios": paper_ratios, "low": low, "high": high, "ratio": ratio,
            "verdict": spread_verdict(ratio, paper_ratios, "the authors' five runs")}


def spread_verdict(ratio: float, others, name: str) -> str:
    """Where a spread ratio (later over earlier; lower is a faster fall) lies against the
    ratios ``others`` of ``name``: inside their range, or beyond it on either side."""
    low, high = float(np.min(others)), float(np.max(others))
    return (f"within the range of {name}" if low <= ratio <= high
            else f"a faster fall than in any of {name}" if ratio < low
            else f"a slower fall than in any of {name}")


def value_range(values, fmt: str) -> str:
    """``"0.616–0.672"``, or one number when the ends agree at ``fmt``."""
    low, high = min(values), max(values)
    return f"{low:{fmt}}" if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}–{high:{fmt}}"


def spreads_against(ours, theirs, ours_name: str, theirs_name: str) -> str:
    """Spread ratios (lower is a faster fall) of several runs against another set's: a clean
    separation either way, or an overlap with how many of ours lie inside their range."""
    low, high = float(np.min(theirs)), float(np.max(theirs))
    each = "each of " if len(ours) > 1 else ""
    if np.max(ours) < low:
        return f"a faster fall in {each}{ours_name} than in any of {theirs_name}"
    if np.min(ours) > high:
        return f"a slower fall in {each}{ours_name} than in any of {theirs_name}"
    inside = int(np.sum((np.asarray(ours) >= low) & (np.asarray(ours) <= high)))
    return f"the ranges overlap, with {inside} of {ours_name} inside that of {theirs_name}"


def recorded_confident_zero(found: dict[int, dict]) -> list[float]:
    """Generation 0's confident share (see :data:`CONFIDENT`) in each recorded seed that holds it:
    generation 0 trains on real data only, so any run of a seed gives it."""
    shares = []
    for record in found.values():
        held = [r["confident_share"][0] for r in record["regimes"].values() if "confident_share" in r]
        shares += held[:1]
    return shares


def recorded_prose(found: dict[int, dict], n_classes: int) -> str:
    """What the recorded ``paper`` runs of every seed say (``found``: seed → record), computed:
    the fixed-set ``replace`` seeds, the per-batch seeds against them and against the
    authors' five runs in their own statistic, the other regimes against fixed-set ``replace``, the
    classes kept, and the real tail against the head."""
    def runs(name):
        return [r["regimes"][name] for r in found.values() if name in r["regimes"]]

    def ratio(r, n):
        return r["latent_sigma"][n] / r["latent_sigma"][0]

    def seeds(k, what):
        return f"the {k} {what} seeds" if k > 1 else f"the {what} run"

    fixed, per_batch = runs("replace"), runs(run_name("replace", "per-batch"))
    replace_both = fixed + per_batch
    last = len(replace_both[0]["latent_sigma"]) - 1
    fixed_last = [ratio(r, last) for r in fixed]  # every other run is compared with these
    parts = []
    if fixed:
        parts.append(f"Over the first four generations of `replace` (fixed set), $\\bar\\sigma$ fell to "
                     f"{value_range([ratio(r, 4) for r in fixed], '.3f')} of its generation-0 value in "
                     f"{seeds(len(fixed), 'recorded')}, and by generation {last} to "
                     f"{value_range(fixed_last, '.3f')}.")
    if per_batch and fixed:
        mine = [ratio(r, last) for r in per_batch]
        parts.append(f"With the authors' per-batch sampling it fell to {value_range(mine, '.3f')} by generation {last} in "
                     f"{seeds(len(per_batch), 'per-batch')}: "
                     f"{spreads_against(mine, fixed_last, seeds(len(per_batch), 'per-batch'), seeds(len(fixed), 'fixed-set'))}.")
    elif not per_batch:
        parts.append("No record holds the authors' per-batch sampling yet.")
    pooled = [np.asarray(r["latent_spread_pooled"]) for r in per_batch if "latent_spread_pooled" in r]
    if pooled and len(pooled[0]) > PAPER_LATENT_GENERATIONS[-1]:
        compared = [paper_spread_comparison(v) for v in pooled]
        mine = [c["ratio"] for c in compared]
        parts.append(f"In the authors' own statistic $s_5/s_1$, the per-batch runs give {value_range(mine, '.3f')} against "
                     f"{compared[0]['low']:.3f}–{compared[0]['high']:.3f} in their five runs: "
                     f"{spreads_against(mine, compared[0]['paper_ratios'], seeds(len(mine), 'per-batch'), 'their five runs')}.")
    other_names = dict.fromkeys(name for r in found.values() for name in r["regimes"]
                                if parse_run(name)[0].kind != "replace")
    others = []
    for name in other_names:
        kept_spread = [ratio(r, last) for r in runs(name)]
        against = ""
        if fixed:
            verdict = spreads_against(kept_spread, fixed_last, seeds(len(kept_spread), "recorded"),
                                      seeds(len(fixed), "fixed-set `replace`"))
            against = f" ({verdict})"
        others.append(f"{value_range(kept_spread, '.3f')} under `{name}` in {seeds(len(kept_spread), 'recorded')}{against}")
    if others:
        parts.append(f"Under the other regimes the ratio at generation {last} is " + "; ".join(others) + ".")
    kept = [len(classes_kept(r["class_counts"][-1])) for r in replace_both]
    tail = np.array([r["tail_nelbo"][-1] - r["tail_nelbo"][0] for r in replace_both])
    head = np.array([r["head_nelbo"][-1] - r["head_nelbo"][0] for r in replace_both])
    parts.append(f"In the {len(replace_both)} `replace` runs of either sampling, {value_range(kept, 'd')} of the {n_classes} "
                 f"classes still hold 1 % of the images at generation {last}; the real tail's mean "
                 f"$-\\mathrm{{ELBO}}$ grew by {value_range(tail, '.0f')} nats per image, the head's by {value_range(head, '.0f')}: "
                 f"{tail_versus_head(tail, head).replace('in every seed', 'in every run')} (nats, not a rank: see the "
                 f"head-and-tail section above).")
    return " ".join(parts)


RECORD_COMMAND = "python -m collapse.vae_experiment --profile paper --seed K --record"


def load_recorded(profile: str, dataset: str, seed: int) -> dict | None:
    """A recorded run of ``profile`` (see :func:`main`), or None if none was recorded."""
    return records.load("vae", profile, dataset, seed)


def recorded_seeds(profile: str, dataset: str) -> list[int]:
    return records.seeds("vae", profile, dataset)


def record_is_current(record: dict) -> bool:
    """Whether a record was made with the sizes ``chapter_config`` gives its profile today."""
    return records.is_current(record, chapter_config)


def main(argv: list[str] | None = None) -> None:
    """Run chapter 3's experiment at a profile outside the book, and record its summary.

    ``python -m collapse.vae_experiment --profile paper --record`` trains every regime
    (resuming finished generations from the results store) and writes
    ``chapters/recorded/vae-paper-<dataset>-seed<seed>.json``, which the chapter shows next to its
    own numbers. The record is rewritten after every regime, so a run cut short keeps
    what it finished; ``--regimes`` adds those runs to a record of the same sizes and data.
    """
    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--profile", default="paper", choices=("ci", "cpu", "paper"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    parser.add_argument("--regimes", nargs="*", help="default: the profile's regimes")
    parser.add_argument("--record", nargs="?", const="", default=None, metavar="PATH",
                        help="write the summary JSON (default path: chapters/recorded/vae-<profile>-<dataset>-seed<seed>.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (one line per regime)")
    args = parser.parse_args(argv)
    distributed.initialize()  # several processes, when the environment names them (collapse.distributed)

    config_args = {"profile": args.profile, "seed": args.seed, "dataset": args.dataset}
    chapter = chapter_config(**config_args)
    regimes = [run_name(*parse_run(r)) for r in (args.regimes or chapter.regimes)]  # a bad name fails here, before any work
    path = Path(args.record) if args.record else records.path("vae", args.profile, args.dataset, args.seed)
    if args.record is not None:
        records.check_writable(path)
    data = load_data(chapter.dataset, chapter.n_test)
    if data.notice:
        print("warning:", data.notice)
    record = records.new(
        chapter, config_args, dataset=data.train.dataset, verified=bool(data.train.verified and data.test.verified),
        n_train=min(chapter.n_train, len(data.train.images)), n_test=len(data.test.images), regimes={},
    )
    if args.record is not None:  # runs already recorded for this seed, data and sizes are kept
        # each run was measured with the classifier of its own sitting
        record = records.extend(path, record, chapter_config, "regimes", per_run=("classifier_accuracy",))
    for regime in regimes:
        start = time.perf_counter()
        _, analyses, labeller = run_chapter(chapter, data, regimes=[regime], progress=not args.quiet)
        (name, analysis), = analyses.items()
        accuracy = record["classifier_accuracy"] = classifier_accuracy(labeller, data.test)
        # the classifier is trained again in each sitting, so each run keeps the accuracy of the one it was measured with
        record["regimes"][name] = records.run_entry(seconds=time.perf_counter() - start, classifier_accuracy=accuracy,
                                                    **summarise(analysis))
        sigma = record["regimes"][name]["latent_sigma"]
        print(f"{name}: {record['regimes'][name]['seconds']:.0f} s, latent sigma {sigma[0]:.4f} -> {sigma[-1]:.4f}", flush=True)
        if args.record is not None:
            records.write(path, record)


if __name__ == "__main__":
    main()
