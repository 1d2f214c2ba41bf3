"""Vision architectures: shapes, activation call sites, parameter counts, knob validation, training.

Run: .venv/bin/python -m pytest tests/test_models.py -q   (tiny widths; CPU, a few seconds)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actlab.models.cnn import CNN
from actlab.models.mlp import MLP
from actlab.models.resnet import ResNet, resnet18, resnet_small
from actlab.models.vit import ViT
from actlab.models.wrn import WideResNet, wrn16_2, wrn40_4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core box a second
    spinning thread made these tests ~10x slower; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Probe(nn.ReLU):
    """A ReLU with its own class, so the sites the factory filled can be found and counted."""


# name -> (builder taking num_classes/in_channels/image_size/act, number of activation sites,
#          one readable site path that must exist). Tiny widths keep every test fast on CPU.
MODELS = {
    "resnet18": (lambda **kw: ResNet(**kw, blocks=(2, 2, 2, 2), width=4), 17, "layer4.1.act2"),  # 1 + 2 * 8
    "resnet_small": (lambda **kw: resnet_small(**kw, width=4), 7, "layer3.0.act2"),  # 1 + 2 * 3
    "wrn16_1": (lambda **kw: WideResNet(**kw, depth=16, widen=1), 13, "block2.1.act1"),  # 2 * 3 * 2 + 1
    "vit_mean": (lambda **kw: ViT(**kw, dim=32, depth=3, heads=2), 3, "blocks.2.mlp.act"),
    "vit_cls": (lambda **kw: ViT(**kw, dim=32, depth=2, heads=2, pool="cls"), 2, "blocks.1.mlp.act"),
    "mlp": (lambda **kw: MLP(**kw, depth=6, width=8), 6, "hidden.5.act"),
    "cnn": (lambda **kw: CNN(**kw, width=4, hidden=8), 3, "stage2.act"),  # 2 conv stages + 1 dense
    "mlp_batch": (lambda **kw: MLP(**kw, depth=4, width=8, norm="batch"), 4, "hidden.3.act"),
    "mlp_layer": (lambda **kw: MLP(**kw, depth=4, width=8, norm="layer"), 4, "hidden.0.act"),
}


def build(name: str, act=nn.ReLU, num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
    torch.manual_seed(0)
    return MODELS[name][0](num_classes=num_classes, in_channels=in_channels, image_size=image_size, act=act)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels,image_size", [(3, 32), (1, 32), (3, 64), (1, 28)])
def test_output_shape(name, in_channels, image_size):
    model = build(name, num_classes=7, in_channels=in_channels, image_size=image_size)
    out = model(torch.randn(3, in_channels, image_size, image_size))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_activation_sites_distinct_and_called_once(name):
    _, n_sites, path = MODELS[name]
    model = build(name, act=Probe)
    sites = {p: m for p, m in model.named_modules() if isinstance(m, Probe)}
    assert len(sites) == n_sites
    assert path in sites
    assert len({id(m) for m in sites.values()}) == n_sites  # distinct objects
    # No site registered under a second name (named_modules() dedups by default, so ask it not to).
    assert len([p for p, m in model.named_modules(remove_duplicate=False) if isinstance(m, Probe)]) == n_sites

    calls = dict.fromkeys(sites, 0)
    for p, m in sites.items():
        m.register_forward_hook(lambda mod, inp, out, p=p: calls.__setitem__(p, calls[p] + 1))
    model(torch.randn(2, 3, 32, 32))
    assert calls == dict.fromkeys(sites, 1)


@pytest.mark.parametrize("name", MODELS)
def test_factory_fills_every_site(name):
    n_sites = MODELS[name][1]
    gelu = build(name, act=nn.GELU)
    assert sum(isinstance(m, nn.GELU) for m in gelu.modules()) == n_sites
    assert not any(isinstance(m, nn.ReLU) for m in gelu.modules())
    # A factory with parameters gives each site its own: PReLU adds exactly one slope per site.
    assert n_params(build(name, act=nn.PReLU)) == n_params(build(name)) + n_sites


@pytest.mark.parametrize("name", ["resnet18", "resnet_small", "wrn16_1", "mlp", "mlp_batch"])
@pytest.mark.parametrize("act,affine", [(nn.Identity, True), (nn.ReLU, False)])
def test_no_nonlinearity_outside_the_sites(name, act, affine):
    """With identity activations these models (BN in eval mode) are affine maps, so no
    functional relu or built-in activation hides outside the factory's sites; with ReLU the
    same check fails, which shows it can."""
    model = build(name, act=act).double().eval()
    a, b = torch.randn(2, 4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        gap = (model((a + b) / 2) - (model(a) + model(b)) / 2).abs().max().item()
    assert (gap < 1e-9) == affine


def test_resnet18_param_count():
    # conv weights are k*k*in*out (no bias), each BN adds 2*C, shortcut = 1x1 conv + BN.
    #   stem   3*64*9 + 2*64                                                   =      1,856
    #   layer1 2 * (2*64*64*9 + 2*2*64)                                         =    147,968
    #   layer2 (64*128*9 + 128*128*9 + 4*128 + 64*128 + 2*128)                  =    230,144
    #          + (2*128*128*9 + 4*128)                                          +    295,424
    #   layer3 (128*256*9 + 256*256*9 + 4*256 + 128*256 + 2*256)                =    919,040
    #          + (2*256*256*9 + 4*256)                                          +  1,180,672
    #   layer4 (256*512*9 + 512*512*9 + 4*512 + 256*512 + 2*512)                =  3,673,088
    #          + (2*512*512*9 + 4*512)                                          +  4,720,640
    #   fc     512*10 + 10                                                      =      5,130
    #   total                                                                   = 11,173,962
    # which is the published CIFAR ResNet-18 count (e.g. kuangliu/pytorch-cifar).
    with torch.device("meta"):  # counts only: skip allocating and initialising 11M weights
        assert n_params(resnet18(num_classes=10, in_channels=3, image_size=32)) == 11_173_962
        # resnet_small: 16*3*9+32 + (2*16*16*9+64) + (16*32*9+32*32*9+128+16*32+64)
        #   + (32*64*9+64*64*9+256+32*64+128) + 64*10+10
        #   = 464 + 4,672 + 14,528 + 57,728 + 650 = 78,042
        assert n_params(resnet_small(num_classes=10, in_channels=3, image_size=32)) == 78_042


def test_wrn_param_count():
    # WRN-40-4: n = (40-4)/6 = 6 blocks per group, widths 64, 128, 256; convs without bias.
    # A block is bn1(2*in) + conv 3x3 in->out + bn2(2*out) + conv 3x3 out->out [+ 1x1 in->out].
    #   stem   3*16*9                                                           =        432
    #   group1 (32 + 16*64*9 + 128 + 64*64*9 + 16*64) + 5*(128 + 2*64*64*9)     =    417,184
    #   group2 (128 + 64*128*9 + 256 + 128*128*9 + 64*128)
    #          + 5*(256 + 2*128*128*9)                                          =  1,706,880
    #   group3 (256 + 128*256*9 + 512 + 256*256*9 + 128*256)
    #          + 5*(512 + 2*256*256*9)                                          =  6,821,632
    #   final BN 2*256 + fc 256*10 + 10                                         =      3,082
    #   total                                                                   =  8,949,210  (paper: 8.9M)
    with torch.device("meta"):
        assert n_params(wrn40_4(num_classes=10, in_channels=3, image_size=32)) == 8_949_210
        # WRN-16-2: 432 + (32+16*32*9+64+32*32*9+16*32) + (64+2*32*32*9+64)
        #   + (64+32*64*9+128+64*64*9+32*64) + (128+2*64*64*9+128)
        #   + (128+64*128*9+256+128*128*9+64*128) + (256+2*128*128*9+256) + 256 + 1,290
        #   = 432 + 14,432 + 18,560 + 57,536 + 73,984 + 229,760 + 295,424 + 1,546 = 691,674
        assert n_params(wrn16_2(num_classes=10, in_channels=3, image_size=32)) == 691_674
        # WRN-28-10 is the other model in Zagoruyko & Komodakis' tables: 36.5M there.
        assert (
            n_params(WideResNet(num_classes=10, in_channels=3, image_size=32, depth=28, widen=10))
            == 36_479_194
        )


def test_cnn_param_count():
    # 28x28x1, width 16, hidden 128: conv 1*16*9 + BN 2*16 = 176; conv 16*32*9 + BN 2*32 = 4,672;
    # fc (32 channels * 7 * 7) * 128 + 128 = 200,832; head 128*10 + 10 = 1,290; total 206,970
    assert n_params(CNN(num_classes=10, in_channels=1, image_size=28, width=16, hidden=128)) == 206_970


def test_vit_and_mlp_param_count():
    # ViT (patch 4, dim 192, depth 6, heads 3, mlp 384) on 32x32x3, 10 classes, cls pooling:
    #   patch conv 3*16*192 + 192 = 9,408; cls 192; pos (64+1)*192 = 12,480
    #   block: 2 LN 4*192 + qkv 3*192*192+3*192 + out 192*192+192 + fc1 192*384+384 + fc2 384*192+192
    #        = 768 + 111,168 + 37,056 + 74,112 + 73,920 = 297,024; x6 = 1,782,144
    #   final LN 384 + head 192*10+10 = 2,314;  total with pool="cls" = 1,806,538
    #   default mean pooling has no cls token and one position fewer: 1,806,538 - 2*192 = 1,806,154
    with torch.device("meta"):
        assert n_params(ViT(num_classes=10, in_channels=3, image_size=32)) == 1_806_154
        assert n_params(ViT(num_classes=10, in_channels=3, image_size=32, pool="cls")) == 1_806_538
    # MLP on 28x28x1, depth 3, width 16: 784*16+16 + 2*(16*16+16) + 16*10+10 = 13,274;
    # batch norm drops the 3*16 linear biases and adds 3*2*16 BN affine parameters: +48.
    assert n_params(MLP(num_classes=10, in_channels=1, image_size=28, depth=3, width=16)) == 13_274
    assert (
        n_params(MLP(num_classes=10, in_channels=1, image_size=28, depth=3, width=16, norm="batch")) == 13_322
    )


BASE = dict(num_classes=10, in_channels=3, image_size=32)


@pytest.mark.parametrize(
    "cls,kwargs,key",
    [
        (ResNet, dict(blocks=()), "model.blocks"),
        (ResNet, dict(blocks=(2, 0)), "model.blocks"),
        (ResNet, dict(width=0), "model.width"),
        (ResNet, dict(num_classes=0), "model.num_classes"),
        (WideResNet, dict(depth=41), r"model.depth must be 6n\+4"),
        (WideResNet, dict(depth=4), r"model.depth must be 6n\+4"),
        (WideResNet, dict(widen=0), "model.widen"),
        (WideResNet, dict(dropout=1.0), "model.dropout"),
        (WideResNet, dict(in_channels=0), "model.in_channels"),
        (ViT, dict(image_size=30), "model.image_size .* divisible by model.patch"),
        (ViT, dict(dim=16, heads=3), "model.dim .* divisible by model.heads"),
        (ViT, dict(depth=0), "model.depth"),
        (ViT, dict(mlp_ratio=0.0), "model.mlp_ratio"),
        (ViT, dict(pool="max"), "model.pool"),
        (MLP, dict(depth=0), "model.depth"),
        (CNN, dict(width=0), "model.width"),
        (CNN, dict(hidden=0), "model.hidden"),
        (CNN, dict(image_size=3), "model.image_size must be >= 4"),
        (MLP, dict(width=0), "model.width"),
        (MLP, dict(norm="group"), "model.norm must be one of none|batch|layer"),
        (MLP, dict(image_size=0), "model.image_size"),
    ],
)
def test_invalid_knobs_raise(cls, kwargs, key):
    with pytest.raises(ValueError, match=key):
        cls(**{**BASE, **kwargs})


@pytest.mark.parametrize("name", MODELS)
def test_sgd_steps_reduce_loss(name):
    """Every parameter gets a gradient, and a few SGD steps on one fixed batch lower its loss."""
    model = build(name, num_classes=4)
    g = torch.Generator().manual_seed(1)
    # Class = a colour offset on noise: a signal that survives global pooling, so every
    # architecture (ViT included) can pick it up within a few steps.
    colours = torch.randn(4, 3, 1, 1, generator=g)
    y = torch.arange(16) % 4
    x = colours[y] + torch.randn(16, 3, 32, 32, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for step in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
            assert not no_grad, f"parameters with no gradient: {no_grad}"
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_hydra_instantiate_with_list_config_and_partial_act():
    """The training entry builds models from `_target_` configs: lists arrive as ListConfig and
    the activation as a partial; both must work."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"_target_": "actlab.models.resnet.ResNet", "blocks": [1, 1], "width": 4})
    act = instantiate({"_target_": "torch.nn.LeakyReLU", "_partial_": True, "negative_slope": 0.2})
    model = instantiate(cfg, num_classes=5, in_channels=1, image_size=28, act=act)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 5 and all(m.negative_slope == 0.2 for m in leaky)  # 1 + 2 * 2


def test_wrn_dropout_between_convs():
    model = WideResNet(**BASE, depth=10, widen=1, dropout=0.3)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.3 for d in drops)
    model.eval()  # dropout off in eval: two passes agree
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))
