"""Shared test helpers: puts python/ on sys.path and plays the Flotilla client's side of the protocol."""
from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable

PYTHON_DIR = Path(__file__).resolve().parents[1]
if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))

from flotilla import safetensors as st  # noqa: E402
from flotilla.framing import read_frame, write_frame  # noqa: E402

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:  # torch is optional: its tests are skipped
    HAVE_TORCH = False


def model_info(current_round: int = 0, total_rounds: int = 1, **kw: Any) -> dict[str, Any]:
    return {"paramsType": "FULL", "metrics": {}, "meta": {}, "currentRound": current_round, "totalRounds": total_rounds, **kw}


class FakeHost:
    """The Flotilla client's end of one trainer connection, written from the protocol document."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, control: dict[str, Any], tensors: dict[str, Any] | None = None, metadata: dict[str, str] | None = None) -> None:
        if tensors is None:
            write_frame(self.sock, control)
        else:
            head, parts, total = st.encode(tensors, metadata)
            write_frame(self.sock, control, [head, *parts], total)

    def read(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        control, payload = read_frame(self.sock)
        return control, (st.load(payload) if payload is not None else None)

    def expect(self, kind: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        control, params = self.read()
        if control["type"] != kind:
            raise AssertionError(f"expected {kind!r}, got {control!r}")
        return control, params

    def handshake(self, site: str = "site-1", job: str = "job-1", protocol: int = 1) -> dict[str, Any]:
        hello, _ = self.expect("hello")
        self.send({"type": "welcome", "protocol": protocol, "siteName": site, "jobId": job})
        return hello

    def task(self, task_id: str, params: dict[str, Any], name: str = "train", **info: Any) -> None:
        self.expect("receive")
        self.send({"type": "task", "taskId": task_id, "taskName": name, "model": model_info(**info)}, params)

    def stop(self, reason: str = "job finished") -> None:
        self.expect("receive")
        self.send({"type": "stop", "reason": reason})


class HostThread:
    """Runs a host script in a thread against one end of a socketpair; the test drives the other end."""

    def __init__(self, script: Callable[[FakeHost], Any]) -> None:
        self.trainer_sock, host_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.host = FakeHost(host_sock)
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = script(self.host)
            except BaseException as e:  # re-raised in join()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 20.0) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("host script did not finish")
        self.host.sock.close()
        self.trainer_sock.close()
        if self.error is not None:
            raise self.error
        return self.result


def env(**kw: str) -> dict[str, str]:
    base = {"FLOTILLA_PROTOCOL": "1", "FLOTILLA_SITE_NAME": "env-site", "FLOTILLA_JOB_ID": "env-job"}
    base.update(kw)
    return base


def subprocess_env(**kw: str) -> dict[str, str]:
    """Environment for a trainer subprocess that imports flotilla from python/."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(PYTHON_DIR) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.update(kw)
    return e
