"""PyTorch helpers for FedProx and SCAFFOLD (the math of flotilla.algorithms, applied to a torch model).

    mu = flotilla.algorithms.fedprox_mu(model.meta)
    anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
    loss = criterion(net(x), y) + fedprox_term(net, anchor, mu)
    ...
    optimizer.step(); scaffold_correct(net, correction, lr)
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch


def fedprox_term(net: torch.nn.Module, anchor: Mapping[str, torch.Tensor], mu: float) -> torch.Tensor:
    """mu/2 * sum ||w - w_global||^2 over the parameters named in ``anchor`` (0 when mu is 0)."""
    params = dict(net.named_parameters())
    term = torch.zeros((), dtype=torch.float32)
    if mu == 0:
        return term
    missing = [k for k in anchor if k not in params]
    if missing:
        raise KeyError(f"fedprox_term: the model has no parameter(s) {', '.join(missing)}")
    for k, a in anchor.items():
        term = term + torch.sum((params[k] - a.to(params[k].dtype)) ** 2)
    return mu / 2 * term


@torch.no_grad()
def scaffold_correct(net: torch.nn.Module, correction: Mapping[str, Any], lr: float) -> None:
    """w <- w - lr * (c - c_i) for each parameter named in ``correction`` (after each optimizer step)."""
    params = dict(net.named_parameters())
    for k, v in correction.items():
        p = params.get(k)
        if p is None:
            raise KeyError(f"scaffold_correct: the model has no parameter {k}")
        p.sub_(lr * torch.from_numpy(np.asarray(v, dtype=np.float32)).to(p.dtype).reshape(p.shape))
