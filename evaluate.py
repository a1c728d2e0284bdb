"""Client energy of every method over the trajectory: Table III and Figs. 3-5 of the paper."""
import hydra

from pipeline.cli import run_script, user_errors_exit
from pipeline.reporting import run_evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@user_errors_exit
def main(cfg):
    return run_evaluate(cfg)


if __name__ == "__main__":
    run_script(main)
