"""Entry module of the chapter "Avoiding collapse": what keeps the real data in the loop.

The chapter has three parts, each from its own module, and reads two other chapters:

* least squares refitted to its own labels (:mod:`collapse.linear_regression`);
* how much real data keeps the Gaussian and the categorical alive
  (:mod:`collapse.real_fraction`);
* the VAEs' recorded ``paper`` runs (chapter 3, :mod:`collapse.vae_experiment`) and the
  language models this profile and seed stored (chapter 4, :mod:`collapse.lm_experiment`),
  read through those chapters' own configs, never trained here.

The verdicts the page prints are computed here, from the numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import linear_regression, lm_experiment, real_fraction, vae_experiment
from .chapter import check_chapter, executed_note
from .config import Regime
from .store import ResultsStore


@dataclasses.dataclass(frozen=True)
class AvoidingChapter:
    """What the avoiding-collapse chapter runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    seed: int = 0  # base seed of every run in the chapter
    regression: linear_regression.RegressionChapter = linear_regression.RegressionChapter()  # least squares
    real_fraction: real_fraction.RealFractionChapter = real_fraction.RealFractionChapter()  # the (M, α) grid

    def __post_init__(self) -> None:
        check_chapter(self.profile, self.seed)

    @property
    def seeds(self) -> tuple[int, ...]:
        return (self.seed,)

    def describe(self, data=None) -> str:
        run = self.regression.run
        return executed_note(
            f"profile `{self.profile}` and seed `{self.seed}`: a design of T = {run.n_samples} rows and d = {run.dim} "
            f"inputs, noise σ = {run.sigma:g}, {run.n_generations} generations after generation 0, and "
            f"{run.n_chains:,} chains per regime."
        )

    # ---- what this chapter reads from others

    def lm_chapter(self) -> lm_experiment.LMChapter:
        """Chapter 4 at this page's profile and seed: the runs whose stored results are read."""
        return lm_experiment.chapter_config(self.profile, self.seed)

    def lm_summaries(self, store: ResultsStore | None = None) -> tuple[list, str | None]:
        """``([(setting, summary)], why missing)``: chapter 4's stored analyses of this seed, one per
        data regime without a repetition penalty (its two settings, and ``accumulate`` where it ran);
        computes nothing (an empty list and the reason when they are not there)."""
        chapter = self.lm_chapter()
        try:
            data = chapter.load_data()
        except Exception as error:  # no corpus, no weights: say so instead of training anything
            return [], f"its data could not be loaded ({error})"
        rows = []
        extra = [s for s in chapter.extra_settings if s.repetition_penalty == 1.0
                 and s.regime not in {t.regime for t in chapter.settings}]
        for setting in [*chapter.settings, *extra]:
            config = chapter.run_config(data, setting, chapter.seed)
            analysis = lm_experiment.stored_analysis(config, chapter.instruments, data, store)
            if analysis is not None:
                rows.append((setting, lm_experiment.summarise(analysis)))
        missing = None if rows else (f"no stored results of that chapter were found for profile `{self.profile}` "
                                     f"and seed {chapter.seed}")
        return rows, missing

    def vae_record(self) -> dict | None:
        """Chapter 3's recorded ``paper`` run on MNIST, seed 0 (the GPU run every regime has)."""
        return vae_experiment.load_recorded("paper", "mnist", 0)


def chapter_config(profile: str, seed: int = 0) -> AvoidingChapter:
    """The sizes of the avoiding-collapse chapter at ``profile``: same code, different numbers."""
    check_chapter(profile, seed)
    return AvoidingChapter(profile, seed, linear_regression.chapter_config(profile, seed),
                           real_fraction.chapter_config(profile, seed))


# --------------------------------------------------------------------------- verdicts


def vae_regimes_compared(regimes: dict[str, dict]) -> dict:
    """Last generation against the first for each recorded VAE regime, and two verdicts.

    ``better``: every regime that keeps real data (not ``replace``, with either sampling) ends
    with more latent spread, at least as many classes (≥ 1 % of the labels) and a smaller rise of
    the real tail's −ELBO than ``replace`` on fixed sets, the sampling those regimes use.
    ``still_worse``: every such regime still ends below generation 0 (tail −ELBO up, spread down).
    """
    kept = {k: len(vae_experiment.classes_kept(r["class_counts"][-1])) for k, r in regimes.items()}
    tail_rise = {k: r["tail_nelbo"][-1] - r["tail_nelbo"][0] for k, r in regimes.items()}
    rep = regimes["replace"]
    others = [k for k in regimes if vae_experiment.parse_run(k)[0] != Regime()]
    better = all(regimes[k]["latent_sigma"][-1] > rep["latent_sigma"][-1] and kept[k] >= kept["replace"]
                 and tail_rise[k] < tail_rise["replace"] for k in others)
    still_worse = all(tail_rise[k] > 0 and regimes[k]["latent_sigma"][-1] < regimes[k]["latent_sigma"][0] for k in others)
    return {"kept": kept, "tail_rise": tail_rise, "better": bool(others) and better,
            "still_worse": bool(others) and still_worse}


def lm_regimes_compared(rows: list) -> dict:
    """Perplexity ratio (last generation / generation 0) per regime, and ``rose_less``: for each regime
    that keeps real data, whether its ratio is below ``replace``'s (empty without ``replace``)."""
    ratios = {setting.regime: s["test_ppl"][-1] / s["test_ppl"][0] for setting, s in rows}
    rose_less = {k: bool(r < ratios["replace"]) for k, r in ratios.items() if k != "replace"} if "replace" in ratios else {}
    return {"ratios": ratios, "rose_less": rose_less}


def fraction_trend(smallest_M: np.ndarray) -> str:
    """How the least real fraction changes as M grows: ``"same"``, ``"less"`` (never more) or
    ``"not steadily less"``; NaN (none on the grid) counts as more than any fraction."""
    need = np.nan_to_num(np.asarray(smallest_M, float), nan=np.inf)
    if np.all(need == need[0]):
        return "same"
    return "less" if np.all(np.diff(need) <= 0) else "not steadily less"
