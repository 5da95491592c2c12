"""Flotilla's Python Client API: turn a training script into a federated-learning client.

    import flotilla

    flotilla.init()
    while flotilla.is_running():
        model = flotilla.receive()          # FLModel, params: name -> numpy array
        ...train...
        flotilla.send(flotilla.FLModel(params=new_params, meta={"NUM_STEPS_CURRENT_ROUND": steps}))

The script is started by a Flotilla client, which passes FLOTILLA_SOCKET etc. in the environment.
Standard library + numpy; ``flotilla.torch`` adds PyTorch conversions.
"""
from __future__ import annotations

from typing import Any

from . import safetensors
from .client import PROTOCOL_VERSION, Client, default_client, report_failures
from .dtypes import DTYPES, as_bf16, bf16_bits, bf16_to_f32, bfloat16, f32_to_bf16
from .errors import ConnectionClosedError, FlotillaError, ProtocolError, ProtocolMismatchError
from .model import FLModel, MetaKey, ParamsType
from .safetensors import SafetensorsError

__version__ = "0.1.0"

#: What this package supports, for `flotilla validate` to check against a job: ``params_file`` is
#: ``executor.params: file`` (the model as a safetensors path, ``FLModel.params_path``).
CAPABILITIES = frozenset({"params_file"})


def init(report_exceptions: bool = True) -> None:
    """Connects to the hosting client (protocol version check included). Call once, first."""
    default_client().init(report_exceptions)


def receive(as_torch: bool = False) -> FLModel | None:
    """The current task's model; None once the job is over."""
    return default_client().receive(as_torch)


def send(model: FLModel) -> None:
    """Answers the task received last."""
    default_client().send(model)


def is_cancelled() -> bool:
    """True once the client has cancelled the task received last: stop and call receive() again."""
    return default_client().is_cancelled()


def is_running() -> bool:
    """True while the job goes on (fetches the next task if none is waiting)."""
    return default_client().is_running()


def site_name() -> str:
    return default_client().site_name()


def job_id() -> str:
    return default_client().job_id()


def result_path(name: str = "result.safetensors") -> str:
    """Where to write a ``params: file`` result (then ``send(FLModel(params_path=...))``)."""
    return default_client().result_path(name)


def workspace() -> str:
    return default_client().workspace()


def task_name() -> str:
    return default_client().task_name()


def is_train() -> bool:
    return default_client().is_train()


def is_evaluate() -> bool:
    return default_client().is_evaluate()


def is_submit_model() -> bool:
    return default_client().is_submit_model()


def log(key: str, value: Any, step: int | None = None) -> None:
    """Records a scalar (number) or a text (str) with the client, sent to the server while the task runs."""
    default_client().log(key, value, step)


def log_params(params: dict[str, Any]) -> None:
    """Records run parameters (str, int, float or bool values): MLflow params, a TensorBoard text."""
    default_client().log_params(params)


__all__ = [
    "PROTOCOL_VERSION",
    "DTYPES",
    "Client",
    "FLModel",
    "MetaKey",
    "ParamsType",
    "FlotillaError",
    "ProtocolError",
    "ProtocolMismatchError",
    "ConnectionClosedError",
    "SafetensorsError",
    "safetensors",
    "bfloat16",
    "as_bf16",
    "bf16_bits",
    "bf16_to_f32",
    "f32_to_bf16",
    "report_failures",
    "default_client",
    "init",
    "receive",
    "send",
    "is_cancelled",
    "is_running",
    "site_name",
    "job_id",
    "workspace",
    "task_name",
    "is_train",
    "is_evaluate",
    "is_submit_model",
    "log",
    "log_params",
]
