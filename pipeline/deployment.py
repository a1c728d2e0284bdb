"""The split model as deployed: client at ``energy.precision`` -> quantise/encode at the cut ->
decode/dequantise -> server in fp32, and what it achieves at every cut (issue 11).

Torch, no I/O. ``deploy`` calibrates everything on validation images only: the client's
post-training quantisation (integer precisions) and the range of each cut's channel quantiser.
``measure`` then runs a split's images through every cut at once (the client's layers once,
each cut's server from there) and returns, per image and cut, whether the deployed split model
classifies it correctly and the payload bits its representation takes.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np
import torch

from . import quantisation as q
from .data import TensorSplit
from .model import SplitCNN

BATCH_SIZE = 1000  # training.evaluate's: cut "input" then reproduces the model's test accuracy exactly


def arithmetic(precision: str) -> tuple[str, int]:
    """How the client computes at ``energy.precision``: ("float", 32) for fp32, ("fp16", 16), or
    ("int", b) for int<b> (post-training quantisation to b-bit integers)."""
    if precision == "fp32":
        return "float", 32
    if precision == "fp16":
        return "fp16", 16
    match = re.fullmatch(r"int(\d+)", str(precision))
    if match and 2 <= int(match[1]) <= 32:
        return "int", int(match[1])
    raise ValueError(f"energy.precision={precision!r} has no arithmetic model: use int<2..32>, fp16 or fp32")


def _quantisation_points(model: SplitCNN) -> list[int]:
    """Cut indices whose tensors an integer client requantises: the input and every conv/fc
    output (after its ReLU); a max-pool of codes is codes on the same grid, so pools pass through."""
    return [0] + [i + 1 for i, info in enumerate(model.infos) if info.kind != "pool"]


@torch.no_grad()
def cut_outputs(model: SplitCNN, x: torch.Tensor, act: dict[int, q.AffineQuantiser] | None = None,
                fp16: bool = False) -> list[torch.Tensor]:
    """The tensor the client holds at every cut (index 0: the raw input, nothing computed), running
    its layers once. ``act``: an integer client's activation quantisers by cut index (index 0 is the
    first layer's input); ``fp16``: every layer's input and output rounded to fp16."""
    outs = [x]
    h = q.round_to_fp16(x) if fp16 else (act[0](x) if act else x)
    for i, info in enumerate(model.infos, start=1):
        h = model._run(h, i - 1, i)
        if fp16:
            h = q.round_to_fp16(h)
        elif act and i in act:
            h = act[i](h)
        outs.append(h)
    return outs


@dataclass
class Deployment:
    """A model as deployed: ``client`` holds the weights the client computes with (the energy tables
    count its non-zeros), ``server`` the fp32 model the server resumes with."""

    server: SplitCNN
    client: SplitCNN
    precision: str
    activations: dict[int, q.AffineQuantiser]  # integer client: quantiser per requantisation point
    channel: dict[int, q.AffineQuantiser]  # cut index >= 1 -> channel quantiser (empty at 32 bits)
    activation_bits: int

    @property
    def names(self) -> list[str]:
        return self.server.cut_names

    def client_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        kind, _ = arithmetic(self.precision)
        return cut_outputs(self.client, x, self.activations or None, fp16=kind == "fp16")


def _ranges(model: SplitCNN, images: torch.Tensor, cuts, granularity: str, outputs=cut_outputs) -> dict:
    """min/max of the tensors at ``cuts`` over ``images`` (batches of BATCH_SIZE)."""
    found: dict[int, tuple] = {}
    for start in range(0, len(images), BATCH_SIZE):
        outs = outputs(images[start:start + BATCH_SIZE])
        for c in cuts:
            found[c] = q.merge_range(found.get(c), q.channel_range(outs[c], granularity))
    return found


def _integer_client(model: SplitCNN, bits: int, calibration: torch.Tensor) -> tuple[SplitCNN, dict]:
    """Post-training quantisation to b-bit integers (Jacob et al., CVPR 2018, without folding):
    activations per tensor, affine, ranges = min/max of the fp32 model's tensors on the calibration
    images; weights per output unit, symmetric; biases on the accumulator grid s_w * s_x (int32)."""
    points = _quantisation_points(model)
    ranges = _ranges(model, calibration, points, "per_tensor", lambda x: cut_outputs(model, x))
    act = {c: q.AffineQuantiser(*ranges[c], bits) for c in points}
    client = copy.deepcopy(model)
    input_scale = act[0].scale
    with torch.no_grad():
        for i, info in enumerate(client.infos, start=1):
            if info.kind == "pool":
                continue
            layer = client.layers[info.name]
            weight, row_scale = q.symmetric_per_row(layer.weight, bits)
            layer.weight.copy_(weight)
            grid = row_scale.double() * input_scale.double()
            layer.bias.copy_((torch.round(layer.bias.double() / grid) * grid).float())
            input_scale = act[i].scale
    return client, act


def _fp16_client(model: SplitCNN) -> SplitCNN:
    client = copy.deepcopy(model)
    with torch.no_grad():
        for p in client.parameters():
            p.copy_(q.round_to_fp16(p))
    return client


def deploy(model: SplitCNN, precision: str, activation_bits: int, granularity: str,
           calibration: torch.Tensor) -> Deployment:
    """The deployed split model, every range calibrated on ``calibration`` (validation images)."""
    activation_bits = q.check_activation_bits(activation_bits)
    kind, bits = arithmetic(precision)
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()  # never moved in place: a sweep trial may still be training it
    calibration = calibration.cpu()
    act: dict = {}
    if kind == "int":
        client, act = _integer_client(model, bits, calibration)
    elif kind == "fp16":
        client = _fp16_client(model)
    else:
        client = model  # fp32: the model itself, so the paper's figures stay bit-identical
    deployment = Deployment(model, client, precision, act, {}, activation_bits)
    if activation_bits != q.FLOAT_WIDTH:
        cuts = range(1, len(model.cut_names))
        ranges = _ranges(client, calibration, cuts, granularity, deployment.client_outputs)
        deployment.channel = {c: q.AffineQuantiser(*ranges[c], activation_bits) for c in cuts}
    return deployment


@dataclass
class CutMeasurement:
    """Per image (rows) and cut (columns, index 0 = the raw input) of one data split."""

    names: list[str]
    correct: np.ndarray  # bool: the deployed split model's prediction is the label
    body_bits: np.ndarray  # int64: the representation's payload bits (no cut index)
    coding: np.ndarray  # int8: index into quantisation.CODING_FORMATS; -1 = dense coding (not chosen)
    nonzero: np.ndarray  # int64: non-zero elements sent (codes that do not dequantise to 0)
    elements: np.ndarray  # (C,) int64: elements of each cut's tensor

    @property
    def accuracy(self) -> np.ndarray:
        """(C,) accuracy of the deployed split model at every cut."""
        return self.correct.mean(axis=0)


@torch.no_grad()
def measure(deployment: Deployment, split: TensorSplit, coding: str, input_bits: int) -> CutMeasurement:
    """Every image of ``split`` through every cut as deployed: client -> quantise (and encode) ->
    dequantise -> server. The raw input (cut 0) is sent dense at ``input_bits`` per element; other
    cuts at activation_bits per value, dense or sparse (quantisation.sparse_body_bits).

    An fp32 client sending 32-bit values sends the model's own tensor at every cut, so the server's
    layers from any cut compute exactly the model's forward pass (the same operations in the same
    order): its prediction is computed once, from cut 0, and holds at every cut."""
    if coding not in q.ACTIVATION_CODINGS:
        raise ValueError(f"channel.activation_coding must be one of {', '.join(q.ACTIVATION_CODINGS)} "
                         f"(got {coding!r})")
    names, server = deployment.names, deployment.server
    n, n_cuts = len(split), len(names)
    correct = np.zeros((n, n_cuts), dtype=bool)
    body = np.zeros((n, n_cuts), dtype=np.int64)
    fmt = np.full((n, n_cuts), -1, dtype=np.int8)
    nonzero = np.zeros((n, n_cuts), dtype=np.int64)
    elements = np.zeros(n_cuts, dtype=np.int64)
    images, labels = split.images.cpu(), split.labels.cpu()
    exact = arithmetic(deployment.precision)[0] == "float" and not deployment.channel
    for start in range(0, n, BATCH_SIZE):
        rows = slice(start, start + BATCH_SIZE)
        x, y = images[rows], labels[rows]
        for c, z in enumerate(deployment.client_outputs(x)):
            quantiser = deployment.channel.get(c)
            if quantiser is None:
                sent, nz = z, (z != 0)
            else:
                codes = quantiser.quantise(z)
                sent, nz = quantiser.dequantise(codes), ~quantiser.zero_codes(codes)
            if c == 0 or not exact:
                correct[rows, c] = (server.server(sent, names[c]).argmax(1) == y).numpy()
            else:
                correct[rows, c] = correct[rows, 0]
            nz = nz.reshape(len(x), -1).numpy()
            elements[c] = nz.shape[1]
            nonzero[rows, c] = nz.sum(axis=1)
            if c == 0:
                body[rows, c] = q.dense_body_bits(elements[c], input_bits)
            elif coding == "sparse":
                body[rows, c], fmt[rows, c] = q.sparse_body_bits(nz, deployment.activation_bits)
            else:
                body[rows, c] = q.dense_body_bits(elements[c], deployment.activation_bits)
    return CutMeasurement(list(names), correct, body, fmt, nonzero, elements)
