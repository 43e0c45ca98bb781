"""A tiny local OpenAI-compatible server for tests, benchmarks and dry runs of ``--backend llm``.

It answers ``POST /v1/chat/completions`` on 127.0.0.1 with the rules backend's lesions as JSON, after
``delay_s``. Markers inside a report script faults: ``[[fail500:N]]`` (first N requests for that report
get HTTP 500), ``[[nonjson]]`` / ``[[nonjson-once]]`` (answer is prose always / only the first time),
``[[badschema]]`` (JSON that violates the schema), ``[[slow:S]]`` (sleep S seconds). With
``reject_json_schema=True`` it answers 400 to ``response_format`` type ``json_schema`` like servers
without structured output.

Example:
    >>> with FakeLLMServer(delay_s=0.2) as server:
    ...     options = LLMOptions(base_url=server.base_url, model="fake")
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rsuper.reports.rules import extract_rules


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # accept bursts of concurrent clients without dropped connections


class FakeLLMServer:
    """Context manager running the fake server in a daemon thread; ``requests`` counts completions."""

    def __init__(self, delay_s: float = 0.0, reject_json_schema: bool = False) -> None:
        self.delay_s = delay_s
        self.reject_json_schema = reject_json_schema
        self.requests = 0
        self.response_formats: list[str] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, body: dict) -> tuple[int, dict]:
        """HTTP status and JSON body for one chat-completion request."""
        report = body["messages"][1]["content"].removeprefix("REPORT:\n")
        response_format = (body.get("response_format") or {}).get("type", "none")
        with self._lock:
            self.requests += 1
            self.response_formats.append(response_format)
            self._seen[report] += 1
            seen = self._seen[report]
        if self.reject_json_schema and response_format == "json_schema":
            return 400, {"error": {"message": "response_format json_schema is not supported", "type": "invalid"}}
        slow = re.search(r"\[\[slow:([\d.]+)\]\]", report)
        time.sleep(float(slow.group(1)) if slow else self.delay_s)
        fail = re.search(r"\[\[fail500:(\d+)\]\]", report)
        if fail and seen <= int(fail.group(1)):
            return 500, {"error": {"message": "scripted internal error", "type": "server_error"}}
        if "[[nonjson]]" in report or ("[[nonjson-once]]" in report and seen == 1):
            content = "Sure! The report describes a liver lesion."
        elif "[[badschema]]" in report:
            content = json.dumps({"lesions": [{"organ": "liver", "size_mm": [1, 2, 3, 4, 5]}]})
        else:
            findings = extract_rules("fake", report)
            content = json.dumps({"lesions": [lesion.model_dump(mode="json") for lesion in findings.lesions]})
        return 200, {
            "id": f"chatcmpl-{seen}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real inference servers

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    status, payload = 404, {"error": {"message": f"unknown path {self.path}"}}
                else:
                    status, payload = server.answer(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server API)
                return

        return Handler
