"""FLModel: what a task carries in and a result carries back (NVFlare's FLModel)."""
from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError


class ParamsType(str, enum.Enum):
    #: params are the model itself
    FULL = "FULL"
    #: params are an update to add to the model the task carried
    DIFF = "DIFF"


class MetaKey:
    """meta keys the server reads (src/core/fl-model.ts MetaKeys)."""

    #: number of training samples behind an update (its FedAvg weight)
    NUM_SAMPLES = "numSamples"
    #: optimizer steps this round (NVFlare's NUM_STEPS_CURRENT_ROUND); preferred FedAvg weight
    NUM_STEPS_CURRENT_ROUND = "NUM_STEPS_CURRENT_ROUND"


@dataclass
class FLModel:
    #: name -> numpy array (or torch tensor); order is kept on the wire
    params: dict[str, Any] = field(default_factory=dict)
    params_type: ParamsType | str = ParamsType.FULL
    metrics: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    #: None on a result: filled in from the task it answers
    current_round: int | None = None
    total_rounds: int | None = None
    #: ``params: file`` jobs: the model is this safetensors file and ``params`` is empty. On a task,
    #: read it lazily (``flotilla.torch.load_file`` maps it); on a result, the file the trainer wrote
    #: (tensor by tensor, e.g. ``flotilla.torch.save_file`` to ``flotilla.result_path()``).
    params_path: str | None = None


def _plain(v: Any, where: str) -> Any:
    """JSON-safe copy of meta values: numpy/torch scalars become Python numbers."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ProtocolError(f"{where} is {v}; JSON cannot carry NaN or Infinity")
        return v
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise ProtocolError(f"{where} has a non-string key {k!r}")
            out[k] = _plain(x, f"{where}.{k}")
        return out
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{where}[{i}]") for i, x in enumerate(v)]
    item = getattr(v, "item", None)  # numpy scalar, 0-d array or 1-element torch tensor
    if callable(item):
        try:
            return _plain(item(), where)
        except (ValueError, RuntimeError):
            pass
    raise ProtocolError(f"{where} has type {type(v).__name__}, which is not JSON (str, number, bool, None, list, dict)")


def model_info(m: FLModel, current_round: int, total_rounds: int) -> dict[str, Any]:
    """The control-message part of an FLModel (everything but params), validated."""
    pt = m.params_type.value if isinstance(m.params_type, ParamsType) else m.params_type
    if pt not in ("FULL", "DIFF"):
        raise ProtocolError(f"FLModel.params_type must be 'FULL' or 'DIFF', got {pt!r}")
    metrics = {}
    for k, v in (m.metrics or {}).items():
        x = _plain(v, f"FLModel.metrics[{k!r}]")
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            raise ProtocolError(f"FLModel.metrics[{k!r}] must be a number, got {type(v).__name__}")
        metrics[str(k)] = x
    meta = _plain(dict(m.meta or {}), "FLModel.meta")
    cr = current_round if m.current_round is None else int(m.current_round)
    tr = total_rounds if m.total_rounds is None else int(m.total_rounds)
    if cr < 0 or tr < 0:
        raise ProtocolError(f"FLModel rounds must be >= 0, got current_round={cr}, total_rounds={tr}")
    info: dict[str, Any] = {"paramsType": pt, "metrics": metrics, "meta": meta, "currentRound": cr, "totalRounds": tr}
    if m.params_path is not None:
        path = os.fspath(m.params_path)
        if not path:
            raise ProtocolError("FLModel.params_path must be a non-empty path")
        info["paramsPath"] = os.path.abspath(path)
    return info


def parse_model_info(obj: Any, where: str) -> dict[str, Any]:
    """Checks the FLModel info of a task message (like FLModelInfoSchema in fl-model.ts)."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}: model must be an object, got {type(obj).__name__}")
    extra = set(obj) - {"paramsType", "metrics", "meta", "currentRound", "totalRounds", "paramsPath"}
    if extra:
        raise ProtocolError(f"{where}: model has unknown field(s) {sorted(extra)}")
    if obj.get("paramsType") not in ("FULL", "DIFF"):
        raise ProtocolError(f"{where}: model.paramsType must be FULL or DIFF, got {obj.get('paramsType')!r}")
    for k in ("metrics", "meta"):
        if not isinstance(obj.get(k), dict):
            raise ProtocolError(f"{where}: model.{k} must be an object")
    for k in ("currentRound", "totalRounds"):
        v = obj.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ProtocolError(f"{where}: model.{k} must be an integer >= 0, got {v!r}")
    if "paramsPath" in obj and (not isinstance(obj["paramsPath"], str) or not obj["paramsPath"]):
        raise ProtocolError(f"{where}: model.paramsPath must be a non-empty string, got {obj['paramsPath']!r}")
    for k, v in obj["metrics"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ProtocolError(f"{where}: model.metrics.{k} must be a number, got {v!r}")
    return obj
