"""Architectures, the registry and seeded re-initialisation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dmcondense.models import (
    MODELS,
    ConvNet,
    ConvNetBN,
    build_model,
    default_depth,
    reset_parameters,
    uses_batchnorm,
)
from dmcondense.rng import generator

SHAPES = [(1, 28), (3, 32), (3, 64)]  # (channels, image_size)
NARROW = {  # the width knob of every pool model that has one, small
    "convnet": {"width": 8},
    "convnet_bn": {"width": 8},
    "resnet18": {"width": 4},
    "resnet18_bn": {"width": 4},
    "alexnet": {"width": 8},
    "vgg11": {"width": 8},
}


def test_registry_names() -> None:
    expected = {"convnet", "convnet_bn", "alexnet", "vgg11", "resnet18", "resnet18_bn", "lenet"}
    assert set(MODELS) == expected | {"mlp"}


@pytest.mark.parametrize("channels,image_size", SHAPES)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_on_every_shape(name: str, channels: int, image_size: int) -> None:
    torch.manual_seed(0)  # inputs only; the models' own init is irrelevant here
    # Narrow networks keep this fast: the shapes follow the image size, not the width. The full
    # widths are checked without a forward pass (test_pool_models_have_their_standard_widths,
    # test_resnet18_has_the_standard_size, test_convnet_embedding_is_2048_wide).
    model = build_model(name, channels, 7, image_size, **NARROW.get(name, {}))
    x = torch.randn(2, channels, image_size, image_size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    features = model.embed(x)
    assert features.shape == (2, model.embed_dim)


@pytest.mark.parametrize(
    "channels,image_size,depth", [(3, 32, 3), (1, 28, 3), (3, 64, 4), (3, 128, 5)]
)
def test_convnet_embedding_is_2048_wide(channels: int, image_size: int, depth: int) -> None:
    net = build_model("convnet", channels, 10, image_size)
    assert len(net.features) == depth
    assert net.embed_dim == 2048
    x = torch.zeros(1, channels, image_size, image_size)
    assert net.embed(x).shape == (1, 2048)
    assert net.classifier.in_features == 2048


def test_resnet18_has_the_standard_size() -> None:
    for name in ("resnet18", "resnet18_bn"):
        model = build_model(name, 3, 10, 32)
        assert model.embed_dim == 512
        # CIFAR-style ResNet18 on 10 classes: about 11.17 million parameters.
        assert 11.1e6 < sum(p.numel() for p in model.parameters()) < 11.2e6


def test_pool_models_have_their_standard_widths() -> None:
    def conv_widths(model: nn.Module) -> list[int]:
        return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]

    alexnet = build_model("alexnet", 3, 10, 32)
    assert conv_widths(alexnet) == [128, 192, 256, 192, 192] and alexnet.embed_dim == 192 * 4 * 4
    vgg = build_model("vgg11", 3, 10, 32)
    assert conv_widths(vgg) == [64, 128, 256, 256, 512, 512, 512, 512] and vgg.embed_dim == 512
    # The width knob scales every layer and keeps the ratios.
    assert conv_widths(build_model("alexnet", 3, 10, 32, width=8)) == [8, 12, 16, 12, 12]
    assert conv_widths(build_model("vgg11", 3, 10, 32, width=8)) == [8, 16, 32, 32, 64, 64, 64, 64]


def test_default_depth_follows_image_size_and_can_be_overridden() -> None:
    assert [default_depth(s) for s in (28, 32, 64, 128)] == [3, 3, 4, 5]
    net = build_model("convnet", 3, 10, 64, depth=3, width=8)
    assert len(net.features) == 3 and net.embed_dim == 8 * 8 * 8


def test_first_conv_pads_28_by_3_so_the_map_is_32() -> None:
    net = ConvNet(1, 10, 28, width=4)
    first_conv = net.features[0][0]
    assert first_conv.padding == (3, 3)
    assert all(block[0].padding == (1, 1) for block in net.features[1:])
    assert first_conv(torch.zeros(1, 1, 28, 28)).shape[-2:] == (32, 32)
    assert ConvNet(3, 10, 32, width=4).features[0][0].padding == (1, 1)


def test_convnet_knobs() -> None:
    net = ConvNet(3, 10, 32, width=8, depth=2, norm="none", activation="sigmoid", pooling="none")
    assert net.embed_dim == 8 * 32 * 32
    assert isinstance(net.features[0][2], nn.Sigmoid)
    net = ConvNet(3, 10, 32, width=8, norm="layernorm", activation="leakyrelu", pooling="maxpool")
    norm = net.features[0][1]
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 1
    instance = ConvNet(3, 10, 32, width=8).features[0][1]
    assert isinstance(instance, nn.GroupNorm) and instance.num_groups == 8 and instance.affine


def test_convnet_bn_uses_batchnorm() -> None:
    bn_net = ConvNetBN(3, 10, 32, width=8)
    assert isinstance(bn_net.features[0][1], nn.BatchNorm2d)
    assert uses_batchnorm(bn_net) and uses_batchnorm(build_model("resnet18_bn", 3, 10, 32))
    assert not uses_batchnorm(build_model("convnet", 3, 10, 32, width=8))
    assert not uses_batchnorm(build_model("resnet18", 3, 10, 32))
    with pytest.raises(ValueError, match="batchnorm"):
        ConvNetBN(3, 10, 32, norm="instancenorm")


@pytest.mark.parametrize(
    "knob,valid", [("norm", "instancenorm"), ("activation", "relu"), ("pooling", "avgpool")]
)
def test_unknown_convnet_knob_names_the_options(knob: str, valid: str) -> None:
    with pytest.raises(ValueError, match=valid):
        ConvNet(3, 10, 32, **{knob: "bogus"})


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="convnet_bn"):
        build_model("resnet50", 3, 10, 32)


def test_too_deep_convnet_is_rejected() -> None:
    with pytest.raises(ValueError, match="too deep"):
        ConvNet(3, 10, 32, width=4, depth=6)


def test_instancenorm_normalises_each_sample_and_channel_alone() -> None:
    g = generator(0, "test-instancenorm")
    net = reset_parameters(ConvNet(3, 10, 32, width=8), g)
    block = net.features[0]
    x = torch.randn(3, 3, 32, 32, generator=g)
    scaled = x.clone()
    scaled[1] *= 7.0  # conv is linear up to its bias, which the per-channel mean removes
    scaled[2] = torch.randn(3, 32, 32, generator=g)
    out, out_scaled = block(x), block(scaled)
    torch.testing.assert_close(out_scaled[:2], out[:2], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out_scaled[2], out[2])

    normalised = block[1](block[0](x))  # before the activation: zero mean, unit std per map
    torch.testing.assert_close(normalised.mean((2, 3)), torch.zeros(3, 8), atol=1e-4, rtol=0)
    std = normalised.std((2, 3), unbiased=False)
    torch.testing.assert_close(std, torch.ones(3, 8), atol=1e-3, rtol=0)

    # Control: batch statistics couple the samples, so the same edit leaks into sample 0.
    bn_block = ConvNetBN(3, 10, 32, width=8).features[0]
    assert not torch.allclose(bn_block(scaled)[0], bn_block(x)[0], atol=1e-4)


def _perturb(module: nn.Module) -> None:
    """Move every parameter and buffer away from any init value."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.add_(torch.full_like(tensor, 3))


def test_reset_parameters_is_repeatable_and_seed_dependent() -> None:
    first = build_model("convnet_bn", 3, 10, 32, width=16)
    second = build_model("convnet_bn", 3, 10, 32, width=16)
    _perturb(second)
    other = build_model("convnet_bn", 3, 10, 32, width=16)
    reset_parameters(first, generator(1, "net", 5))
    reset_parameters(second, generator(1, "net", 5))
    reset_parameters(other, generator(1, "net", 6))
    for (name, a), b, c in zip(
        first.state_dict().items(),
        second.state_dict().values(),
        other.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), name
        if name.endswith(("0.weight", "0.bias", "classifier.weight", "classifier.bias")):
            assert not torch.equal(a, c), name  # random tensors differ between seeds


def test_reset_parameters_restores_norm_defaults_and_running_stats() -> None:
    net = build_model("resnet18_bn", 3, 10, 32, width=8)
    _perturb(net)
    reset_parameters(net, generator(0, "net"))
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
            assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))
            assert module.num_batches_tracked.item() == 0


def test_reset_parameters_matches_pytorch_default_statistics() -> None:
    torch.manual_seed(123)  # the default-initialised twin draws from the global RNG
    default = ConvNet(3, 10, 32)
    seeded = reset_parameters(ConvNet(3, 10, 32), generator(0, "net", 0))
    layers = [*(block[0] for block in seeded.features), seeded.classifier]
    twins = [*(block[0] for block in default.features), default.classifier]
    for layer, twin in zip(layers, twins, strict=True):
        fan_in = layer.weight[0].numel()
        bound = 1 / fan_in**0.5  # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), +)
        assert layer.weight.abs().max() <= bound
        ratio = layer.weight.std() / twin.weight.std()
        assert 0.9 < ratio < 1.1
        assert layer.bias.abs().max() <= bound
        assert 0.7 < layer.bias.std() / twin.bias.std() < 1.4


def test_reset_parameters_ignores_memory_format() -> None:
    plain = ConvNet(3, 10, 32, width=8)
    channels_last = ConvNet(3, 10, 32, width=8).to(memory_format=torch.channels_last)
    reset_parameters(plain, generator(3, "net"))
    reset_parameters(channels_last, generator(3, "net"))
    for a, b in zip(plain.parameters(), channels_last.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("module", [nn.Embedding(4, 3), nn.Sequential(nn.Bilinear(2, 2, 2))])
def test_reset_parameters_rejects_unknown_parameterised_modules(module: nn.Module) -> None:
    with pytest.raises(TypeError, match="does not know"):
        reset_parameters(module, generator(0))


def test_reset_parameters_covers_every_pool_model() -> None:
    for name in MODELS:
        model = build_model(name, 3, 10, 32, **NARROW.get(name, {}))
        reset_parameters(model, generator(0, name))  # raises if any layer type is unknown


@pytest.mark.parametrize("make", [ConvNet, ConvNetBN])
def test_convnet_relu_runs_in_place_with_the_same_values_and_second_order_gradients(make) -> None:
    """In place as the reference ConvNet (one activation map fewer a block, which MTT's unroll
    keeps for every inner step); the norm before it saves its input, not its output."""
    torch.manual_seed(0)
    net = make(3, 10, 32, width=8)
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
    out_of_place = copy.deepcopy(net)
    for m in out_of_place.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.randn(6, 3, 32, 32)
    grads = []
    for model in (net, out_of_place):
        images = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(images), torch.arange(6))
        params = list(model.parameters())
        first = torch.autograd.grad(loss, params, create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in first), images)[0]
        grads.append((loss.detach(), [g.detach() for g in first], second))
    (loss_a, first_a, second_a), (loss_b, first_b, second_b) = grads
    assert torch.equal(loss_a, loss_b) and torch.equal(second_a, second_b)
    assert all(torch.equal(a, b) for a, b in zip(first_a, first_b, strict=True))
