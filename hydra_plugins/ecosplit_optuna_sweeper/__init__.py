"""ecosplit's Optuna sweeper for Hydra (``hydra/sweeper=ecosplit_optuna``).

Task-side helpers:

* :func:`current_trial` - the live ``optuna.Trial`` of the running sweep job (or None), to
  ``report()`` intermediate values and ``should_prune()``;
* :func:`feasible` - whether a finished trial is COMPLETE and satisfies the constraints;
* :func:`last_study` - the study of the last sweep that finished in this process.

See README.md next to this file for the configuration.
"""

from ._runtime import (
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL_ID,
    ENV_TRIAL_NUMBER,
    current_trial,
    feasible,
    last_study,
)

__version__ = "0.1.0"

__all__ = [
    "ENV_STORAGE",
    "ENV_STUDY",
    "ENV_TRIAL_ID",
    "ENV_TRIAL_NUMBER",
    "current_trial",
    "feasible",
    "last_study",
]
