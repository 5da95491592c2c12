"""PyTorch helpers: numpy params <-> torch tensors sharing memory, and safetensors files of state dicts.

Imported lazily (``import flotilla.torch``) so numpy-only trainers never pay for importing torch.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch

from . import safetensors as st
from .dtypes import bf16_bits, bfloat16


def array_to_tensor(a: np.ndarray) -> torch.Tensor:
    """numpy -> torch sharing memory; BF16 bits become torch.bfloat16 (via an int16 view). Read-only
    arrays are copied (torch tensors are always writable)."""
    if not a.flags.writeable:
        a = a.copy()
    if a.dtype == bfloat16:
        return torch.from_numpy(bf16_bits(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """torch -> numpy; no copy for a contiguous CPU tensor. torch.bfloat16 becomes flotilla.bfloat16 bits."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(bfloat16)
    if t.dtype not in _SUPPORTED:
        raise TypeError(f"torch dtype {t.dtype} is not supported; use one of {', '.join(str(d) for d in _SUPPORTED)} or torch.bfloat16")
    return t.numpy()


_SUPPORTED = (torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


def to_torch(params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A params dict (numpy) as torch tensors sharing its memory; torch tensors pass through."""
    return {k: v if isinstance(v, torch.Tensor) else array_to_tensor(np.asarray(v)) for k, v in params.items()}


def from_torch(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A state dict as numpy arrays (zero-copy for contiguous CPU tensors)."""
    return {k: tensor_to_numpy(v) if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in state_dict.items()}


def save_file(state_dict: Mapping[str, Any], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> None:
    """Like safetensors.torch.save_file (tensors written in the dict's order)."""
    st.save_file(from_torch(state_dict), path, metadata)


def load_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Like safetensors.torch.load_file (CPU tensors)."""
    return to_torch(st.load_file(path))
