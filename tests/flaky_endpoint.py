"""An OTLP/HTTP endpoint in front of a real one that rejects each service's first export.

The end-to-end workload must show the exporter's own health as a real deployment would:
an endpoint that refuses an export now and then. ``RejectFirst`` answers the first request
of each ``service.name`` with an error status and forwards every other request, body and
encoding untouched, to the backend's OTLP endpoint, answering with the backend's answer.
"""

from __future__ import annotations

import gzip
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest as ExportRequest,
)

METRICS_PATH = "/v1/metrics"


def _service(body: bytes, encoding: str) -> str:
    request = ExportRequest.FromString(gzip.decompress(body) if encoding == "gzip" else body)
    for resource_metrics in request.resource_metrics:
        for kv in resource_metrics.resource.attributes:
            if kv.key == "service.name":
                return kv.value.string_value
    return ""


class RejectFirst:
    """Rejects the first export of each service with ``status``, forwards the rest.

    Use as a context manager; point the exporter at ``metrics_url``. ``rejected`` counts the
    rejected requests by service.
    """

    def __init__(self, upstream: str, *, status: int = 401) -> None:
        self.upstream = upstream
        self.status = status
        self.rejected: dict[str, int] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                status, answer = owner._answer(body, encoding)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                """Keeps test output quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.metrics_url = f"http://127.0.0.1:{self._server.server_address[1]}{METRICS_PATH}"
        self._thread: threading.Thread | None = None

    def _answer(self, body: bytes, encoding: str) -> tuple[int, bytes]:
        service = _service(body, encoding)
        with self._lock:
            first = service not in self.rejected
            if first:
                self.rejected[service] = 1
        if first:
            return self.status, b""
        headers = {"Content-Type": "application/x-protobuf"}
        if encoding:
            headers["Content-Encoding"] = encoding
        request = urllib.request.Request(self.upstream, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def __enter__(self) -> RejectFirst:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
