"""Real proxies on 127.0.0.1 for the request-profile tests: an HTTP proxy (absolute-URI
forwarding and CONNECT tunnels) and a SOCKS5 proxy, each demanding credentials and recording
what it received; and a self-signed TLS certificate for an https server behind them."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import select
import socket
import socketserver
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ProxyLog:
    """What a proxy saw: each request's target and whether its credentials were right."""

    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    forwarded_headers: list[dict[str, str]] = field(default_factory=list)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Base:
    handler: type[socketserver.BaseRequestHandler]

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.log = ProxyLog()
        proxy = self

        class Handler(self.handler):  # type: ignore[misc,name-defined]
            owner = proxy

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> _Base:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pipe(a: socket.socket, b: socket.socket, seconds: float = 30.0) -> None:
    """Copy bytes both ways until either side closes (or nothing moves for ``seconds``)."""
    sockets = [a, b]
    while True:
        ready, _, _ = select.select(sockets, [], [], seconds)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


class _HttpProxyHandler(socketserver.BaseRequestHandler):
    owner: HttpProxy

    def handle(self) -> None:
        self.connection: socket.socket = self.request
        with contextlib.suppress(ConnectionError, OSError):
            self._handle()

    def _handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = self.connection.recv(65536)
            if not chunk:
                return
            head += chunk
        text, _, rest = head.partition(b"\r\n\r\n")
        lines = text.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        wanted = "Basic " + base64.b64encode(
            f"{self.owner.user}:{self.owner.password}".encode()
        ).decode("ascii")
        if headers.get("proxy-authorization") != wanted:
            self.owner.log.refused.append(target)
            self.connection.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            return
        self.owner.log.accepted.append(target)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=10)
            self.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            with upstream:
                _pipe(self.connection, upstream)
            return
        self._forward(method, target, lines, headers, rest)

    def _forward(
        self, method: str, target: str, lines: list[str], headers: dict[str, str], rest: bytes
    ) -> None:
        """An absolute-URI request: sent on to the origin without the proxy's own headers."""
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        kept = [
            line
            for line in lines[1:]
            if line.split(":", 1)[0].strip().lower()
            not in ("proxy-authorization", "proxy-connection", "connection")
        ]
        self.owner.log.forwarded_headers.append(
            {k: v for k, v in headers.items() if k != "proxy-authorization"}
        )
        request = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as up:
            up.sendall(request.encode("latin-1") + rest)
            while True:
                data = up.recv(65536)
                if not data:
                    break
                self.connection.sendall(data)


class HttpProxy(_Base):
    """An HTTP proxy requiring ``Proxy-Authorization: Basic user:password``."""

    handler = _HttpProxyHandler

    def url(self, user: str | None = None, password: str | None = None) -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        return f"http://{user}:{password}@127.0.0.1:{self.port}"


def _read(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class _Socks5Handler(socketserver.BaseRequestHandler):
    owner: Socks5Proxy

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            self._handle(self.request)

    def _handle(self, conn: socket.socket) -> None:
        version, count = _read(conn, 2)
        methods = _read(conn, count)
        if version != 5 or 2 not in methods:
            conn.sendall(b"\x05\xff")
            return
        conn.sendall(b"\x05\x02")  # username/password (RFC 1929)
        _ver, ulen = _read(conn, 2)
        user = _read(conn, ulen).decode()
        (plen,) = _read(conn, 1)
        password = _read(conn, plen).decode()
        if (user, password) != (self.owner.user, self.owner.password):
            self.owner.log.refused.append(user)
            conn.sendall(b"\x01\x01")
            return
        conn.sendall(b"\x01\x00")
        _ver, command, _rsv, atyp = _read(conn, 4)
        if atyp == 1:
            host = socket.inet_ntoa(_read(conn, 4))
        elif atyp == 3:
            (length,) = _read(conn, 1)
            host = _read(conn, length).decode()
        else:
            conn.sendall(b"\x05\x08\x00\x01" + b"\x00" * 6)
            return
        (port,) = struct.unpack("!H", _read(conn, 2))
        if command != 1:
            conn.sendall(b"\x05\x07\x00\x01" + b"\x00" * 6)
            return
        self.owner.log.accepted.append(f"{host}:{port}")
        upstream = socket.create_connection((host, port), timeout=10)
        conn.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", 0))
        with upstream:
            _pipe(conn, upstream)


class Socks5Proxy(_Base):
    """A SOCKS5 proxy requiring username/password authentication."""

    handler = _Socks5Handler

    def url(self, scheme: str = "socks5") -> str:
        return f"{scheme}://{self.user}:{self.password}@127.0.0.1:{self.port}"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def serve_tls(server: Any, cert: Path, key: Path) -> None:
    """Make a started-not-yet ``HTTPFixtureServer`` answer https with ``cert``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with contextlib.suppress(AttributeError):
        server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
