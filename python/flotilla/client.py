"""The trainer side of the ex-process Client API (docs/client-protocol.md).

Mirrors NVFlare's ``flare.init/receive/send/is_running``: ``is_running()``
fetches the next task when none is waiting, so the NVFlare loop

    while flotilla.is_running():
        model = flotilla.receive()
        ...
        flotilla.send(result)

works unchanged; ``receive()`` returns the same task until it is answered.
"""
from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import sys
import threading
import traceback
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import safetensors as st
from .errors import FlotillaError, ProtocolError, ProtocolMismatchError
from .framing import read_frame, write_frame
from .model import FLModel, model_info, parse_model_info

#: the protocol version this package speaks
PROTOCOL_VERSION = 1

ENV_SOCKET = "FLOTILLA_SOCKET"
ENV_PROTOCOL = "FLOTILLA_PROTOCOL"
ENV_SITE_NAME = "FLOTILLA_SITE_NAME"
ENV_JOB_ID = "FLOTILLA_JOB_ID"
ENV_WORKSPACE = "FLOTILLA_WORKSPACE"

TASK_TRAIN = "train"
TASK_VALIDATE = "validate"
TASK_SUBMIT_MODEL = "submit_model"


@dataclass
class _Task:
    task_id: str
    task_name: str
    model: FLModel
    torch_model: FLModel | None = None


def _mismatch(client_version: Any, detail: str = "") -> ProtocolMismatchError:
    msg = (
        f"Flotilla protocol mismatch: this Python package (flotilla, python/) speaks protocol version "
        f"{PROTOCOL_VERSION}, the Flotilla client speaks version {client_version}. "
        "Use the python/ package from the same Flotilla release as the client."
    )
    return ProtocolMismatchError(f"{msg} Client said: {detail}" if detail else msg)


class Client:
    """One connection to the hosting Flotilla client. Module-level functions use a default instance."""

    def __init__(self, sock: socket.socket | None = None, env: Mapping[str, str] | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._sock = sock
        self._write_lock = threading.Lock()
        self._ready = False
        self._stopped = False
        self._stop_reason: str | None = None
        self._site = self._env.get(ENV_SITE_NAME, "")
        self._job = self._env.get(ENV_JOB_ID, "")
        self._task: _Task | None = None
        #: the task the client cancelled last (its send() is dropped)
        self._cancelled_id: str | None = None
        self._task_name = ""
        self._current_round = 0
        self._total_rounds = 0

    # ---- connection -------------------------------------------------------------

    def init(self, report_exceptions: bool = True) -> None:
        """Connects and shakes hands. With ``report_exceptions`` an uncaught exception is sent to the
        client as ``failed`` (with its traceback) before Python exits non-zero. Calling it again is a no-op."""
        if self._ready:
            return
        env_version = self._env.get(ENV_PROTOCOL)
        if self._sock is None:
            path = self._env.get(ENV_SOCKET)
            if not path:
                raise FlotillaError(
                    f"{ENV_SOCKET} is not set: this script must be started by a Flotilla client "
                    "(an executor whose trainer is a command), which passes the socket path in the environment"
                )
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError as e:
                sock.close()
                raise FlotillaError(f"cannot connect to the Flotilla client at {ENV_SOCKET}={path}: {e}") from None
            self._sock = sock
        self._write({"type": "hello", "protocol": PROTOCOL_VERSION, "language": "python", "pid": os.getpid()})
        try:
            control, _ = read_frame(self._sock)
        except FlotillaError as e:
            if env_version is not None and env_version != str(PROTOCOL_VERSION):
                raise _mismatch(env_version, str(e)) from None
            raise
        kind = control["type"]
        if kind == "error":
            message = str(control.get("message", ""))
            self._close()
            if (env_version is not None and env_version != str(PROTOCOL_VERSION)) or "protocol" in message.lower():
                raise _mismatch(env_version if env_version is not None else "?", message)
            raise ProtocolError(f"the Flotilla client refused this trainer: {message}")
        if kind != "welcome":
            raise ProtocolError(f"expected 'welcome' after 'hello', got {kind!r}")
        if control.get("protocol") != PROTOCOL_VERSION:
            self._close()
            raise _mismatch(control.get("protocol"))
        for k in ("siteName", "jobId"):
            if not isinstance(control.get(k), str):
                raise ProtocolError(f"welcome.{k} must be a string, got {control.get(k)!r}")
        self._site, self._job = control["siteName"], control["jobId"]
        self._ready = True
        if report_exceptions:
            _install_excepthook(self)

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Closes the socket (the client then treats the trainer as gone)."""
        self._ready = False
        self._close()

    def _write(self, control: dict[str, Any], payload: list[Any] | None = None, payload_len: int | None = None) -> None:
        if self._sock is None:
            raise FlotillaError("not connected: call flotilla.init() first")
        with self._write_lock:
            write_frame(self._sock, control, payload or (), payload_len)

    def _require_ready(self) -> socket.socket:
        if not self._ready or self._sock is None:
            raise FlotillaError("call flotilla.init() first")
        return self._sock

    # ---- tasks ------------------------------------------------------------------

    def _fetch(self) -> None:
        """Asks for the next task; sets _task, or _stopped on 'stop'."""
        sock = self._require_ready()
        self._write({"type": "receive"})
        control, payload = read_frame(sock)
        while control["type"] == "cancel":
            # for a task already answered, or one is_cancelled() did not poll for: nothing to do
            control, payload = read_frame(sock)
        kind = control["type"]
        if kind == "stop":
            self._stopped = True
            self._stop_reason = str(control.get("reason", ""))
            return
        if kind == "error":
            raise ProtocolError(f"the Flotilla client reported an error: {control.get('message', '')}")
        if kind != "task":
            raise ProtocolError(f"expected 'task' or 'stop' after 'receive', got {kind!r}")
        task_id, task_name = control.get("taskId"), control.get("taskName")
        if not isinstance(task_id, str) or not isinstance(task_name, str):
            raise ProtocolError(f"task message needs string taskId and taskName, got {task_id!r}, {task_name!r}")
        info = parse_model_info(control.get("model"), f"task {task_id}")
        try:
            params = st.load(payload) if payload is not None else {}
        except st.SafetensorsError as e:
            raise ProtocolError(f"task {task_id}: payload is not valid safetensors: {e}") from None
        if "paramsPath" in info:
            if params:
                raise ProtocolError(f"task {task_id}: the model comes as a file (paramsPath) and as params: one of them")
            # params: file: the tensors are views of the file mapped copy-on-write, read from disk as
            # they are touched (a script written for params in memory runs unchanged)
            try:
                params = st.load_file(info["paramsPath"], mmap="copy")
            except (OSError, st.SafetensorsError) as e:
                raise ProtocolError(f"task {task_id}: cannot map the model file {info['paramsPath']}: {e}") from None
        model = FLModel(
            params=params,
            params_type=info["paramsType"],
            metrics=dict(info["metrics"]),
            meta=dict(info["meta"]),
            current_round=info["currentRound"],
            total_rounds=info["totalRounds"],
            params_path=info.get("paramsPath"),
        )
        self._task = _Task(task_id, task_name, model)
        self._cancelled_id = None
        self._task_name = task_name
        self._current_round, self._total_rounds = info["currentRound"], info["totalRounds"]

    def receive(self, as_torch: bool = False) -> FLModel | None:
        """The current task's model (fetching the next task if none is waiting); None once the job is over.
        Params are numpy arrays viewing the received bytes (writable, no copy), or torch tensors sharing
        that memory with ``as_torch=True``. BF16 arrives as ``flotilla.bfloat16`` raw bits in numpy."""
        self._require_ready()
        if self._task is None and not self._stopped:
            self._fetch()
        if self._task is None:
            return None
        if not as_torch:
            return self._task.model
        if self._task.torch_model is None:
            from .torch import to_torch

            m = self._task.model
            self._task.torch_model = FLModel(to_torch(m.params), m.params_type, m.metrics, m.meta, m.current_round, m.total_rounds, m.params_path)
        return self._task.torch_model

    def send(self, model: FLModel) -> None:
        """Answers the task received last. Params may be numpy arrays or torch tensors; rounds left as
        None are taken from the task."""
        self._require_ready()
        if not isinstance(model, FLModel):
            raise TypeError(f"send() takes a flotilla.FLModel, got {type(model).__name__}; wrap params as FLModel(params=...)")
        if self._task is None and self._cancelled_id is not None:
            return  # the client cancelled the task: nothing to send
        if self._task is None:
            raise FlotillaError("send() answers a task: call receive() first (each task is answered once)")
        if model.params_path is not None and model.params:
            raise FlotillaError("send(): give params or params_path (a file the result was written to), not both")
        if model.params_path is not None and not os.path.isfile(model.params_path):
            raise FlotillaError(f"send(): params_path {model.params_path} is not a file: write the result there first")
        params = _to_numpy_params(model.params)
        if model.params_path is None and params and self._task.model.params_path is not None:
            # the task came as a file: so does the result, written tensor by tensor, and the
            # Flotilla client streams it from there without holding it in memory
            path = self.result_path()
            st.save_file(params, path)
            model = dataclasses.replace(model, params={}, params_path=path)
            params = {}
        info = model_info(model, self._current_round, self._total_rounds)
        head, parts, total = st.encode(params)
        self._write({"type": "result", "taskId": self._task.task_id, "model": info}, [head, *parts], total)
        self._task = None

    def is_cancelled(self) -> bool:
        """True once the client has cancelled the task received last (it timed out, its round closed
        without it, the job was aborted): stop working on it and call receive() for the next one; a
        send() for it is dropped. Does not block: it looks for a `cancel` frame on the socket. A trainer
        that never asks is killed after the client's grace period (cancelGraceMs) and started again."""
        sock = self._require_ready()
        if self._task is None:
            return self._cancelled_id is not None
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        control, _ = read_frame(sock)
        if control["type"] != "cancel":
            raise ProtocolError(f"expected nothing or 'cancel' while a task is pending, got {control['type']!r}")
        if control.get("taskId") != self._task.task_id:
            return False  # for an earlier task
        self._cancelled_id = self._task.task_id
        self._task = None
        return True

    def is_running(self) -> bool:
        """True while the job goes on; fetches the next task when none is waiting (blocks until it comes)."""
        self._require_ready()
        if self._task is None and not self._stopped:
            self._fetch()
        return not self._stopped

    # ---- facts about the job and the task -----------------------------------------

    def site_name(self) -> str:
        return self._site

    def job_id(self) -> str:
        return self._job

    def result_path(self, name: str = "result.safetensors") -> str:
        """Where a ``params: file`` result goes: next to the current task's input file (removed with the
        task's files once the result is sent), else in the workspace."""
        task_path = self._task.model.params_path if self._task is not None else None
        return os.path.join(os.path.dirname(task_path) if task_path else self.workspace(), name)

    def workspace(self) -> str:
        """This site's job workspace (a directory the client created)."""
        return self._env.get(ENV_WORKSPACE) or os.getcwd()

    def task_name(self) -> str:
        return self._task_name

    def is_train(self) -> bool:
        return self._task_name == TASK_TRAIN

    def is_evaluate(self) -> bool:
        return self._task_name == TASK_VALIDATE

    def is_submit_model(self) -> bool:
        return self._task_name == TASK_SUBMIT_MODEL

    def stop_reason(self) -> str | None:
        """Why the job ended (the 'stop' message's reason), once it has."""
        return self._stop_reason

    # ---- metrics and failures -------------------------------------------------------

    def log(self, key: str, value: Any, step: int | None = None) -> None:
        """Records a scalar (a number) or a text (a str) under ``key``; sent to the server at once,
        while the task runs (stored per job, site, round and step: docs/tracking.md)."""
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
            raise ValueError(f"log key must be a string of 1-{MAX_KEY_CHARS} characters, got {key!r}")
        v: float | str
        if isinstance(value, str):
            if len(value) > MAX_TEXT_CHARS:
                raise ValueError(f"log({key!r}): a text is at most {MAX_TEXT_CHARS} characters, got {len(value)}")
            v = value
        else:
            v = _number(value, f"log({key!r}) value")
            if not math.isfinite(v):
                raise ValueError(f"log({key!r}) value is {v}; only finite numbers can be logged")
        msg: dict[str, Any] = {"type": "log", "key": key, "value": v}
        if step is not None:
            s = _number(step, f"log({key!r}) step")
            if s != int(s) or s < 0:
                raise ValueError(f"log({key!r}) step must be an integer >= 0, got {step!r}")
            msg["step"] = int(s)
        self._require_ready()
        self._write(msg)

    def log_params(self, params: dict[str, Any]) -> None:
        """Records run parameters (names to str, int, float or bool): MLflow params, a TensorBoard text."""
        if not isinstance(params, dict):
            raise TypeError(f"log_params takes a dict, got {type(params).__name__}")
        if len(params) > MAX_PARAMS:
            raise ValueError(f"log_params: at most {MAX_PARAMS} params at once, got {len(params)}")
        out: dict[str, Any] = {}
        for k, v in params.items():
            if not isinstance(k, str) or not 1 <= len(k) <= MAX_KEY_CHARS:
                raise ValueError(f"log_params: param names are strings of 1-{MAX_KEY_CHARS} characters, got {k!r}")
            if isinstance(v, bool) or (isinstance(v, str) and len(v) <= MAX_PARAM_CHARS):
                out[k] = v
            elif isinstance(v, str):
                raise ValueError(f"log_params: param {k!r} is longer than {MAX_PARAM_CHARS} characters")
            else:
                x = _number(v, f"log_params: param {k!r}")
                if not math.isfinite(x):
                    raise ValueError(f"log_params: param {k!r} is {x}; only finite numbers can be logged")
                out[k] = int(x) if isinstance(v, int) else x
        self._require_ready()
        self._write({"type": "params", "params": out})

    def fail(self, message: str, tb: str | None = None) -> None:
        """Answers the pending task with ``failed``: the client fails that task with this message."""
        self._require_ready()
        if self._task is None and self._cancelled_id is not None:
            return  # the client cancelled the task: nothing to report
        if self._task is None:
            raise FlotillaError("fail() answers a task: no task is pending")
        msg: dict[str, Any] = {"type": "failed", "message": message}
        if tb:
            msg["traceback"] = tb
        self._write(msg)
        self._task = None

    def report_exception(self, exc: BaseException) -> bool:
        """Answers the pending task with ``failed`` and the exception's traceback (once per exception).
        False when no task is pending: the client then learns of the failure from the exit code and
        the tail of stderr, where Python prints the traceback anyway."""
        if getattr(exc, "__flotilla_reported__", False) or not self._ready or self._task is None:
            return False
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            self.fail(message, tb)
        except (OSError, FlotillaError):
            return False
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, "__flotilla_reported__", True)
        return True


MAX_KEY_CHARS = 256
MAX_TEXT_CHARS = 65536
MAX_PARAMS = 1000
MAX_PARAM_CHARS = 4096


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise TypeError(f"{where} must be a number, got bool")
    if isinstance(v, (int, float)):
        return float(v)
    item = getattr(v, "item", None)  # numpy scalar / torch scalar tensor
    if callable(item):
        x = item()
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return float(x)
    raise TypeError(f"{where} must be a number, got {type(v).__name__}")


def _to_numpy_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """torch tensors -> numpy (zero-copy on CPU); numpy passes through (the writer checks dtypes)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"FLModel.params must be a dict name -> array, got {type(params).__name__}")
    torch = sys.modules.get("torch")
    out: dict[str, Any] = {}
    for name, v in params.items():
        if torch is not None and isinstance(v, torch.Tensor):
            from .torch import tensor_to_numpy

            v = tensor_to_numpy(v)
        out[name] = v
    return out


# ---- uncaught exceptions ---------------------------------------------------------------

_hooked: list[Client] = []


def _install_excepthook(client: Client) -> None:
    """Reports an uncaught exception to the client, then lets Python print it and exit 1."""
    if _hooked:
        _hooked[0] = client
        return
    _hooked.append(client)
    previous = sys.excepthook

    def hook(t: type[BaseException], e: BaseException, tb: Any) -> None:
        with contextlib.suppress(Exception):
            _hooked[0].report_exception(e)
        previous(t, e, tb)

    sys.excepthook = hook


class report_failures(contextlib.ContextDecorator):
    """Context manager / decorator: an exception escaping the block is sent to the client as ``failed``
    (with its traceback) and then re-raised, e.g. for code that catches exceptions above it."""

    def __init__(self, client: Client | Callable[[], Client] | None = None) -> None:
        self._client = client

    def __enter__(self) -> "report_failures":
        return self

    def __exit__(self, t: Any, e: BaseException | None, tb: Any) -> bool:
        if e is not None and not isinstance(e, (SystemExit, GeneratorExit)):
            c = self._client
            client = c if isinstance(c, Client) else (c() if c is not None else default_client())
            client.report_exception(e)
        return False


# ---- the default client (module-level API) ---------------------------------------------

_default: Client | None = None


def default_client() -> Client:
    global _default
    if _default is None:
        _default = Client()
    return _default
