"""collapse: the library behind the model-collapse book.

Small modules of one idea each: ``config`` (validated frozen configs, data regimes),
``runner`` (the generational runner), ``store`` (results keyed by config, run
folders), ``sharding`` (seed axis over devices), ``checks`` (theory against
simulation), ``plotting`` (one style), and one module per chapter's model.
"""

from .config import PROFILES, Regime
from .runner import StatsModel, run_chain, run_generations, simulate
from .store import ResultsStore, RunDir

__all__ = ["PROFILES", "Regime", "StatsModel", "run_chain", "simulate", "run_generations", "ResultsStore", "RunDir"]
__version__ = "0.1.0"
