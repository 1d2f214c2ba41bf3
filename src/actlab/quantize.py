"""Dynamic INT8 quantization for CPU inference: what the paper's INT8 numbers (Table 3, Fig. 4) use.
Core, so both `actlab int8` (re-evaluating runs) and the inference benchmark share it."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace transformers' Conv1D (GPT-2's linear layers, weight stored in x out) by nn.Linear, in place.

    quantize_dynamic only quantizes nn.Linear; without this GPT-2 would stay fp32 in the INT8 run.
    """
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                lin = nn.Linear(n_in, n_out)
                with torch.no_grad():
                    lin.weight.copy_(child.weight.t())
                    lin.bias.copy_(child.bias)
                setattr(parent, child_name, lin)
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic INT8 copy (weights int8, activations quantized per batch) of every nn.Linear, for CPU.

    torch.ao.quantization.quantize_dynamic is deprecated in torch 2.14 (moving to torchao) but still
    works; it is the PTQ-without-calibration the paper's INT8 numbers most likely used.
    XLNet's attention projections are raw Parameters used in einsum, so they stay fp32.
    """
    from torch.ao.quantization import quantize_dynamic

    m = conv1d_to_linear(copy.deepcopy(model).cpu().float())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice, once per layer
        return quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8).eval()
