"""Input pipeline benchmark on the same batches, measured side by side in one run.

(a) torchvision's per-sample path: MNIST(transform=ToTensor+Normalize) through a DataLoader;
(b) the in-memory tensors of pipeline.data (what training uses);
(c) forward + backward + Adam step alone on pre-built batches: the compute limit.
Printed: batch delivery alone for (a) and (b) (target: b >= 3x a), and a whole training epoch
fed by (a), by (b) and by (c) (target: epoch fed by b within 1.15x of c).

    python benchmarks/bench_data.py [--root ../shared/mnist] [--samples 4500] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import MNIST

from pipeline.data import MNIST_MEAN, MNIST_STD, resolve_root, to_tensor_split
from pipeline.model import build_model
from pipeline.training import seed_everything, sparse_loss

BATCH = 64
MU = 0.99999


def train_step():
    model = build_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(images, labels):
        optimiser.zero_grad(set_to_none=True)
        sparse_loss(model(images), labels, model, MU).backward()
        optimiser.step()
    return step


def timed(batches, step=None) -> float:
    seen, start = 0, time.perf_counter()
    for images, labels in batches:
        if step is not None:
            step(images, labels)
        seen += len(labels)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="MNIST root (default: $MNIST_ROOT or data/)")
    parser.add_argument("--samples", type=int, default=4500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seed_everything(0, 2)
    root = resolve_root(args.root)
    tv = MNIST(str(root), train=True, download=False,
               transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]))
    n = min(args.samples, len(tv))
    order = torch.randperm(len(tv), generator=torch.Generator().manual_seed(0))[:n]  # same batches everywhere
    loader = DataLoader(Subset(tv, order.tolist()), batch_size=BATCH, shuffle=False, num_workers=0)
    split = to_tensor_split(tv.data[order], tv.targets[order])
    prebuilt = list(split.batches(BATCH))
    first_tv = next(iter(loader))[0]
    assert torch.allclose(first_tv, prebuilt[0][0], atol=1e-6), "the two pipelines must give the same tensors"

    feeds = {"a": lambda: iter(loader), "b": lambda: split.batches(BATCH), "c": lambda: iter(prebuilt)}
    data_s = {k: float("inf") for k in "ab"}
    epoch_s = {k: float("inf") for k in "abc"}
    for _ in range(args.repeats):  # interleaved, best of N: machine noise hits every variant alike
        for k in "ab":
            data_s[k] = min(data_s[k], timed(feeds[k]()))
        for k in "abc":
            epoch_s[k] = min(epoch_s[k], timed(feeds[k](), train_step()))
    print(f"{n} samples, batch {BATCH}, best of {args.repeats}")
    print(f"batch delivery  (a) torchvision per-sample {n / data_s['a']:12.0f} samples/s")
    print(f"batch delivery  (b) in-memory tensors      {n / data_s['b']:12.0f} samples/s")
    print(f"training epoch  fed by (a)                 {n / epoch_s['a']:12.0f} samples/s")
    print(f"training epoch  fed by (b)                 {n / epoch_s['b']:12.0f} samples/s")
    print(f"training epoch  (c) compute only           {n / epoch_s['c']:12.0f} samples/s")
    print(f"(b)/(a) delivery speed-up: {data_s['a'] / data_s['b']:8.1f}x   (target >= 3)")
    print(f"(b)/(a) epoch speed-up:    {epoch_s['a'] / epoch_s['b']:8.2f}x")
    print(f"epoch (b) vs (c):          {epoch_s['b'] / epoch_s['c']:8.3f}x   (target <= 1.15)")


if __name__ == "__main__":
    main()
