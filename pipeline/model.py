"""The paper's CNN (Sec. IV) as an ordered list of named cut points.

Four 5x5 conv layers (16, 32, 48, 64 channels), each followed by ReLU and a 2x2/stride-2
max-pool, then fully connected layers of 512, 256, 128, 64 and 10 units; softmax at the end.
"Same" padding and ceil-mode pooling give 28 -> 14 -> 7 -> 4 -> 2, so fc1 reads 64*2*2 = 256
inputs and the dense model has 433,274 parameters.

Every layer boundary is a cut point named after the layer whose output is sent (Sec. III-B):
``input`` (raw image, full offload), ``conv1``, ``pool1``, ..., ``pool4``, ``fc1`` ... ``fc5``.
``softmax`` is accepted as another name for ``fc5``: the client sends the 10 class scores either
way and softmax is monotone, so it changes neither the payload nor the decision.

Widths are constructor arguments so that a pruned model whose dead channels and neurons were
removed (pipeline.pruning) is the same class with smaller layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

PAPER_CONV_CHANNELS = (16, 32, 48, 64)
PAPER_FC_UNITS = (512, 256, 128, 64, 10)
KERNEL_SIZE = 5
POOL_SIZE = 2
IMAGE_SIZE = 28
IN_CHANNELS = 1

CUT_ALIASES = {"softmax": "fc5"}


class UnknownCutError(ValueError):
    pass


@dataclass(frozen=True)
class LayerInfo:
    """Static shape of one layer of the (possibly shrunk) CNN."""

    name: str
    kind: str  # "conv" | "pool" | "fc"
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    relu: bool

    @property
    def out_elements(self) -> int:
        return math.prod(self.out_shape)

    @property
    def in_elements(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_positions(self) -> int:
        return self.out_shape[1] * self.out_shape[2] if len(self.out_shape) == 3 else 1


def _pooled(size: int) -> int:
    return -(-size // POOL_SIZE)  # ceil mode


class SplitCNN(nn.Module):
    """The paper CNN whose forward pass can be cut at any named layer boundary."""

    def __init__(self, conv_channels=PAPER_CONV_CHANNELS, fc_units=PAPER_FC_UNITS):
        super().__init__()
        self.conv_channels = tuple(int(c) for c in conv_channels)
        self.fc_units = tuple(int(u) for u in fc_units)
        if len(self.conv_channels) != 4 or len(self.fc_units) != 5:
            raise ValueError("model needs 4 conv widths and 5 fc widths")
        self.layers = nn.ModuleDict()
        self.infos: list[LayerInfo] = []
        channels, size = IN_CHANNELS, IMAGE_SIZE
        for i, out_ch in enumerate(self.conv_channels, start=1):
            self.layers[f"conv{i}"] = nn.Conv2d(channels, out_ch, KERNEL_SIZE, padding=KERNEL_SIZE // 2)
            self.infos.append(LayerInfo(f"conv{i}", "conv", (channels, size, size), (out_ch, size, size), True))
            self.layers[f"pool{i}"] = nn.MaxPool2d(POOL_SIZE, POOL_SIZE, ceil_mode=True)
            pooled = _pooled(size)
            self.infos.append(LayerInfo(f"pool{i}", "pool", (out_ch, size, size), (out_ch, pooled, pooled), False))
            channels, size = out_ch, pooled
        features = channels * size * size
        for i, units in enumerate(self.fc_units, start=1):
            last = i == len(self.fc_units)
            self.layers[f"fc{i}"] = nn.Linear(features, units)
            self.infos.append(LayerInfo(f"fc{i}", "fc", (features,), (units,), not last))
            features = units
        self.flat_shape = (channels, size, size)
        self.cut_names = ["input"] + [info.name for info in self.infos]

    # -- cut points -------------------------------------------------------
    def cut_index(self, cut: str) -> int:
        """Index into cut_names (0 = input: the client runs nothing)."""
        name = CUT_ALIASES.get(cut, cut)
        if name not in self.cut_names:
            raise UnknownCutError(
                f"unknown cut point {cut!r}; valid: {', '.join(self.cut_names)} (or 'softmax' for fc5)"
            )
        return self.cut_names.index(name)

    def _run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for info in self.infos[start:stop]:
            if info.kind == "fc" and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = self.layers[info.name](x)
            if info.relu:
                x = torch.relu(x)
        return x

    def client(self, x: torch.Tensor, cut: str) -> torch.Tensor:
        """Layers the client runs: everything up to and including ``cut``."""
        return self._run(x, 0, self.cut_index(cut))

    def server(self, z: torch.Tensor, cut: str) -> torch.Tensor:
        """Layers the server runs on the representation received at ``cut``; returns logits."""
        return self._run(z, self.cut_index(cut), len(self.infos))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; softmax is applied by the loss (training) or by predict_proba."""
        return self._run(x, 0, len(self.infos))

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    # -- bookkeeping ------------------------------------------------------
    def weighted_layers(self) -> list[tuple[str, nn.Module]]:
        return [(info.name, self.layers[info.name]) for info in self.infos if info.kind != "pool"]

    def widths(self) -> dict:
        return {"conv_channels": list(self.conv_channels), "fc_units": list(self.fc_units)}


def build_model(conv_channels=PAPER_CONV_CHANNELS, fc_units=PAPER_FC_UNITS) -> SplitCNN:
    return SplitCNN(conv_channels, fc_units)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


# What stands in for an exact zero in the uncompressed reference: ~1e-18 of a typical weight (1e-2),
# so the outputs do not change in float32 (products with dead units' ~0 outputs may be denormal:
# slower on some CPUs, never different).
STORED_ZERO = 1e-20


def uncompressed_reference(model: SplitCNN) -> SplitCNN:
    """PSNC's model and C_r's numerator when training itself zeroed parameters (proximal L1,
    gradual pruning: pipeline.stages.c_r_reference): the same network with every parameter stored
    and computed, so eqs. (1)-(2) and C_r count all of them, as for the paper's trained model (Adam
    with the L1 term in the loss leaves no exact zero). Each exact zero becomes ``STORED_ZERO``; the
    outputs, hence the accuracy, are the trained model's. A model without zeros is returned as is.
    Deployed at int8 or fp16 the stand-ins round back to zero, so the cut tables apply this to the
    deployed client, not before deployment (pipeline.reporting.tables)."""
    if count_nonzero(model) == count_parameters(model):
        return model
    dense = SplitCNN(model.conv_channels, model.fc_units)
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in dense.parameters():
            p.masked_fill_(p == 0, STORED_ZERO)
    return dense.to(next(model.parameters()).device).eval()


def save_checkpoint(model: SplitCNN, path) -> None:
    state = {k: v.cpu() for k, v in model.state_dict().items()}  # loadable on any machine
    torch.save({"widths": model.widths(), "state_dict": state}, path)


def load_checkpoint(path) -> SplitCNN:
    """A model ``save_checkpoint`` wrote; any other file is a ``CheckpointError`` naming it."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = SplitCNN(**blob["widths"])
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # not a torch file, another layout, other widths
        raise CheckpointError(f"{path}: not a checkpoint of this project's model ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    return model


class CheckpointError(ValueError):
    """A file that is no checkpoint ``save_checkpoint`` wrote (a user error: the path given is wrong)."""
