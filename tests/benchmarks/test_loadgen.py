"""Reading wrk's report, and the Python fallback client against a real server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.loadgen import Body, parse_wrk, run_python

WRK_REPORT = """Running 3s test @ http://127.0.0.1:8000/predict
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  310.00us   9.80ms   90.00%
    Req/Sec     3.30k   200.00     3.60k    70.00%
  Latency Distribution
     50%  1.05ms
     75%  1.30ms
     90%  1.60ms
     99%    2.50s
  19800 requests in 3.00s, 9.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   6600.12
Transfer/sec:      3.03MB
"""


def test_wrk_report_is_read_with_its_units() -> None:
    result = parse_wrk(WRK_REPORT, connections=8, seconds=3)

    assert result.requests == 19800
    assert result.rps == pytest.approx(6600.12)
    assert result.p50_ms == pytest.approx(1.05)
    assert result.p99_ms == pytest.approx(2500.0)
    assert result.errors == 2 + 1 + 4


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        status = 200 if body == b'{"ok": true}' else 400
        answer = json.dumps({"seen": len(body)}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_python_client_counts_answers_and_errors() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/predict"
    try:
        good = run_python(url, Body(b'{"ok": true}', "application/json"), connections=2, seconds=0.5)
        bad = run_python(url, Body(b"{}", "application/json"), connections=1, seconds=0.3)
    finally:
        server.shutdown()

    assert good.requests > 0
    assert good.errors == 0
    assert good.p50_ms <= good.p99_ms
    assert bad.errors == bad.requests > 0
