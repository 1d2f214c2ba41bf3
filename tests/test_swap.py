"""actlab.activations.swap and for_inference on real architectures (torchvision ResNet/ViT, HF BERT).

    .venv/bin/python -m pytest tests/test_swap.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actlab import activations as A
from actlab.activations import HeLU


def _calls_per_site(model, x) -> dict[str, int]:
    counts: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda *_, p=p: counts.__setitem__(p, counts.get(p, 0) + 1))
             for p, m in A.activation_sites(model)]
    model(x)
    for h in hooks:
        h.remove()
    return counts


def test_swap_resnet18_one_distinct_site_per_call_and_faithful_forward():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=10).eval()
    model = torchvision.models.resnet18(num_classes=10).eval()
    model.load_state_dict(ref.state_dict())
    A.swap(model, "relu")
    assert sum("split shared relu" in r for r in model.actlab_swapped) == 8  # every BasicBlock
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))  # the rebound block forward is the original one
    A.swap(model, "helu", margin=0.05)
    sites = A.activation_sites(model)
    assert len(sites) == 17 and all(isinstance(m, HeLU) for _, m in sites)  # stem + 2 per block
    assert len({id(m) for _, m in sites}) == 17
    assert _calls_per_site(model, x) == {p: 1 for p, _ in sites}
    assert "layer1.0.relu2: ReLU -> HeLU" in model.actlab_swapped

    # for_inference: same output bit for bit, with the autograd path live (params require grad)
    out = model(x)
    A.for_inference(model)
    assert not A.helu_modules(model) and torch.equal(model(x), out)


def test_swap_tiny_bert_replaces_every_intermediate_act():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)
    model = transformers.BertModel(cfg)
    A.swap(model, "helu", margin=1.0)
    acts = [layer.intermediate.intermediate_act_fn for layer in model.encoder.layer]
    assert all(isinstance(a, HeLU) and a.margin == 1.0 for a in acts) and len({id(a) for a in acts}) == 3
    assert isinstance(model.pooler.activation, nn.Tanh)  # gates/normalisers are left alone
    assert len(model.actlab_swapped) == 3 and "GELUActivation -> HeLU" in model.actlab_swapped[0]
    out = model(input_ids=torch.randint(0, 50, (2, 8))).last_hidden_state
    out.sum().backward()
    assert out.shape == (2, 8, 16)


def test_swap_tiny_vit_replaces_mlp_gelus():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=10)
    assert sum(isinstance(m, nn.GELU) for m in model.modules()) == 2
    A.swap(model, "helu")
    assert not any(isinstance(m, nn.GELU) for m in model.modules())
    assert [type(layer.mlp[1]) for layer in model.encoder.layers] == [HeLU, HeLU]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_swap_shared_module_gets_one_instance_per_name_and_skips_gates():
    shared = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared, nn.Sigmoid(), nn.Softmax(-1), nn.Tanh())
    gates = [model[4], model[5], model[6]]
    A.swap(model, "smelu", beta=0.5)
    assert isinstance(model[1], A.SmeLU) and isinstance(model[3], A.SmeLU) and model[1] is not model[3]
    assert [model[4], model[5], model[6]] == gates
    assert model.actlab_swapped == ["1: ReLU -> SmeLU", "3: ReLU -> SmeLU"]
    assert A.is_activation(nn.GELU()) and not A.is_activation(nn.Sigmoid())
    with pytest.raises(ValueError):
        A.swap(model, "nope")
