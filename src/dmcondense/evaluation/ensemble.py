"""M ConvNets of one configuration as one wide network: the batched path's fast form for ConvNet.

Network m's channels are the m-th slice of width `C` of one [B, M*C, H, W] tensor, so
  conv        one grouped Conv2d (groups=M) with the M weight tensors concatenated
  norm        GroupNorm(M*C groups) == per-network instance norm; GroupNorm(M groups) ==
              per-network layer norm; the M affines concatenated
  activation  elementwise, pooling per channel: shared as they are
  classifier  one batched matmul over the M linear layers
This is the same arithmetic as running the M networks one by one, without vmap's layout copies
and extra affine passes. Parameters are leaf tensors [M, ...] (like `stack_module_state`), so
one SGD over them is M independent SGDs when the loss is the sum of the per-network losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.models.convnet import ConvNet

SUPPORTED_NORMS = (nn.GroupNorm, nn.Identity)


class _GroupedConv(torch.autograd.Function):
    """3x3 conv with groups=M whose backward runs network by network.

    On the CPU, oneDNN's grouped-convolution backward measured slower than M ordinary backward
    passes of the same total size (docs/results/performance.md); the forward is as fast either way.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, padding: int, groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.groups = padding, groups
        return F.conv2d(x, weight, bias, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        m, pad = ctx.groups, ctx.padding
        c_in, c_out = x.shape[1] // m, weight.shape[0] // m
        need_input = ctx.needs_input_grad[0]
        grad_x = torch.empty_like(x) if need_input else None
        grad_w, grad_b = torch.empty_like(weight), grad_out.new_empty(weight.shape[0])
        for g in range(m):
            outs, ins = slice(g * c_out, (g + 1) * c_out), slice(g * c_in, (g + 1) * c_in)
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_out[:, outs].contiguous(), x[:, ins].contiguous(), weight[outs], [c_out],
                [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [need_input, True, True],
            )  # fmt: skip
            if need_input:
                grad_x[:, ins] = gx
            grad_w[outs], grad_b[outs] = gw, gb
        return grad_x, grad_w, grad_b, None, None


def supports_ensemble(template: nn.Module) -> bool:
    """True for a ConvNet (not a subclass such as ConvNetBN) whose norms are GroupNorm or none."""
    if type(template) is not ConvNet:
        return False
    return all(isinstance(block[1], SUPPORTED_NORMS) for block in template.features)


class ConvNetEnsemble:
    """M ConvNets as one `NetworkStack` (batched.py): `params`, `size`, `losses`, `logits`."""

    def __init__(self, networks: list[nn.Module], device: torch.device) -> None:
        if not all(supports_ensemble(net) for net in networks):
            raise ValueError("ConvNetEnsemble takes ConvNets with GroupNorm or no norm")
        self.size = len(networks)

        def stacked(tensors: list[Tensor]) -> Tensor:
            return torch.stack([t.detach() for t in tensors]).to(device).requires_grad_(True)

        self.params: dict[str, Tensor] = {}
        # Per block: (padding, norm groups per network or None, norm eps, activation, pooling)
        self.blocks: list[tuple[int, int | None, float, nn.Module, nn.Module]] = []
        for index, block in enumerate(networks[0].features):
            conv, norm, activation, pooling = block
            blocks = [net.features[index] for net in networks]
            self.params[f"conv{index}.weight"] = stacked([b[0].weight for b in blocks])
            self.params[f"conv{index}.bias"] = stacked([b[0].bias for b in blocks])
            groups = None
            if isinstance(norm, nn.GroupNorm):
                groups = norm.num_groups
                self.params[f"norm{index}.weight"] = stacked([b[1].weight for b in blocks])
                self.params[f"norm{index}.bias"] = stacked([b[1].bias for b in blocks])
            eps = norm.eps if isinstance(norm, nn.GroupNorm) else 0.0
            self.blocks.append((conv.padding[0], groups, eps, activation, pooling))
        self.params["classifier.weight"] = stacked([net.classifier.weight for net in networks])
        self.params["classifier.bias"] = stacked([net.classifier.bias for net in networks])

    def _forward(self, x: Tensor) -> Tensor:
        """x [B, M*C_in, H, W] (network m's input in channel slice m) -> logits [M, B, K]."""
        m, p = self.size, self.params
        for index, (padding, groups, eps, activation, pooling) in enumerate(self.blocks):
            weight = p[f"conv{index}.weight"]
            x = _GroupedConv.apply(
                x, weight.flatten(0, 1), p[f"conv{index}.bias"].flatten(), padding, m
            )
            if groups is not None:
                x = F.group_norm(
                    x, m * groups, p[f"norm{index}.weight"].flatten(),
                    p[f"norm{index}.bias"].flatten(), eps,
                )  # fmt: skip
            x = pooling(activation(x))
        features = x.reshape(x.shape[0], m, -1).transpose(0, 1)  # [M, B, C*h*w]
        weight, bias = p["classifier.weight"], p["classifier.bias"]  # [M, K, F], [M, K]
        return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))

    def losses(self, x: Tensor, y: Tensor, temperature: float = 1.0) -> Tensor:
        """Per-network mean losses [M] for per-network batches x [M, B, C, H, W], y [M, B],
        on logits / temperature."""
        m, b = y.shape[:2]  # y: labels [M, B] or soft targets [M, B, K]
        wide = x.transpose(0, 1).reshape(b, m * x.shape[2], *x.shape[3:])
        logits = self._forward(wide) / temperature
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(0, 1), reduction="none")
        return losses.view(m, b).mean(1)

    def logits(self, x: Tensor) -> Tensor:
        """Logits [M, B, K] of every network on the shared batch x [B, C, H, W]."""
        return self._forward(x.repeat(1, self.size, 1, 1))
