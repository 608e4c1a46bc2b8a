"""A Sentry ingest stand-in on loopback: it accepts envelopes as Sentry's ingest endpoint does
(POST /api/<project>/envelope/) and keeps every event and client report, for tests that check
what a real sentry-sdk client sends, in-process or from a Gunicorn worker. `hold()` black-holes
it: it accepts connections and reads each envelope, but answers none until `release()`."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SentryIngest:
    def __init__(self) -> None:
        self.events: list[dict] = []  # {"path": ..., "event": ..., "raw": the item's text}
        # what the SDK says it dropped, and why: {"reason": ..., "category": ..., "quantity": ...}
        self.discarded: list[dict] = []
        self.answering = threading.Event()
        self.answering.set()
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                lines = body.decode().splitlines()
                # an envelope: its header line, then item header / payload pairs
                for item_header, payload in zip(lines[1::2], lines[2::2], strict=True):
                    kind = json.loads(item_header)["type"]
                    if kind == "event":
                        ingest.events.append({"path": self.path, "event": json.loads(payload), "raw": payload})
                    elif kind == "client_report":
                        ingest.discarded.extend(json.loads(payload).get("discarded_events", []))
                ingest.answering.wait(60)  # a bound, so a forgotten hold cannot hang the server
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_port}/42"

    def hold(self) -> None:
        """Take connections and envelopes, answer nothing (a collector that hangs)."""
        self.answering.clear()

    def release(self) -> None:
        self.answering.set()

    def start(self) -> SentryIngest:
        self.thread.start()
        return self

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
