"""Train the paper's CNN with the L1 objective (eq. 10), prune it and record everything in MLflow."""
import hydra

from pipeline.cli import run_script, user_errors_exit
from pipeline.stages import run_train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors_exit
def main(cfg):
    return run_train(cfg)


if __name__ == "__main__":
    run_script(main)
