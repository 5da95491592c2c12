"""Client-side FedProx and SCAFFOLD for Python trainers (numpy; see flotilla.torch_algorithms for PyTorch).

FedProx: the job sends mu in the task's meta (``fedprox_mu``); :func:`fedprox_mu` reads it.

SCAFFOLD (Karimireddy et al. 2020, option II), as the TypeScript side (src/algorithms/scaffold.ts):
the task's params carry the server control variate c as ``scaffold.c.<name>`` tensors next to the
model; the trainer corrects each local step by -lr * (c - c_i), then sends its model with
delta c_i as ``scaffold.dc.<name>`` tensors::

    sc = flotilla.algorithms.Scaffold()
    model = flotilla.receive()
    x, c = sc.split(model)                    # model params, server variate
    corr = sc.correction(c)                   # c - c_i, per tensor
    ... K local steps of lr, each followed by w -= lr * corr[name] ...
    params = sc.result(x, y, c, steps=K, lr=lr)   # y + scaffold.dc.* ; c_i updated
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .model import FLModel

FEDPROX_MU = "fedprox_mu"
CONTROL_PREFIX = "scaffold.c."
DELTA_PREFIX = "scaffold.dc."
SCAFFOLD_META = "scaffold"


def fedprox_mu(meta: Mapping[str, Any], default: float = 0.0) -> float:
    """FedProx's mu from a task's meta (``default`` when the job sets none); a malformed value raises."""
    v = meta.get(FEDPROX_MU)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"task meta.{FEDPROX_MU} must be a number >= 0, got {v!r}")
    return float(v)


def split_prefixed(params: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params without the prefixed tensors, prefixed tensors with the prefix stripped)."""
    model = {k: v for k, v in params.items() if not k.startswith(prefix)}
    extra = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    return model, extra


class Scaffold:
    """A site's SCAFFOLD state: its control variate c_i (zeros until the first round)."""

    def __init__(self) -> None:
        self.ci: dict[str, np.ndarray] = {}

    @staticmethod
    def enabled(model: FLModel) -> bool:
        return model.meta.get(SCAFFOLD_META) is True

    @staticmethod
    def split(model: FLModel) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(the global model x, the server variate c) of a received task."""
        x, c = split_prefixed(model.params, CONTROL_PREFIX)
        return x, {k: np.asarray(v, dtype=np.float32) for k, v in c.items()}

    def correction(self, c: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """c - c_i per tensor: after each optimizer step, w <- w - lr * correction."""
        return {k: (np.asarray(v, dtype=np.float32) - self.ci.get(k, np.zeros_like(v, dtype=np.float32))).astype(np.float32) for k, v in c.items()}

    def result(self, x: Mapping[str, Any], y: Mapping[str, Any], c: Mapping[str, np.ndarray], steps: int, lr: float) -> dict[str, Any]:
        """Updates c_i (c_i+ = c_i - c + (x - y) / (steps * lr)) and returns y plus delta c_i tensors."""
        if not steps > 0 or not lr > 0:
            raise ValueError(f"SCAFFOLD needs steps > 0 and lr > 0, got steps {steps}, lr {lr}")
        scale = np.float32(1.0 / (steps * lr))
        out: dict[str, Any] = dict(y)
        for k, ck in c.items():
            old = self.ci.get(k, np.zeros_like(ck, dtype=np.float32))
            xk = np.asarray(x[k], dtype=np.float32)
            yk = np.asarray(_numpy(y[k]), dtype=np.float32)
            new = (old - ck + (xk - yk) * scale).astype(np.float32)
            out[DELTA_PREFIX + k] = (new - old).astype(np.float32)
            self.ci[k] = new
        return out


def _numpy(v: Any) -> Any:
    """torch tensors (without importing torch) and numpy arrays alike."""
    detach = getattr(v, "detach", None)
    return detach().cpu().numpy() if callable(detach) else v
