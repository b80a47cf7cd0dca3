"""collapse: the library behind the model-collapse book.

Which modules serve which chapter:

| chapter page | entry module (``chapter_config``) | its other modules |
|---|---|---|
| ``chapters/gaussian.md`` | ``gaussian`` | — |
| ``chapters/mixtures.md`` | ``mixtures`` | ``multivariate`` (a Gaussian in d dimensions), ``gmm`` (mixtures by EM), ``kde`` (kernel density estimates), ``pool`` (data sets as runner statistics) |
| ``chapters/discrete.md`` | ``discrete`` | — |
| ``chapters/vae.md`` | ``vae_experiment`` | ``vae`` (model, loss, training), ``classifier`` (the fixed labeller), ``mnist`` (IDX files, chapter data) |
| ``chapters/lm.md`` | ``lm_experiment`` | ``opt`` (the decoder, weights from ``transformers``), ``decoding`` (greedy, sampling, beam search), ``lm`` (training, perplexity), ``text`` (corpora, tokenizers, blocks) |
| ``chapters/avoiding.md`` | ``avoiding`` | ``linear_regression`` (exact expected errors), ``real_fraction`` (the (M, α) grid); reads ``vae_experiment`` and ``lm_experiment`` |
| ``chapters/fairness.md`` | ``fairness`` | ``classifier``, ``mnist`` |

Shared by every chapter: ``chapter`` (the protocol: ``chapter_config(profile, seed, **options)`` returns a
frozen ``…Chapter`` with ``seeds`` and ``describe()``), ``config`` (validated frozen configs, the data regimes),
``runner`` (the generational runner), ``store`` (results store, run folders), ``records`` (recorded runs of
expensive profiles), ``sharding`` (the seed or batch axis over every device, batched application),
``checks`` (theory against simulation), ``plotting`` (one style, figure export), ``paths``, and ``book`` (the build).

Two rules keep the map small:

* **When a model gets its own ``x_experiment`` module.** A chapter whose model is cheap keeps model,
  closed forms, checks and chapter config in one module (``gaussian``, ``discrete``, ``fairness``). A neural
  chapter splits the model (``vae``, ``opt``/``lm``) from the experiment that trains generations, measures
  them and records them (``vae_experiment``, ``lm_experiment``): the model is reused by tests and
  benchmarks, the experiment only by its chapter.
* **``simulate`` or ``run_generations``.** A model whose data set has a fixed-size summary (sufficient
  statistics: the Gaussian, the categorical, least squares, or fixed-shape labelled rows) runs under
  ``runner.simulate``: the whole recursion is one ``lax.scan``, ``vmap``-ped over chains and sharded over
  devices. A model trained by gradient steps on a data set that grows or is generated anew (the VAE,
  the language model) runs under ``runner.run_generations``: a Python loop that stores every finished
  generation, so an interrupted run resumes.
"""

from .config import PROFILES, Regime
from .runner import StatsModel, run_chain, run_generations, simulate
from .store import ResultsStore, RunDir

__all__ = ["PROFILES", "Regime", "StatsModel", "run_chain", "simulate", "run_generations", "ResultsStore", "RunDir"]
__version__ = "0.1.0"
