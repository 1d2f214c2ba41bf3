"""XOREnsemble: S independent 2-2-1 networks (the smallest that can solve XOR) trained as one batched model.

    model = XOREnsemble(nets=1000, act=actlab.activations.factory("prelu"))
    logits = model(x)            # x (N, 2) shared by all nets -> (S, N) one logit per net and input

Net s computes  logit = act(x W1[s] + b1[s]) W2[s] + b2[s]  with W1 (2, 2), b1 (1, 2), W2 (2, 1), b2 (1, 1):
exactly nn.Sequential(nn.Linear(2, 2), act, nn.Linear(2, 1)) with Linear.weight = W.T. The weights of all
nets are stacked on a leading net axis and applied with torch.baddbmm, so S nets cost about one net's
Python overhead. Nets share nothing: a loss that is the SUM over nets of each net's own loss gives every
net the gradient it would get alone, hence (SGD, Adam: per-element optimizers) the same updates.

The activation is built once (one activation site, `act`); its parameters, if any (PReLU's slope, a
learnable Swish beta), get the net axis in front, shape (S, 1, P) for a (P,) parameter, so they broadcast
over (S, N, hidden) pre-activations per net: PReLU's slope is per net, never shared across the ensemble.
`init`: "torch" is PyTorch's nn.Linear default (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)));
"he" is He normal (std sqrt(2 / fan_in)) weights with zero biases. Weights are drawn before the activation
is built, in a fixed order, so one seed gives the same S initial nets for every activation (paired runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

INITS = ("torch", "he")


class XOREnsemble(nn.Module):
    """`nets` independent in_features-hidden-1 MLPs with one activation site; forward gives (S, N) logits."""

    kind = "xor"  # the data it fits (run.build checks it against the data module's model_kind)

    def __init__(self, in_features: int = 2, act: Callable[[], nn.Module] = nn.ReLU, nets: int = 1000,
                 hidden: int = 2, init: str = "torch"):
        super().__init__()
        for key, value in (("nets", nets), ("hidden", hidden), ("in_features", in_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{key} must be a positive integer, got {value!r}")
        if init not in INITS:
            raise ValueError(f"model.init must be one of {'|'.join(INITS)}, got {init!r}")
        self.nets, self.hidden, self.in_features, self.init = nets, hidden, in_features, init
        self.w1 = nn.Parameter(torch.empty(nets, in_features, hidden))
        self.b1 = nn.Parameter(torch.empty(nets, 1, hidden))
        self.w2 = nn.Parameter(torch.empty(nets, hidden, 1))
        self.b2 = nn.Parameter(torch.empty(nets, 1, 1))
        with torch.no_grad():
            for w, b, fan_in in ((self.w1, self.b1, in_features), (self.w2, self.b2, hidden)):
                if init == "torch":
                    bound = 1.0 / math.sqrt(fan_in)
                    w.uniform_(-bound, bound)
                    b.uniform_(-bound, bound)
                else:
                    w.normal_(0.0, math.sqrt(2.0 / fan_in))
                    b.zero_()
        self.act = act()
        per_net(self.act, nets, hidden)

    def hidden_output(self, x: torch.Tensor) -> torch.Tensor:
        """act(x W1 + b1) of every net: (S, N, hidden); x is (N, in) (shared) or (S, N, in)."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.nets, -1, -1)
        return self.act(torch.baddbmm(self.b1, x, self.w1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.b2, self.hidden_output(x), self.w2).squeeze(-1)

    def net(self, s: int) -> nn.Sequential:
        """Net s as a plain nn.Sequential(Linear, act, Linear) with copies of its current parameters."""
        kw = {"dtype": self.w1.dtype, "device": self.w1.device}
        first, second = nn.Linear(self.in_features, self.hidden, **kw), nn.Linear(self.hidden, 1, **kw)
        act = _single_net_act(self.act, s)
        with torch.no_grad():
            first.weight.copy_(self.w1[s].T)
            first.bias.copy_(self.b1[s, 0])
            second.weight.copy_(self.w2[s].T)
            second.bias.copy_(self.b2[s, 0])
        return nn.Sequential(first, act, second)

    def extra_repr(self) -> str:
        return f"nets={self.nets}, {self.in_features}-{self.hidden}-1, init={self.init}"


def per_net(act: nn.Module, nets: int, hidden: int) -> nn.Module:
    """Give every parameter of `act` a leading net axis (in place): a (P,) or () parameter becomes (S, 1, P)
    (P = 1 for a scalar), which broadcasts over (S, N, hidden). Lazy parameters (per-channel PReLU) are
    materialised first by one forward on a (1, 1, hidden) input. A parameter of more than one dimension
    has no per-net meaning here and is refused."""
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in act.parameters()):
        with torch.no_grad():
            act(torch.zeros(1, 1, hidden))
    for owner_name, owner in act.named_modules():
        for name, p in list(owner.named_parameters(recurse=False)):
            if p.dim() > 1:
                raise ValueError(f"activation parameter {owner_name or 'act'}.{name} of shape {tuple(p.shape)} "
                                 "cannot be made per net (only scalars and per-unit vectors can)")
            value = p.detach().reshape(1, 1, -1).expand(nets, 1, -1).clone()
            setattr(owner, name, nn.Parameter(value, requires_grad=p.requires_grad))
    return act


def _single_net_act(act: nn.Module, s: int) -> nn.Module:
    """A copy of the ensemble's activation holding net s's parameters in their single-net shape."""
    import copy

    single = copy.deepcopy(act)
    for owner in single.modules():
        for name, p in list(owner.named_parameters(recurse=False)):
            value = p.detach()[s].reshape(-1).clone()  # (1, P) -> (P,)
            setattr(owner, name, nn.Parameter(value, requires_grad=p.requires_grad))
    return single
