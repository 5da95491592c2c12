import socket
import struct
import threading
import unittest

import support  # noqa: F401  (sys.path)
import numpy as np

from flotilla.errors import ConnectionClosedError, ProtocolError
from flotilla.framing import MAX_CONTROL_BYTES, read_frame, send_all, write_frame


class FramingTest(unittest.TestCase):
    def setUp(self):
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def tearDown(self):
        self.a.close()
        self.b.close()

    def in_thread(self, fn):
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        return t

    def test_layout_matches_the_protocol_document(self):
        write_frame(self.a, {"type": "log", "key": "loss", "value": 0.5}, [b"abc", memoryview(b"de")])
        data = self.b.recv(1000)
        magic, j, p = struct.unpack_from("<4sIQ", data)
        self.assertEqual(magic, b"FLT1")
        self.assertEqual(data[16 : 16 + j], b'{"type":"log","key":"loss","value":0.5}')
        self.assertEqual(p, 5)
        self.assertEqual(data[16 + j :], b"abcde")
        self.assertEqual(len(data), 16 + j + p)

    def test_large_payload_in_many_buffers_arrives_whole(self):
        # 2000 buffers (more than one sendmsg batch) and 24 MB (far more than the socket buffer)
        parts = [np.full(3000, i, dtype=np.int32) for i in range(2000)]
        t = self.in_thread(lambda: write_frame(self.a, {"type": "task"}, parts))
        control, payload = read_frame(self.b)
        t.join(10)
        self.assertEqual(control, {"type": "task"})
        got = np.frombuffer(payload, dtype=np.int32).reshape(2000, 3000)
        np.testing.assert_array_equal(got[:, 0], np.arange(2000))
        np.testing.assert_array_equal(got[:, -1], np.arange(2000))

    def test_send_all_resumes_after_partial_writes(self):
        self.a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * 4096
        t = self.in_thread(lambda: send_all(self.a, [b"x", big, b"", b"yz"]))
        got = bytearray()
        while len(got) < len(big) + 3:
            got += self.b.recv(7777)
        t.join(10)
        self.assertEqual(bytes(got), b"x" + big + b"yz")

    def test_no_payload_reads_as_none_and_utf8_survives(self):
        write_frame(self.a, {"type": "stop", "reason": "fini ✓"})
        self.assertEqual(read_frame(self.b), ({"type": "stop", "reason": "fini ✓"}, None))

    def test_bad_magic(self):
        self.a.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        with self.assertRaisesRegex(ProtocolError, "bad frame magic"):
            read_frame(self.b)

    def test_oversized_control_is_refused_before_reading_it(self):
        self.a.sendall(struct.pack("<4sIQ", b"FLT1", MAX_CONTROL_BYTES + 1, 0))
        with self.assertRaisesRegex(ProtocolError, "over the 16777216-byte limit"):
            read_frame(self.b)

    def test_control_must_be_an_object_with_a_type(self):
        body = b'{"kind":"x"}'
        self.a.sendall(struct.pack("<4sIQ", b"FLT1", len(body), 0) + body)
        with self.assertRaisesRegex(ProtocolError, "string 'type'"):
            read_frame(self.b)

    def test_close_mid_frame_and_between_frames(self):
        self.a.sendall(struct.pack("<4sIQ", b"FLT1", 20, 0) + b"{}")
        self.a.close()
        with self.assertRaisesRegex(ConnectionClosedError, "middle of a control message"):
            read_frame(self.b)
        c, d = socket.socketpair()
        c.close()
        with self.assertRaisesRegex(ConnectionClosedError, "closed the connection$"):
            read_frame(d)
        d.close()

    def test_nan_is_refused_not_sent_as_invalid_json(self):
        with self.assertRaisesRegex(ProtocolError, "NaN"):
            write_frame(self.a, {"type": "log", "value": float("nan")})


if __name__ == "__main__":
    unittest.main()
