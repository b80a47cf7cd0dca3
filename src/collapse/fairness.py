"""Fairness feedback loops: a classifier retrained on the labels of its predecessor.

The setting of Wyllie, Shumailov & Papernot (2024), on MNIST. A *population* of images
in which one group of classes (the minority) is a small share, say 5 %. Generation 0 is
trained on M images drawn from the population with their true labels. Every later
generation draws M fresh images and trains on the labels the previous generation gives
them (under ``mix(α)``, a fraction α of the M keep their true labels). A classifier
that under-predicts the minority hands the next one fewer minority labels, which then
under-predicts it more: the decline feeds itself, while accuracy on the whole
population, 95 % majority, barely moves.

The reparation studied is a change to the training batches only: every batch takes a
fixed share of its rows from the minority group (``minority_in_batch``; 0.5 is
group-balanced), whatever that group's share of the labels has become. The group of a
row is read from its label (``group_from="label"``: all a loop knows when the group is a
set of classes) or from a recorded attribute, the row's true group
(``group_from="attribute"``).

Each generation is a jitted Adam loop (``lax.scan`` over steps) from fresh weights; the
generations are the shared runner's :func:`~collapse.runner.simulate`, ``vmap``-ped over
chains (seeds) and sharded over every device. A labelled data set is the runner's
"statistics": the drawn rows, their labels, and the key that trains on them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import classifier
from .chapter import check_chapter, executed_note
from .config import Regime, check_choice, check_int, check_positive, check_seed, check_unit_interval
from .mnist import ChapterData, Images
from .runner import StatsModel, simulate, stream_rng
from .store import ResultsStore, array_digest

VERSION = "1"


class Population(NamedTuple):
    """The images every generation draws from, with their true classes."""

    images_NxD: jax.Array  # uint8 pixels, one flattened image per row
    labels_N: jax.Array  # int32 true class of every image
    minority_C: jax.Array  # bool: whether each class belongs to the minority group


class Labelled(NamedTuple):
    """One generation's training set (the runner's statistics)."""

    rows_M: jax.Array  # int32 rows of the population
    labels_M: jax.Array  # int32 labels: true ones, or those a classifier gave
    key: jax.Array  # the randomness of training on this set (initial weights, batches)


@dataclasses.dataclass(frozen=True)
class FairnessRun:
    """One feedback loop: the population, the classifier, its training and the recursion."""

    minority_classes: tuple[int, ...] = (5, 6, 7, 8, 9)  # the minority group of classes
    minority_share: float = 0.05  # the group's share of the population (MNIST's own is about half)
    n_samples: int = 10_000  # M: images drawn, labelled and trained on, per generation
    hidden: int = 128  # units in the classifier's one hidden layer
    steps: int = 1_000  # Adam steps per generation, from fresh weights (10 passes over M at the defaults)
    batch_size: int = 100  # rows per step, drawn with replacement
    learning_rate: float = 1e-3  # Adam step size
    minority_in_batch: float | None = None  # None: uniform batches; else the share of each batch from minority rows
    group_from: str = "label"  # which rows are minority: "label" (as labelled) or "attribute" (true group, recorded)
    regime: Regime = Regime()  # replace: every label from the previous model; mix(α): α of them true
    n_generations: int = 20  # generations after generation 0
    n_chains: int = 8  # independent loops (seeds); all share the population
    seed: int = 0  # the population and every loop derive from it

    def __post_init__(self) -> None:
        classes = self.minority_classes
        if not classes or len(set(classes)) != len(classes) or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes
        ):
            raise ValueError(f"minority_classes={classes!r} must be distinct class indices >= 0, at least one")
        check_unit_interval("minority_share", self.minority_share)
        if not 0.0 < self.minority_share < 1.0:
            raise ValueError(f"minority_share={self.minority_share!r} must be strictly between 0 and 1")
        check_int("n_samples", self.n_samples, minimum=2)
        check_int("hidden", self.hidden, minimum=1)
        check_int("steps", self.steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=2)
        check_positive("learning_rate", self.learning_rate)
        if self.minority_in_batch is not None:
            check_unit_interval("minority_in_batch", self.minority_in_batch)
        check_choice("group_from", self.group_from, ("label", "attribute"))
        if self.regime.kind == "accumulate":
            raise ValueError("regime='accumulate' is not offered for the classifier loop: its training set would grow "
                             "every generation inside one lax.scan; use 'replace' or 'mix(alpha)'")
        check_int("n_generations", self.n_generations, minimum=1)
        check_int("n_chains", self.n_chains, minimum=1)
        check_seed("seed", self.seed)


# --------------------------------------------------------------------------- the population


def population_rows(labels: np.ndarray, minority_classes, minority_share: float, seed: int) -> np.ndarray:
    """Rows of a labelled set forming a population where the minority group has ``minority_share``.

    Every majority image is kept; the minority images are a uniform subset of the right
    size (so the group's classes keep their relative frequencies). Raises when the set
    has too few minority images for the share asked.
    """
    labels = np.asarray(labels)
    is_minority = np.isin(labels, minority_classes)
    majority, minority = np.flatnonzero(~is_minority), np.flatnonzero(is_minority)
    missing = set(minority_classes) - set(np.unique(labels).tolist())
    if missing:
        raise ValueError(f"minority classes {sorted(missing)} do not occur in the data")
    n_minority = int(round(minority_share / (1.0 - minority_share) * len(majority)))
    if not 0 < n_minority <= len(minority):
        raise ValueError(
            f"minority_share={minority_share:g} needs {n_minority} minority images next to {len(majority)} majority ones; "
            f"the data has {len(minority)}"
        )
    rng = stream_rng(seed, "fairness/population")
    return np.sort(np.concatenate([majority, rng.choice(minority, n_minority, replace=False)]))


def make_population(images_uint8: np.ndarray, labels: np.ndarray, n_classes: int, run: FairnessRun) -> Population:
    rows = population_rows(labels, run.minority_classes, run.minority_share, run.seed)
    if max(run.minority_classes) >= n_classes:
        raise ValueError(f"minority_classes={run.minority_classes} name a class >= n_classes={n_classes}")
    minority = np.zeros(n_classes, bool)
    minority[list(run.minority_classes)] = True
    return Population(
        jnp.asarray(images_uint8[rows].reshape(len(rows), -1)), jnp.asarray(labels[rows], jnp.int32), jnp.asarray(minority)
    )


def class_shares(population: Population) -> np.ndarray:
    """π_c: each class's share of the population."""
    n_classes = population.minority_C.shape[0]
    return np.bincount(np.asarray(population.labels_N), minlength=n_classes) / population.labels_N.shape[0]


# --------------------------------------------------------------------------- one generation


def batch_rows(key, is_minority_M: jax.Array, batch_size: int, minority_in_batch: float | None) -> jax.Array:
    """Rows of one training batch, drawn with replacement.

    Uniform over the set when ``minority_in_batch`` is None; otherwise
    ``round(minority_in_batch · batch_size)`` rows from those labelled minority and the
    rest from the others. A group with no rows at all gives its places to the other.
    """
    m = is_minority_M.shape[0]
    if minority_in_batch is None:
        return jax.random.randint(key, (batch_size,), 0, m)
    n_minority = int(round(minority_in_batch * batch_size))
    order = jnp.argsort(~is_minority_M, stable=True)  # rows labelled minority first
    k = jnp.sum(is_minority_M)
    key_minority, key_majority = jax.random.split(key)
    from_minority = jax.random.randint(key_minority, (n_minority,), 0, jnp.where(k > 0, k, m))
    from_majority = jax.random.randint(key_majority, (batch_size - n_minority,), jnp.where(k < m, k, 0), m)
    return order[jnp.concatenate([from_minority, from_majority])]


def minority_rows(population: Population, group_from: str, data: Labelled) -> jax.Array:
    """Which rows of ``data`` the batches count as minority: by their label, or by their true (recorded) group."""
    classes = data.labels_M if group_from == "label" else population.labels_N[data.rows_M]
    return population.minority_C[classes]


def fit(population: Population, run: FairnessRun, data: Labelled) -> list[classifier.Layer]:
    """A classifier trained from fresh weights on ``data``: ``run.steps`` Adam steps."""
    key_init, key_steps = jax.random.split(data.key)
    n_classes = population.minority_C.shape[0]
    params = classifier.init(key_init, population.images_NxD.shape[1], run.hidden, n_classes, depth=1)
    opt_state = optax.adam(run.learning_rate).init(params)
    is_minority_M = minority_rows(population, run.group_from, data)

    def step(carry, key):
        rows = batch_rows(key, is_minority_M, run.batch_size, run.minority_in_batch)
        images = population.images_NxD[data.rows_M[rows]]
        return classifier.update(run.learning_rate, *carry, images, data.labels_M[rows]), None

    (params, _), _ = jax.lax.scan(step, (params, opt_state), jax.random.split(key_steps, run.steps))
    return params


def predict(params, images_uint8) -> jax.Array:
    """Each image's most likely class: the label a deployed classifier gives."""
    return jnp.argmax(classifier.logits(params, images_uint8), axis=-1).astype(jnp.int32)


def real_stats(population: Population, key, m: int) -> Labelled:
    """``m`` images drawn from the population, with their true labels."""
    key_rows, key_fit = jax.random.split(key)
    rows = jax.random.randint(key_rows, (m,), 0, population.labels_N.shape[0])
    return Labelled(rows, population.labels_N[rows], key_fit)


def sample_stats(population: Population, key, params, m: int) -> Labelled:
    """``m`` fresh images from the population, labelled by the classifier ``params``."""
    key_rows, key_fit = jax.random.split(key)
    rows = jax.random.randint(key_rows, (m,), 0, population.labels_N.shape[0])
    return Labelled(rows, predict(params, population.images_NxD[rows]), key_fit)


def merge(a: Labelled, b: Labelled) -> Labelled:
    """Two sets pooled (``mix``: the true-labelled part and the model-labelled part)."""
    return Labelled(jnp.concatenate([a.rows_M, b.rows_M]), jnp.concatenate([a.labels_M, b.labels_M]), b.key)


def model(population: Population, run: FairnessRun) -> StatsModel:
    return StatsModel(
        fit=functools.partial(fit, population, run), sample_stats=functools.partial(sample_stats, population), merge=merge
    )


def simulate_predictions(run: FairnessRun, population: Population, test_images: np.ndarray) -> np.ndarray:
    """Every generation's predicted class of every test image, ``n_chains × (n_generations + 1) × n_test`` (uint8)."""
    test = jnp.asarray(test_images.reshape(len(test_images), -1))
    record = functools.partial(_test_predictions, test)
    predictions = simulate(
        model(population, run), functools.partial(real_stats, population), seed=run.seed, n_chains=run.n_chains,
        n_samples=run.n_samples, n_generations=run.n_generations, regime=run.regime, record=record,
    )
    return np.asarray(predictions, np.uint8)


def _test_predictions(test_images, params) -> jax.Array:
    return predict(params, test_images).astype(jnp.uint8)


# --------------------------------------------------------------------------- measures


def measures(predictions_SxGxT: np.ndarray, test_labels: np.ndarray, shares_C: np.ndarray, minority_C: np.ndarray,
             real_label_share: float = 0.0) -> dict[str, np.ndarray]:
    """What each generation gets right on the population, each ``n_chains × (n_generations + 1)``.

    Test images stand in for the population: a class's accuracy is measured on its test
    images and weighted by its population share π_c.

    * ``overall``: Σ π_c · accuracy on class c (against the true labels);
    * ``minority`` / ``majority``: the same within each group;
    * ``representation``: the share of the population the classifier labels minority,
      which is the minority's share of the next generation's labels;
    * ``reported``: accuracy against the labels the loop itself holds -- the previous
      generation's, except for the ``real_label_share`` of true ones (generation 0: true
      labels) -- what a validation set drawn from the loop would report.

    Equation ``eq-fairness-measures`` of ``chapters/fairness.md``.
    """
    predictions = np.asarray(predictions_SxGxT)
    labels = np.asarray(test_labels)
    shares_C, minority_C = np.asarray(shares_C, float), np.asarray(minority_C, bool)
    n_classes = len(shares_C)
    onehot_TxC = np.eye(n_classes)[labels]
    per_class = onehot_TxC / np.maximum(onehot_TxC.sum(0), 1)  # averages over each class's test images
    correct_SxGxC = (predictions == labels).astype(float) @ per_class
    said_minority_SxGxC = minority_C[predictions].astype(float) @ per_class
    agree = (predictions[:, 1:] == predictions[:, :-1]).astype(float) @ per_class

    def group(weights_C):
        return correct_SxGxC @ (shares_C * weights_C) / np.sum(shares_C * weights_C)

    overall = correct_SxGxC @ shares_C
    agreement = np.concatenate([overall[:, :1], agree @ shares_C], axis=1)
    return {
        "overall": overall,
        "minority": group(minority_C),
        "majority": group(~minority_C),
        "representation": said_minority_SxGxC @ shares_C,
        "reported": np.concatenate(
            [overall[:, :1], real_label_share * overall[:, 1:] + (1.0 - real_label_share) * agreement[:, 1:]], axis=1
        ),
    }


def run_cached(run: FairnessRun, train: Images, test: Images, store: ResultsStore | None = None) -> dict[str, np.ndarray]:
    """:func:`measures` of one loop on a population drawn from ``train``, measured on ``test`` (stored)."""

    def compute():
        population = make_population(train.images, train.labels, len(train.classes), run)
        predictions = simulate_predictions(run, population, test.images)
        shares = class_shares(population)
        out = measures(predictions, test.labels, shares, np.asarray(population.minority_C), run.regime.alpha)
        out["real_share"] = np.asarray(float(shares[np.asarray(population.minority_C)].sum()))
        return out

    key = {"run": run, "data": array_digest(train.images, train.labels, test.images, test.labels)}
    return (store or ResultsStore()).cached("fairness", VERSION, key, compute)


# --------------------------------------------------------------------------- the chapter


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One way of running the loop, as the chapter names it."""

    name: str  # legend label
    minority_in_batch: float | str | None = None  # see FairnessRun; "real" = the group's real share of the population
    group_from: str = "label"  # see FairnessRun
    regime: str = "replace"  # see FairnessRun


STRATEGIES = (
    Strategy("feedback loop"),
    Strategy("batches at the real share", minority_in_batch="real"),
    Strategy("group-balanced batches", minority_in_batch=0.5),
    Strategy("group-balanced, recorded group", minority_in_batch=0.5, group_from="attribute"),
    Strategy("10 % true labels", regime="mix(0.1)"),
)


@dataclasses.dataclass(frozen=True)
class FairnessChapter:
    """What the fairness chapter runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    run: FairnessRun = FairnessRun()  # sizes shared by every strategy
    strategies: tuple[Strategy, ...] = STRATEGIES  # compared side by side
    n_test: int = 10_000  # real test images every generation is measured on

    def __post_init__(self) -> None:
        check_chapter(self.profile, self.run.seed)
        check_int("n_test", self.n_test, minimum=10)

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def seeds(self) -> tuple[int, ...]:
        """The page's seed; its ``n_chains`` loops are chains ``0 … n_chains − 1`` of that seed."""
        return (self.run.seed,)

    def describe(self, data: ChapterData | None = None) -> str:
        run = self.run
        images = "" if data is None else (f" of a population of {len(data.train.images):,} "
                                          f"{data.train.dataset.upper()} training images before subsampling")
        n_test = self.n_test if data is None else len(data.test.images)
        return executed_note(
            f"profile `{self.profile}` and seed `{run.seed}`: minority group = digits "
            f"{', '.join(map(str, run.minority_classes))} at ρ = {run.minority_share:.0%}{images}; "
            f"M = {run.n_samples:,} images per generation; a classifier with {run.hidden} hidden units trained for "
            f"{run.steps:,} Adam steps of {run.batch_size}; {run.n_generations} generations; {run.n_chains} loops per "
            f"strategy, measured on {n_test:,} test images.",
            data.notice if data is not None else None,
        )

    def run_config(self, strategy: Strategy) -> FairnessRun:
        share = self.run.minority_share if strategy.minority_in_batch == "real" else strategy.minority_in_batch
        return dataclasses.replace(
            self.run, minority_in_batch=share, group_from=strategy.group_from, regime=Regime.parse(strategy.regime)
        )


def chapter_config(profile: str, seed: int = 0) -> FairnessChapter:
    """The sizes of the fairness chapter at ``profile``: same code, different numbers."""
    check_chapter(profile, seed)
    if profile == "ci":
        run = FairnessRun(n_samples=3_000, hidden=64, steps=300, n_generations=6, n_chains=2, seed=seed)
    elif profile == "paper":
        run = FairnessRun(n_samples=30_000, hidden=256, steps=3_000, n_generations=50, n_chains=20, seed=seed)
    else:
        run = FairnessRun(seed=seed)
    return FairnessChapter(profile, run)


# --------------------------------------------------------------------------- verdicts

STOPPED_WITHIN = 0.02  # a strategy "stopped the decline" if the minority lost at most 2 points
HIDDEN_RATIO = 5.0  # "hidden": the minority moved more than 5 times as much as the population
OVER_CORRECTED = 1.5  # group-balanced batches over-correct when the minority's label share ends above 1.5 ρ
HOLDS_SHARE_WITHIN = 0.25  # the recorded group "holds the share" when it ends within 25 % of ρ
FIXED_SHARE_INSUFFICIENT = 0.5  # batches at the real share "are not enough" if they keep over half the loop's decline


def verdicts(results: dict[str, dict], chapter: FairnessChapter, rho: float) -> dict:
    """What the page says of the strategies, computed from their measures (means over loops).

    ``start_end[name][measure]`` is (generation 0, last generation); ``decline[name]`` the
    minority's change; the flags are those of the named thresholds above.
    """
    loop, real_share, balanced, recorded, _ = (s.name for s in chapter.strategies)
    start_end = {name: {m: (float(v.mean(0)[0]), float(v.mean(0)[-1])) for m, v in r.items() if np.ndim(v) == 2}
                 for name, r in results.items()}
    decline = {name: se["minority"][1] - se["minority"][0] for name, se in start_end.items()}
    moved = {m: start_end[loop][m][1] - start_end[loop][m][0] for m in ("reported", "overall", "minority")}
    loop_decline = decline[loop]
    return {
        "start_end": start_end,
        "decline": decline,
        "hidden": bool(moved["minority"] < 0 and abs(moved["minority"]) > HIDDEN_RATIO * abs(moved["overall"])),
        "reported_rose": bool(moved["reported"] > 0),
        "stopped": {name: bool(d > -STOPPED_WITHIN) for name, d in decline.items()},
        "share_of_loop_decline": {name: (d / loop_decline if loop_decline < 0 else float("nan")) for name, d in decline.items()},
        "over_corrected": bool(start_end[balanced]["representation"][1] > OVER_CORRECTED * rho),
        "recorded_holds_share": bool(abs(start_end[recorded]["representation"][1] - rho) < HOLDS_SHARE_WITHIN * rho),
        "fixed_share_insufficient": bool(loop_decline < 0 and decline[real_share] < FIXED_SHARE_INSUFFICIENT * loop_decline),
    }
