"""A foundation model made here: tiny-vit at 28 px, pretrained by SimCLR on Fashion-MNIST train.

explorer's benchmarks cannot download a foundation model, and a run from random weights leaves
its checkpoint-0 (the foundation view) random. This pretrains one without labels, the way the
foundation models people fine-tune are made (Chen et al., 2020, "A Simple Framework for
Contrastive Learning of Visual Representations"): two augmented views of each image (a random
crop of 55-100 % of the area, the images being 28 px, at 3/4-4/3 aspect, a horizontal flip,
brightness and contrast jitter, sometimes a slight blur), pulled together against the other
images of a batch of 256 (NT-Xent loss, temperature 0.2) through a small projection head
that is then dropped. The augmentations are SimCLR's kinds, less colour (the images are
grey), with milder crops than its 8-100 % (these images are 28 px); nothing in them was chosen
for a planted kind.

The result is saved as a ViTForImageClassification folder (a random head for Fashion-MNIST's
classes) that `explorer finetune --model FOLDER` fine-tunes: its checkpoint-0 is then this
model. Sizes: `SIZES`.

    python benchmarks/simclr.py OUT [--size small|large|xl|xxl] [--epochs 15]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from explorer import data
from explorer.finetune import tiny_vit

# The foundations the benchmarks pretrain: name -> (hidden size, layers). 15 epochs on a
# 2-core CPU: 64 x 2 a few minutes, 128 x 4 17 (1,007 s), 192 x 4 35 (with other work beside).
SIZES = {"small": (64, 2), "large": (128, 4), "xl": (192, 4), "xxl": (256, 4)}
BATCH = 256
TEMPERATURE = 0.2
LR = 1e-3


def augment(images: torch.Tensor) -> torch.Tensor:
    """One random SimCLR view of each image: (N, 1, H, W) in [0, 1] -> normalised to [-1, 1]."""
    n = len(images)
    side = torch.empty(n).uniform_(0.55, 1.0).sqrt()  # of the area, 55-100 %
    aspect = torch.exp(torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3))).sqrt()
    width, height = side * aspect, side / aspect
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 1, 1] = height
    theta[:, 0, 2] = (1 - width).clamp_min(0) * torch.empty(n).uniform_(-1, 1)
    theta[:, 1, 2] = (1 - height).clamp_min(0) * torch.empty(n).uniform_(-1, 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, align_corners=False)
    jitter = torch.rand(n, 1, 1, 1) < 0.8
    mean = views.mean(dim=(2, 3), keepdim=True)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4)
    brightness = torch.empty(n, 1, 1, 1).uniform_(-0.3, 0.3)
    views = torch.where(jitter, (views - mean) * contrast + mean + brightness, views).clamp(0, 1)
    blur = torch.rand(n) < 0.3
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None]) / 16
        padded = F.pad(views[blur], (1, 1, 1, 1), mode="replicate")
        views[blur] = F.conv2d(padded, kernel[None, None])
    return (views - 0.5) / 0.5  # the processor's mean and std, 0.5


def pretrain(out: Path, size: str = "small", epochs: float = 15, seed: int = 0) -> Path:
    """Pretrain tiny-vit-28 of `size` (a name in SIZES) by SimCLR on Fashion-MNIST train and
    save it to `out`; a model already saved there is kept, so that a rerun resumes after it."""
    if (out / "model.safetensors").exists():
        return out
    hidden, layers = SIZES[size]
    torch.manual_seed(seed)
    train = data.read_fashion_mnist()["train"][0]
    images = torch.from_numpy(np.array(train, dtype=np.float32) / 255)[:, None]  # a copy: writable
    model, processor = tiny_vit(
        data.FASHION_MNIST_CLASSES, image_size=28, patch_size=7, hidden_size=hidden,
        num_layers=layers,
    )  # fmt: skip
    head = torch.nn.Sequential(
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 32)
    )
    parameters = [*model.vit.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=LR, weight_decay=0.05)
    steps = int(epochs * len(images) / BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, LR, total_steps=steps, pct_start=0.1)
    pairs = torch.cat([torch.arange(BATCH, 2 * BATCH), torch.arange(BATCH)])  # each view's twin
    model.train()
    start, step = time.perf_counter(), 0
    while step < steps:
        order = torch.randperm(len(images))
        for first in range(0, len(order) - BATCH + 1, BATCH):
            if step == steps:
                break
            batch = images[order[first : first + BATCH]]
            views = torch.cat([augment(batch), augment(batch)]).expand(-1, 3, -1, -1)
            tokens = model.vit(pixel_values=views).last_hidden_state[:, 0]  # explorer's cls
            projected = F.normalize(head(tokens), dim=1)
            similarity = projected @ projected.T / TEMPERATURE
            similarity.fill_diagonal_(float("-inf"))
            loss = F.cross_entropy(similarity, pairs)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            if step % 200 == 0 or step == steps:
                elapsed = time.perf_counter() - start
                print(f"simclr step {step}/{steps}: loss {loss.item():.3f} ({elapsed:.0f} s)")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the pretrained model")
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--epochs", type=float, default=15)
    args = parser.parse_args()
    pretrain(args.out, args.size, args.epochs)


if __name__ == "__main__":
    main()
