"""conf/sweep.yaml prunes every layer at the one searched q, leaving out the prune group's per-layer
values that train.py and evaluate.py use (conv1 dense, fc5 at 0.5): the sweep says so once, at its
start, in one log line."""
import logging

import optuna
from hydra import compose, initialize_config_dir

from pipeline.sweep import on_start, per_layer_notice, pruning_notice
from tests.conftest import CONF

GROUP = {"conv1": 0.0, "conv2": None, "fc1": None, "fc5": 0.5}  # like conf/prune/default.yaml, shorter


def sweep_cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("sweep", list(overrides), return_hydra_config=True)


def test_the_notice_names_the_layers_at_the_threshold_their_own_values_and_the_group_values_left_out():
    every = dict.fromkeys(GROUP)
    assert per_layer_notice(every, GROUP, "q", "g.yaml") == (
        "pruning: every layer at q; not g.yaml's conv1=0, fc5=0.5, which train.py and evaluate.py use "
        "(prune.per_layer.<layer>=<value> sets one for every trial)")
    # conv1 kept as the group has it: only fc5 is left out
    assert per_layer_notice({**every, "conv1": 0.0}, GROUP, "q", "g.yaml") == (
        "pruning: conv2, fc1, fc5 at q; conv1 at 0; not g.yaml's fc5=0.5, which train.py and evaluate.py use "
        "(prune.per_layer.<layer>=<value> sets one for every trial)")
    # the group's values kept, fc1 set here: nothing left out, nothing to add
    assert per_layer_notice({**GROUP, "fc1": 0.25}, GROUP, "q", "g.yaml") == (
        "pruning: conv2 at q; conv1 at 0, fc1 at 0.25, fc5 at 0.5")


def test_the_sweep_config_names_the_default_prune_groups_conv1_and_fc5():
    assert pruning_notice(sweep_cfg()) == (
        "pruning: every layer at the searched prune.threshold (prune.mode=std); not conf/prune/default.yaml's "
        "conv1=0, fc5=0.5, which train.py and evaluate.py use (prune.per_layer.<layer>=<value> sets one for "
        "every trial)")
    fixed = pruning_notice(sweep_cfg("prune.threshold=1.2", "prune.per_layer.fc5=0.5"))
    assert fixed.startswith("pruning: conv1, conv2, conv3, conv4, fc1, fc2, fc3, fc4 at prune.threshold=1.2 "
                            "(prune.mode=std); fc5 at 0.5; not conf/prune/default.yaml's conv1=0,")


def test_on_start_logs_the_notice_once(tmp_path, caplog):
    cfg = sweep_cfg("experiment=smoke", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                    f"tracking.artifact_location={tmp_path}/art", "selection.registered_model=null")
    study = optuna.create_study(study_name="notice")
    with caplog.at_level(logging.INFO, logger="pipeline.sweep"):
        on_start(study, cfg)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("pruning: ")] == [pruning_notice(cfg)]


def test_a_threshold_a_preset_fixes_in_the_search_space_is_not_called_searched():
    """experiment=max_compression fixes prune.threshold=0 in hydra.sweeper.params (masks only) and
    searches the sparsity target instead."""
    # and the preset keeps conv1 and fc5 at the threshold in train.py too (prune.per_layer null): nothing left out
    assert pruning_notice(sweep_cfg("experiment=max_compression")) == (
        "pruning: every layer at prune.threshold=0 (prune.mode=absolute)")
