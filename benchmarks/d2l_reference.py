"""The d2l chapter's own training of its ResNet-18, as the reference for ``--recipe d2l-resnet18``.

Dive into Deep Learning, Sec. 8.6 (seed 001) trains its ResNet-18 on Fashion-MNIST resized
to 96x96 with ``d2l.train_ch6(net, train_iter, test_iter, 10, 0.05, d2l.try_gpu())`` and
reports ``5032.7 examples/sec on cuda:0``. This script runs that code on this machine,
without the d2l package (nor torchvision):

* the net: the chapter's ``Residual`` block and ``b1``-``b5``, verbatim;
* the data: ``load_data_fashion_mnist(256, resize=96)``: a ``DataLoader`` with 4 worker
  processes (``d2l.get_dataloader_workers()``) that resizes each 28x28 image on the CPU
  (bilinear, as ``transforms.Resize``) and scales it to [0, 1] (``ToTensor``);
* the loop: ``train_ch6``: Xavier-uniform weights, ``torch.optim.SGD(lr=0.05)``, fp32,
  ``metric.add(l * X.shape[0], accuracy(y_hat, y), X.shape[0])`` after every step (a host
  synchronisation), its ``Timer`` started after each batch arrives and stopped after the
  step: examples/sec = examples / summed step time, the article's figure.

Reported per epoch (a partial epoch counts when ``--seconds`` of wall time run out; the first
``--skip`` steps, cuDNN's and the workers' start-up, are not timed): ``d2l_images_per_s``
(the article's measure: step time only) and ``wall_images_per_s`` (data loading included),
the running loss and training accuracy, and, after complete epochs, the test accuracy.

Run::

    python benchmarks/d2l_reference.py --device cuda --seconds 20 --out results/
    python benchmarks/d2l_reference.py --device cpu --limit 512 --epochs 1 --resize 32

Results: ``<out>/d2l_reference.csv`` and ``<out>/d2l_reference.json`` (machine, config).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import residuals  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import run_benchmark


class Residual(nn.Module):  # d2l, Sec. 8.6, verbatim
    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(
            input_channels, num_channels, kernel_size=3, padding=1, stride=strides
        )
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
    blk = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blk.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blk.append(Residual(num_channels, num_channels))
    return blk


def d2l_net() -> nn.Sequential:
    b1 = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    b2 = nn.Sequential(*resnet_block(64, 64, 2, first_block=True))
    b3 = nn.Sequential(*resnet_block(64, 128, 2))
    b4 = nn.Sequential(*resnet_block(128, 256, 2))
    b5 = nn.Sequential(*resnet_block(256, 512, 2))
    return nn.Sequential(
        b1,
        b2,
        b3,
        b4,
        b5,
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(512, 10),
    )


class ResizedImages(torch.utils.data.Dataset):
    """``transforms.Compose([transforms.Resize(size), transforms.ToTensor()])`` per image."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int):
        self.images, self.labels, self.size = images, labels, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].unsqueeze(0).float()  # (1, 1, 28, 28), 0..255
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x[0].clamp_(0, 255).div_(255.0), self.labels[i]


@dataclass
class Config:
    device: str = "cuda"
    epochs: int = 10  # the article's
    seconds: float = 0.0  # stop after this much wall time of training (0: no limit)
    skip: int = 5  # untimed first steps (start-up)
    batch_size: int = 256
    lr: float = 0.05
    resize: int = 96
    workers: int = 4  # d2l.get_dataloader_workers()
    limit: int = 0  # the first N images of each split only (0: all 60000 and 10000)
    data_dir: str | None = None
    out: Path = Path("benchmarks/results")


def accuracy(y_hat, y):  # d2l.accuracy
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


def evaluate_accuracy_gpu(net, data_iter, device):  # d2l.evaluate_accuracy_gpu
    net.eval()
    right = total = 0.0
    with torch.no_grad():
        for X, y in data_iter:
            X, y = X.to(device), y.to(device)
            right += accuracy(net(X), y)
            total += y.numel()
    return right / total


def _untimed_step(net, optimizer, loss, X, y) -> None:
    optimizer.zero_grad()
    loss(net(X), y).backward()
    optimizer.step()


def measure(cfg: Config) -> dict:
    import pandas as pd

    from residuals.data import load_dataset

    data = load_dataset("fashion-mnist", data_dir=cfg.data_dir, device="cpu", download=False)
    n, m = (cfg.limit or len(data.train_y)), (cfg.limit or len(data.test_y))
    loader = {"batch_size": cfg.batch_size, "num_workers": cfg.workers}
    train_iter = torch.utils.data.DataLoader(
        ResizedImages(data.train_x[:n], data.train_y[:n], cfg.resize),
        shuffle=True,
        **loader,
    )
    test_iter = torch.utils.data.DataLoader(
        ResizedImages(data.test_x[:m], data.test_y[:m], cfg.resize),
        shuffle=False,
        **loader,
    )
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    net = d2l_net()

    def init_weights(m):  # train_ch6
        if type(m) is nn.Linear or type(m) is nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr)
    loss = nn.CrossEntropyLoss()
    rows, stop, skip, start = [], False, cfg.skip, time.perf_counter()
    for epoch in range(cfg.epochs):
        metric = [0.0, 0.0, 0]  # d2l.Accumulator(3): loss sum, right, examples
        epoch_step_time, wall0 = 0.0, time.perf_counter()
        net.train()
        for X, y in train_iter:
            if skip:  # start-up steps: trained, not timed nor counted
                skip -= 1
                _untimed_step(net, optimizer, loss, X.to(device), y.to(device))
                wall0 = time.perf_counter()
                continue
            t0 = time.perf_counter()  # timer.start(): the batch has arrived
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            lo = loss(y_hat, y)
            lo.backward()
            optimizer.step()
            with torch.no_grad():  # float() synchronises, every step, as d2l does
                metric[0] += float(lo * X.shape[0])
                metric[1] += accuracy(y_hat, y)
                metric[2] += X.shape[0]
            epoch_step_time += time.perf_counter() - t0  # timer.stop()
            if cfg.seconds and time.perf_counter() - start >= cfg.seconds:
                stop = True
                break
        wall = time.perf_counter() - wall0
        complete = not stop
        rows.append(
            {
                "epoch": epoch + 1,
                "complete": complete,
                "examples": metric[2],
                "train_loss": metric[0] / metric[2],
                "train_acc": metric[1] / metric[2],
                "test_acc": evaluate_accuracy_gpu(net, test_iter, device) if complete else None,
                "d2l_images_per_s": metric[2] / epoch_step_time,
                "wall_images_per_s": metric[2] / wall,
                "step_seconds": epoch_step_time,
                "wall_seconds": wall,
            }
        )
        print(
            f"epoch {epoch + 1}: {metric[2]} examples, loss {rows[-1]['train_loss']:.3f}, "
            f"train acc {rows[-1]['train_acc']:.3f}, {rows[-1]['d2l_images_per_s']:.1f} "
            f"examples/sec (d2l's timer), {rows[-1]['wall_images_per_s']:.1f} wall",
            flush=True,
        )
        if stop:
            break
    return {"results": pd.DataFrame(rows)}


def show(tables: dict, info: dict) -> None:
    df = tables["results"]
    examples = df["examples"].sum()
    print(
        f"\nd2l reference on {info['machine'].get('gpu') or info['machine'].get('device')}: "
        f"{examples / df['step_seconds'].sum():.1f} examples/sec (d2l's timer), "
        f"{examples / df['wall_seconds'].sum():.1f} wall"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=Config.epochs)
    p.add_argument("--seconds", type=float, default=Config.seconds)
    p.add_argument("--skip", type=int, default=Config.skip)
    p.add_argument("--batch-size", type=int, default=Config.batch_size)
    p.add_argument("--workers", type=int, default=Config.workers)
    p.add_argument("--limit", type=int, default=Config.limit)
    p.add_argument("--resize", type=int, default=Config.resize)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=Config.out)
    a = p.parse_args(argv)
    cfg = Config(
        device=a.device,
        epochs=a.epochs,
        seconds=a.seconds,
        skip=a.skip,
        batch_size=a.batch_size,
        workers=a.workers,
        limit=a.limit,
        resize=a.resize,
        data_dir=a.data_dir,
        out=a.out,
    )
    run_benchmark("d2l_reference", cfg, measure, show)


if __name__ == "__main__":
    main()
