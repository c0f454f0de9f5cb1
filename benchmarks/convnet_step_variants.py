"""Bit-exact and layout variants of one ConvNet training step on the CPU, side by side.

    OMP_NUM_THREADS=1 python benchmarks/convnet_step_variants.py

For each shape (channels, side, width, batch) it times a forward and backward step of the
ConvNet as built, and of three variants, interleaved in one process: in-place ReLU; in-place
ReLU with a strided-slice 2x2 average pool (exact backward) on even maps; and channels-last
memory. It prints each variant's speed as a ratio to the plain step (above 1: faster) and
whether its loss and gradients are bit-equal to the plain step's.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from dmcondense.hostmem import reuse_freed_memory
from dmcondense.models.convnet import ConvNet


class _SlicePool(torch.autograd.Function):
    """2x2 average pool, stride 2, summed in avg_pool2d's order; backward spreads grad / 4."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        total = x[..., 0::2, 0::2] + x[..., 0::2, 1::2]
        return total.add_(x[..., 1::2, 0::2]).add_(x[..., 1::2, 1::2]).div_(4)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.shape
        spread = grad.div(4)[:, :, :, None, :, None].expand(n, c, h // 2, 2, w // 2, 2)
        return spread.reshape(n, c, h, w)


class EvenSlicePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            return F.avg_pool2d(x, 2)
        return _SlicePool.apply(x)


def variant(net: ConvNet, inplace_relu: bool, slice_pool: bool) -> ConvNet:
    net = copy.deepcopy(net)
    for block in net.features:
        if inplace_relu:
            block[2] = nn.ReLU(inplace=True)
        if slice_pool:
            block[3] = EvenSlicePool()
    return net


def step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list]:
    net.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


def main() -> None:
    reuse_freed_memory()
    torch.set_num_threads(1)
    for channels, side, width in ((1, 28, 32), (3, 32, 32), (3, 32, 128)):
        for batch in (10, 100, 256):
            torch.manual_seed(0)
            plain = ConvNet(channels, 10, side, width=width)
            x, y = torch.randn(batch, channels, side, side), torch.randint(0, 10, (batch,))
            last = torch.channels_last
            nets = {
                "plain": (plain, x),
                "inplace relu": (variant(plain, True, False), x),
                "relu + slice pool": (variant(plain, True, True), x),
                "channels-last": (copy.deepcopy(plain).to(memory_format=last),
                                  x.contiguous(memory_format=last)),
            }  # fmt: skip
            loss, grads = step(plain, x, y)
            equal, seconds = {}, dict.fromkeys(nets, 0.0)
            for name, (net, inputs) in nets.items():
                other_loss, other_grads = step(net, inputs, y)
                equal[name] = torch.equal(loss, other_loss) and all(
                    torch.equal(a, b) for a, b in zip(grads, other_grads, strict=True)
                )
            for _ in range(4 if batch < 256 else 2):
                for name, (net, inputs) in nets.items():
                    started = time.perf_counter()
                    for _ in range(5):
                        step(net, inputs, y)
                    seconds[name] += time.perf_counter() - started
            ratios = "  ".join(
                f"{name} {seconds['plain'] / s:.2f}x{'' if equal[name] else ' (not bit-equal)'}"
                for name, s in seconds.items()
                if name != "plain"
            )
            print(f"{channels}x{side}x{side} width {width} batch {batch}: {ratios}", flush=True)


if __name__ == "__main__":
    main()
