"""The HTTP endpoint: /metrics (Prometheus text or OpenMetrics, as the
scraper asks), POST /-/trigger (freeze an incident), /-/healthy. With basic
auth configured every path needs it; without, a trigger is taken only from
loopback."""
from __future__ import annotations

import ipaddress
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..errors import UsageError
from .webconfig import WebConfig


def parse_listen(text: str) -> Tuple[str, int]:
    """ADDR:PORT, [v6]:PORT or :PORT (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text}: expected ADDR:PORT, e.g. 127.0.0.1:9979")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise UsageError(f"--listen {text}: {host!r} is not an IP address") from None
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # bounded: a scraper that opens connections without end must not grow us
    request_queue_size = 16

    def handle_error(self, request, client_address):
        # a client that hangs up, or speaks plain HTTP to TLS: not worth a traceback
        import os, traceback
        if os.environ.get("TCPOOM_DEBUG_HTTP"):
            traceback.print_exc()


def _family(host: str):
    import socket
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Endpoint:
    def __init__(self, listen: str, registry: CollectorRegistry, web: WebConfig,
                 on_trigger: Optional[Callable[[str], bool]] = None, log=None):
        host, port = parse_listen(listen)
        self.registry = registry
        self.web = web
        self.on_trigger = on_trigger
        self.log = log or (lambda msg: print(f"tcpoom: {msg}", file=sys.stderr, flush=True))
        handler = self._handler()
        server_cls = type("Server", (_Server,), {"address_family": _family(host or "::")})
        try:
            self.server = server_cls((host or "::", port), handler)
        except OSError as e:
            raise UsageError(f"--listen {listen}: {e.strerror}") from None
        ctx = web.ssl_context()
        if ctx is not None:
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.address = self.server.server_address[:2]
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.web.tls else 'http'}://{host}:{port}/metrics"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="tcpoom-http",
                                        kwargs={"poll_interval": 0.5}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "tcpoom"
            sys_version = ""
            timeout = 10

            def log_message(self, fmt, *args):     # no line per scrape
                pass

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
                      extra=()) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _authorized(self) -> bool:
                if endpoint.web.check(self.headers.get("Authorization")):
                    return True
                self._send(401, b"Unauthorized\n", extra=[("WWW-Authenticate", 'Basic realm="tcpoom"')])
                return False

            def do_GET(self):
                if not self._authorized():
                    return
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, ctype = choose_encoder(self.headers.get("Accept"))
                    try:
                        body = encoder(endpoint.registry)
                    except Exception as e:       # never a dead endpoint for one bad reading
                        self._send(500, f"collecting metrics: {e}\n".encode())
                        return
                    self._send(200, body, ctype)
                elif path == "/-/healthy":
                    self._send(200, b"OK\n")
                elif path == "/":
                    self._send(200, b"<html><body><h1>tcpoom</h1><p><a href=\"/metrics\">metrics</a></p>"
                                    b"</body></html>\n", "text/html; charset=utf-8")
                else:
                    self._send(404, b"Not found\n")

            do_HEAD = do_GET

            def do_POST(self):
                if not self._authorized():
                    return
                path = self.path.split("?", 1)[0]
                if path != "/-/trigger":
                    self._send(404, b"Not found\n")
                    return
                if not endpoint.web.auth and not ipaddress.ip_address(
                        self.client_address[0].replace("::ffff:", "")).is_loopback:
                    # unauthenticated triggers only from this host
                    self._send(403, b"a trigger from another host needs basic_auth_users in --web-config\n")
                    return
                ok = endpoint.on_trigger("http") if endpoint.on_trigger else False
                self._send(202 if ok else 409, b"incident armed\n" if ok else
                           b"no flight recorder, or an incident is already being recorded\n")

        return Handler
