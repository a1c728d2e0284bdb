"""Optuna search over eq. (8): `python sweep.py -m` (see conf/sweep.yaml)."""
import hydra

from pipeline.cli import run_script, user_errors_exit
from pipeline.sweep import run_trial


@hydra.main(version_base="1.3", config_path="conf", config_name="sweep")
@user_errors_exit
def main(cfg):
    return run_trial(cfg)


if __name__ == "__main__":
    run_script(main)
