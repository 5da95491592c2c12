"""The module-level API in a real trainer process, over a real Unix socket, as a client would start it."""
import os
import socket
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from support import FakeHost, subprocess_env
import numpy as np

TRAINERS = Path(__file__).resolve().parent / "trainers"


class Session:
    """Listens on a socket in a temp dir and starts a trainer script with the protocol's environment."""

    def __init__(self, script: str, protocol: str = "1") -> None:
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "trainer.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.proc = subprocess.Popen(
            [sys.executable, str(TRAINERS / script)],
            env=subprocess_env(
                FLOTILLA_SOCKET=path, FLOTILLA_PROTOCOL=protocol, FLOTILLA_SITE_NAME="site-a",
                FLOTILLA_JOB_ID="job-9", FLOTILLA_WORKSPACE=self.dir.name,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        conn, _ = self.listener.accept()
        conn.settimeout(30)
        self.host = FakeHost(conn)

    def finish(self) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=30)
        finally:
            self.host.sock.close()
            self.listener.close()
            self.dir.cleanup()
        return self.proc.returncode, out, err


class TrainerProcessTest(unittest.TestCase):
    def test_add_one_trainer_rounds_logs_and_exit_0(self):
        s = Session("add_one.py")
        hello = s.host.handshake(site="site-a", job="job-9")
        self.assertEqual(hello["pid"], s.proc.pid)
        w = {"w": np.arange(5, dtype=np.float32), "n": np.array([7], np.int64)}
        for r in range(3):
            s.host.task(f"t{r}", w, current_round=r, total_rounds=3)
            log, _ = s.host.expect("log")
            self.assertEqual(log, {"type": "log", "key": "round", "value": float(r), "step": r})
            result, w = s.host.expect("result")
            self.assertEqual(result["taskId"], f"t{r}")
            self.assertEqual(result["model"]["meta"], {"site": "site-a", "job": "job-9", "task": "train", "NUM_STEPS_CURRENT_ROUND": 1})
            self.assertEqual(result["model"]["currentRound"], r)
            w = {k: v.copy() for k, v in w.items()}
        s.host.stop()
        code, _, err = s.finish()
        self.assertEqual(code, 0, err)
        np.testing.assert_array_equal(w["w"], np.arange(5) + 3)
        self.assertEqual(int(w["n"][0]), 10)

    def test_raising_trainer_sends_failed_with_traceback_and_exits_1(self):
        s = Session("raising.py")
        s.host.handshake()
        s.host.task("t0", {"w": np.ones(2, np.float32)})
        failed, _ = s.host.expect("failed")
        code, _, err = s.finish()
        self.assertEqual(code, 1)
        self.assertEqual(failed["message"], "KeyError: 'missing.weight'")
        self.assertIn('raising.py", line 7, in train_one_epoch', failed["traceback"])
        self.assertIn("Traceback (most recent call last)", failed["traceback"])
        self.assertIn("KeyError: 'missing.weight'", err)  # Python still prints it to stderr

    def test_protocol_mismatch_fails_init_clearly(self):
        s = Session("just_init.py", protocol="2")
        s.host.expect("hello")
        s.host.send({"type": "error", "message": "protocol mismatch: client speaks 2, trainer speaks 1"})
        code, out, err = s.finish()
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        self.assertIn("flotilla.errors.ProtocolMismatchError: Flotilla protocol mismatch: this Python package", err)
        self.assertIn("the Flotilla client speaks version 2", err)


if __name__ == "__main__":
    unittest.main()
