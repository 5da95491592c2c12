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


def load_file(path: str | os.PathLike[str], mmap: bool = True) -> dict[str, torch.Tensor]:
    """Like safetensors.torch.load_file (CPU tensors). By default the file is mapped copy-on-write: a
    tensor's pages are read when first touched, written ones are copied (the file never changes), so
    loading costs no memory until used (``params: file`` tasks: ``load_file(model.params_path)``).
    ``mmap=False`` reads the whole file into memory."""
    return to_torch(st.load_file(path, mmap="copy" if mmap else False))


def assign(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Makes ``state_dict``'s tensors the module's parameters and buffers, without copying (what
    ``load_state_dict(..., assign=True)`` does in PyTorch >= 2.1). With ``load_file``'s mapped tensors a
    model is trained in place with no second copy in memory. Dtypes and shapes must match the module's."""
    own = dict(module.named_parameters())
    own_buffers = dict(module.named_buffers())
    missing = [k for k in list(own) + list(own_buffers) if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own and k not in own_buffers]
    if strict and (missing or unexpected):
        raise KeyError(f"assign(): missing {missing}, unexpected {unexpected}")
    for name, t in state_dict.items():
        mine = own.get(name)
        if mine is None:
            mine = own_buffers.get(name)
        if mine is None:
            continue
        if mine.shape != t.shape or mine.dtype != t.dtype:
            raise ValueError(f"assign(): {name} is {tuple(t.shape)} {t.dtype}, the module has {tuple(mine.shape)} {mine.dtype}")
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if name in own:
            owner._parameters[leaf] = torch.nn.Parameter(t, requires_grad=mine.requires_grad)
        else:
            owner._buffers[leaf] = t
