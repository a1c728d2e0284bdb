"""The Hydra ``Sweeper`` plugin class (thin: the implementation is imported lazily so that
Hydra's plugin scan, which imports this module in every Hydra app, does not import Optuna).

Mistakes in the settings or shown by the first trial end the process with one line on stderr
and exit status 2; an aborted sweep (max_failure_rate, a storage that stays unreachable) with
one line and status 1; Ctrl-C with one line and status 130. Re-running the same command
continues the study in every case.
"""

import sys
from typing import Any, List, NoReturn

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from . import config as _config  # noqa: F401  (registers the structured configs)


def _exit(status: int, line: str) -> NoReturn:
    from .masking import mask_secrets

    print(mask_secrets(line), file=sys.stderr, flush=True)
    raise SystemExit(status)


class EcosplitOptunaSweeper(Sweeper):
    """Optuna (>= 5, ask-and-tell) sweeper; see the package README for the settings."""

    def __init__(self, **settings: Any) -> None:
        from ._outcome import ConfigError
        from ._loop import EcosplitOptunaSweeperImpl

        try:
            self.sweeper = EcosplitOptunaSweeperImpl(**settings)
        except ConfigError as e:
            _exit(2, f"error: {e}")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        """Run the sweep; returns the ``optuna.Study``."""
        from ._loop import LauncherError, SweepAbortedError
        from ._outcome import ConfigError
        from ._search_space import SearchSpaceError
        from ._storage import is_connection_error

        try:
            return self.sweeper.sweep(arguments)
        except (ConfigError, SearchSpaceError) as e:
            _exit(2, f"error: {e}")
        except (SweepAbortedError, LauncherError) as e:
            _exit(1, f"error: {e}")
        except KeyboardInterrupt as e:
            from ._interrupt import Terminated
            released = self.sweeper.released
            # e.g. during the end-of-sweep hook, when every trial had ended
            what = (f"trial{'s' * (len(released) > 1)} {', '.join(map(str, released))} "
                    f"{'were' if len(released) > 1 else 'was'} failed and re-queued" if released
                    else "no trial was running")
            _exit(143 if isinstance(e, Terminated) else 130,
                  f"{'terminated (SIGTERM)' if isinstance(e, Terminated) else 'interrupted'}: {what}; "
                  "re-run the same command to continue the study")
        except Exception as e:
            if is_connection_error(e):
                _exit(1, f"error: the Optuna storage is unreachable ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); re-run the same command "
                         "to continue once it is back")
            raise

    def get_study(self) -> Any:
        """The ``optuna.Study`` of the last sweep (None before)."""
        return self.sweeper.get_study()
