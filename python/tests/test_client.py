import os
import threading
import time
import unittest

import support
from support import HAVE_TORCH, HostThread, env, model_info
import numpy as np

import flotilla
from flotilla import Client, FLModel
from flotilla.errors import FlotillaError, ProtocolError, ProtocolMismatchError


def connect(h: HostThread, **kw: str) -> Client:
    c = Client(sock=h.trainer_sock, env=env(**kw))
    c.init(report_exceptions=False)
    return c


class HandshakeTest(unittest.TestCase):
    def test_hello_then_welcome(self):
        h = HostThread(lambda host: host.handshake(site="site-7", job="job-42"))
        c = connect(h)
        hello = h.join()
        self.assertEqual(hello, {"type": "hello", "protocol": 1, "language": "python", "pid": os.getpid()})
        self.assertEqual((c.site_name(), c.job_id()), ("site-7", "job-42"))
        c.init()  # a second init is a no-op (no second hello: the host already finished)

    def test_error_reply_is_a_protocol_mismatch_naming_both_versions(self):
        def host(h):
            h.expect("hello")
            h.send({"type": "error", "message": "protocol mismatch: client speaks 2, trainer 1"})

        h = HostThread(host)
        with self.assertRaises(ProtocolMismatchError) as cm:
            connect(h, FLOTILLA_PROTOCOL="2")
        h.join()
        msg = str(cm.exception)
        self.assertIn("speaks protocol version 1", msg)
        self.assertIn("client speaks version 2", msg)
        self.assertIn("client speaks 2, trainer 1", msg)

    def test_welcome_with_another_version_is_a_mismatch(self):
        h = HostThread(lambda host: host.handshake(protocol=2))
        with self.assertRaisesRegex(ProtocolMismatchError, "client speaks version 2"):
            connect(h)
        h.join()

    def test_other_error_is_not_called_a_mismatch(self):
        def host(h):
            h.expect("hello")
            h.send({"type": "error", "message": "job cancelled"})

        h = HostThread(host)
        with self.assertRaises(ProtocolError) as cm:
            connect(h)
        h.join()
        self.assertNotIsInstance(cm.exception, ProtocolMismatchError)
        self.assertIn("job cancelled", str(cm.exception))

    def test_without_a_socket_in_the_environment(self):
        with self.assertRaisesRegex(FlotillaError, "FLOTILLA_SOCKET is not set.*started by a Flotilla client"):
            Client(env={}).init()
        with self.assertRaisesRegex(FlotillaError, "cannot connect to the Flotilla client"):
            Client(env={"FLOTILLA_SOCKET": "/nonexistent/flotilla.sock"}).init()

    def test_calls_before_init(self):
        with self.assertRaisesRegex(FlotillaError, "init"):
            Client(env={}).receive()
        self.assertEqual(Client(env=env()).site_name(), "env-site")


class TaskLoopTest(unittest.TestCase):
    def test_nvflare_loop_two_rounds_then_stop(self):
        w0 = np.arange(6, dtype=np.float32).reshape(2, 3)

        def host(h):
            h.handshake()
            results = []
            w = {"w": w0, "step": np.array(0, np.int64)}
            for r in range(2):
                h.task(f"t{r}", w, current_round=r, total_rounds=2, meta={"lr": 0.1})
                control, params = h.expect("result")
                results.append(control)
                w = {k: v.copy() for k, v in params.items()}
            h.stop("done")
            return results, w

        th = HostThread(host)
        c = connect(th)
        rounds = []
        while c.is_running():
            m = c.receive()
            self.assertIs(c.receive(), m)  # same task until answered
            self.assertTrue(c.is_running())  # does not fetch while a task waits
            rounds.append((m.current_round, m.total_rounds, m.meta, c.task_name(), c.is_train()))
            c.send(FLModel(params={"w": m.params["w"] + 1, "step": m.params["step"] + 1}, meta={"NUM_STEPS_CURRENT_ROUND": 3}))
        self.assertIsNone(c.receive())
        self.assertFalse(c.is_running())
        self.assertEqual(c.stop_reason(), "done")
        results, w = th.join()
        self.assertEqual(rounds, [(0, 2, {"lr": 0.1}, "train", True), (1, 2, {"lr": 0.1}, "train", True)])
        self.assertEqual([r["taskId"] for r in results], ["t0", "t1"])
        self.assertEqual(results[1]["model"], {"paramsType": "FULL", "metrics": {}, "meta": {"NUM_STEPS_CURRENT_ROUND": 3}, "currentRound": 1, "totalRounds": 2})
        np.testing.assert_array_equal(w["w"], w0 + 2)
        self.assertEqual(int(w["step"]), 2)

    def test_received_params_view_the_payload_writable(self):
        def host(h):
            h.handshake()
            h.task("t", {"a": np.ones(4, np.float32), "b": np.zeros(3, np.int8)})
            return h.expect("result")[1]

        th = HostThread(host)
        c = connect(th)
        m = c.receive()
        a, b = m.params["a"], m.params["b"]
        self.assertTrue(a.flags.writeable and not a.flags.owndata)
        root = lambda x: root(x.base) if isinstance(x, np.ndarray) else root(x.obj) if isinstance(x, memoryview) else x  # noqa: E731
        self.assertIsInstance(root(a), bytearray)
        self.assertIs(root(a), root(b))  # one buffer (the frame payload) under every tensor
        a *= 3  # train in place, send the same arrays back
        c.send(FLModel(params=m.params, params_type="DIFF"))
        np.testing.assert_array_equal(th.join()["a"], [3, 3, 3, 3])

    def test_every_dtype_round_trips_bf16_included(self):
        from test_safetensors import every_dtype

        sent = every_dtype()

        def host(h):
            h.handshake()
            h.task("t", sent)
            return h.expect("result")[1]

        th = HostThread(host)
        c = connect(th)
        m = c.receive()
        self.assertEqual(m.params["bf16"].dtype, flotilla.bfloat16)
        np.testing.assert_array_equal(flotilla.bf16_to_f32(m.params["bf16"]), flotilla.bf16_to_f32(sent["bf16"]))
        c.send(FLModel(params=m.params))
        back = th.join()
        for k in sent:
            self.assertEqual((back[k].dtype, back[k].shape, back[k].tobytes()), (sent[k].dtype, sent[k].shape, sent[k].tobytes()), k)

    def test_task_kinds(self):
        def host(h):
            h.handshake()
            for name in ("validate", "submit_model"):
                h.task(name, {}, name=name)
                h.expect("result")

        th = HostThread(host)
        c = connect(th)
        seen = []
        for _ in range(2):
            c.receive()
            seen.append((c.task_name(), c.is_train(), c.is_evaluate(), c.is_submit_model()))
            c.send(FLModel(metrics={"acc": np.float32(0.5)}))
        th.join()
        self.assertEqual(seen, [("validate", False, True, False), ("submit_model", False, False, True)])

    def test_send_rules(self):
        def host(h):
            h.handshake()
            h.task("t", {"x": np.zeros(1)})
            return h.expect("result")

        th = HostThread(host)
        c = connect(th)
        with self.assertRaisesRegex(FlotillaError, "call receive\\(\\) first"):
            c.send(FLModel())
        c.receive()
        with self.assertRaisesRegex(TypeError, "FLModel"):
            c.send({"x": np.zeros(1)})  # type: ignore[arg-type]
        with self.assertRaisesRegex(ProtocolError, r"metrics\['loss'\] is nan"):
            c.send(FLModel(metrics={"loss": float("nan")}))
        with self.assertRaisesRegex(ProtocolError, r"FLModel.meta.obj has type object"):
            c.send(FLModel(meta={"obj": object()}))
        with self.assertRaisesRegex(ProtocolError, "params_type"):
            c.send(FLModel(params_type="HALF"))
        c.send(FLModel(params={}, metrics={"n": 1}, meta={"np": np.int64(5), "nested": [np.float64(0.5), {"k": None}]}))
        with self.assertRaisesRegex(FlotillaError, "call receive\\(\\) first"):
            c.send(FLModel())  # answered already
        control, params = th.join()
        self.assertEqual(params, {})
        self.assertEqual(control["model"]["meta"], {"np": 5, "nested": [0.5, {"k": None}]})

    def test_log_frames(self):
        def host(h):
            h.handshake()
            return [h.expect("log")[0] for _ in range(3)]

        th = HostThread(host)
        c = connect(th)
        c.log("loss", 0.25)
        c.log("acc", np.float32(0.5), step=np.int64(3))
        c.log("n", 7, step=0)
        with self.assertRaisesRegex(ValueError, "finite"):
            c.log("loss", float("inf"))
        with self.assertRaisesRegex(ValueError, "step must be an integer"):
            c.log("loss", 1.0, step=1.5)
        with self.assertRaises(TypeError):
            c.log("loss", [0.5])  # type: ignore[arg-type]  (a text is fine: c.log("note", "high"))
        self.assertEqual(
            th.join(),
            [
                {"type": "log", "key": "loss", "value": 0.25},
                {"type": "log", "key": "acc", "value": 0.5, "step": 3},
                {"type": "log", "key": "n", "value": 7.0, "step": 0},
            ],
        )

    def test_unexpected_reply_and_bad_task(self):
        def host(h):
            h.handshake()
            h.expect("receive")
            h.send({"type": "welcome", "protocol": 1, "siteName": "s", "jobId": "j"})
            h.expect("receive")
            h.send({"type": "task", "taskId": "t", "taskName": "train", "model": model_info(currentRound=-1)})

        th = HostThread(host)
        c = connect(th)
        with self.assertRaisesRegex(ProtocolError, "expected 'task' or 'stop' after 'receive', got 'welcome'"):
            c.receive()
        with self.assertRaisesRegex(ProtocolError, r"task t: model.currentRound must be an integer >= 0, got -1"):
            c.receive()
        th.join()


class FailureReportTest(unittest.TestCase):
    def test_report_failures_sends_the_traceback_once_and_reraises(self):
        def host(h):
            h.handshake()
            h.task("t", {})
            return h.expect("failed")[0]

        th = HostThread(host)
        c = connect(th)
        c.receive()

        def train_step():
            return 1 / 0

        with self.assertRaises(ZeroDivisionError) as cm:
            with flotilla.report_failures(c):
                train_step()
        self.assertFalse(c.report_exception(cm.exception))  # reported already: not twice
        failed = th.join()
        self.assertEqual(failed["message"], "ZeroDivisionError: division by zero")
        self.assertIn("in train_step", failed["traceback"])
        self.assertIn("return 1 / 0", failed["traceback"])

    def test_as_a_decorator(self):
        def host(h):
            h.handshake()
            h.task("t", {})
            return h.expect("failed")[0]

        th = HostThread(host)
        c = connect(th)

        @flotilla.report_failures(c)
        def train(model):
            raise FileNotFoundError("data/train.csv")

        with self.assertRaises(FileNotFoundError):
            train(c.receive())
        self.assertIn("FileNotFoundError: data/train.csv", th.join()["message"])

    def test_no_failed_frame_without_a_pending_task(self):
        # the client treats `failed` outside a task as a protocol violation; the exit code and stderr report it
        def host(h):
            h.handshake()
            h.task("t", {})
            h.expect("result")
            return h.read()

        th = HostThread(host)
        c = connect(th)
        c.receive()
        c.send(FLModel())
        self.assertFalse(c.report_exception(ValueError("after the task")))
        with self.assertRaisesRegex(FlotillaError, "no task is pending"):
            c.fail("x")
        c.log("sentinel", 1)
        self.assertEqual(th.join()[0], {"type": "log", "key": "sentinel", "value": 1.0})


@unittest.skipUnless(HAVE_TORCH, "torch is not installed (apt-get install python3-torch)")
class TorchTest(unittest.TestCase):
    def test_receive_as_torch_shares_memory_and_send_takes_tensors(self):
        import torch

        bf = flotilla.f32_to_bf16(np.array([1.0, -2.0, 0.5]))

        def host(h):
            h.handshake()
            h.task("t", {"w": np.ones((2, 2), np.float32), "h": bf, "n": np.array([5], np.int64)})
            return h.expect("result")[1]

        th = HostThread(host)
        c = connect(th)
        m = c.receive(as_torch=True)
        self.assertIs(c.receive(as_torch=True), m)
        self.assertEqual((m.params["w"].dtype, m.params["h"].dtype, m.params["n"].dtype), (torch.float32, torch.bfloat16, torch.int64))
        self.assertEqual(m.params["h"].tolist(), [1.0, -2.0, 0.5])
        numpy_view = c.receive().params["w"]
        m.params["w"].add_(1)  # shares memory with the numpy view of the payload
        self.assertEqual(float(numpy_view[0, 0]), 2.0)
        lin = torch.nn.Linear(2, 1)
        c.send(FLModel(params={"w": m.params["w"] * 2, "h": m.params["h"] * 2, "lin.weight": lin.weight, "t": m.params["w"].t()}))
        back = th.join()
        np.testing.assert_array_equal(back["w"], np.full((2, 2), 4.0))
        self.assertEqual(back["h"].dtype, flotilla.bfloat16)
        np.testing.assert_array_equal(flotilla.bf16_to_f32(back["h"]), [2.0, -4.0, 1.0])
        np.testing.assert_array_equal(back["lin.weight"], lin.weight.detach().numpy())
        self.assertEqual(back["t"].shape, (2, 2))

    def test_torch_safetensors_files(self):
        import tempfile

        import torch

        import flotilla.torch as ft

        sd = {"a": torch.randn(3, 4), "b": torch.randn(5).to(torch.bfloat16), "c": torch.arange(3), "d": torch.tensor([True, False])}
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "sd.safetensors")
            ft.save_file(sd, p)
            back = ft.load_file(p)
        self.assertEqual(list(back), list(sd))
        for k in sd:
            self.assertEqual(back[k].dtype, sd[k].dtype, k)
            self.assertTrue(torch.equal(back[k], sd[k]), k)
        with self.assertRaisesRegex(TypeError, "complex64 is not supported"):
            ft.from_torch({"z": torch.zeros(2, dtype=torch.complex64)})



class CancelTest(unittest.TestCase):
    def test_cancelled_task_is_seen_dropped_and_the_next_one_taken(self):
        sent_cancel = threading.Event()

        def host(h):
            h.handshake()
            h.task("t0", {"w": np.zeros(2, np.float32)})
            h.send({"type": "cancel", "taskId": "t0", "reason": "round timeout"})
            sent_cancel.set()
            # task() reads the next frame as "receive": no result came for t0
            h.task("t1", {"w": np.ones(2, np.float32)})
            control, _ = h.expect("result")
            h.send({"type": "cancel", "taskId": "t1", "reason": "late"})  # after the result: skipped
            h.stop("done")
            return control

        th = HostThread(host)
        c = connect(th)
        m = c.receive()
        self.assertEqual(m.params["w"].tolist(), [0, 0])
        sent_cancel.wait(10)
        deadline = time.monotonic() + 10
        while not c.is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertTrue(c.is_cancelled())
        c.send(FLModel(params={"w": m.params["w"]}))  # dropped: nothing goes out for t0
        m = c.receive()
        self.assertFalse(c.is_cancelled())
        c.send(FLModel(params={"w": m.params["w"] + 1}))
        self.assertIsNone(c.receive())
        self.assertEqual(th.join()["taskId"], "t1")

if __name__ == "__main__":
    support  # noqa: B018
    unittest.main()
