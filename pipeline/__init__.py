"""ecosplit: energy-efficient model compression and splitting (Krouka et al.)."""
from omegaconf import OmegaConf

# train.mu = 1 - search.one_minus_mu: lets a sweep search 1 - mu on a log scale (conf/sweep.yaml)
if not OmegaConf.has_resolver("one_minus"):
    OmegaConf.register_new_resolver("one_minus", lambda x: 1.0 - float(x))
