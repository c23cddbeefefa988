"""A real SMTP server on loopback for the e-mail tests (aiosmtpd).

Usage: python3 sink.py OUT_DIR
Listens on 127.0.0.1 on a free port, prints "ready <port>" once accepting, and writes
every message it receives to OUT_DIR/<n>.eml (as received) and OUT_DIR/<n>.json
({"to", "from", "subject", "text", "html"}, decoded). Exits on SIGTERM.
"""
import email
import email.policy
import json
import os
import signal
import socket
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        raw = envelope.original_content or envelope.content
        with open(os.path.join(self.out_dir, f"{n}.eml"), "wb") as f:
            f.write(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        doc = {
            "to": envelope.rcpt_tos,
            "from": envelope.mail_from,
            "subject": str(msg["subject"] or ""),
            "text": text.get_content() if text else "",
            "html": html.get_content() if html else "",
        }
        tmp = os.path.join(self.out_dir, f".{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, os.path.join(self.out_dir, f"{n}.json"))
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    port = free_port()
    controller = Controller(Sink(out_dir), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"ready {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
