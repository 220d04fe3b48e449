"""A TLS test page that sees the client's handshake: JA3 and JA4 computed from the raw ClientHello.

    with start_tls_site() as tls:
        httpx.get(tls.url("/tls"), verify=False)     # the fingerprint it saw, as a small HTML page
        tls.hits("/tls")                             # [TlsHit(path, ja4, ja3, alpn, sni, headers)]

A threaded TLS server on a loopback address (127.0.0.1 unless asked otherwise) with a self-signed certificate
made when it starts (``cryptography``: for the IP address and the name ``tls.test``). Each connection's first
TLS record is peeked at (``MSG_PEEK``) before the socket is handed to ``ssl``, so the handshake that
fingerprints it is the one ``ssl`` then completes. It issues no session tickets (every handshake is a full
one). It speaks HTTP/1.1 (ALPN ``http/1.1``: the client's offer of
``h2`` is in its fingerprint all the same), with keep-alive; GET and HEAD only.

Pages:

``/tls``        200 text/html: ``<pre id="tls">`` holding a JSON object: ``ja4``, ``ja4_ab`` (its first two
                parts), ``ja3``, ``ja3_hash``, ``alpn`` (the client's offer), ``sni``, ``user_agent``.
``/tls-gate``   403 "Access denied: TLS fingerprint" unless the first two parts of the JA4 are Chrome's
                (:data:`CHROME_JA4_AB`, with or without SNI); then 200 with ``tls-gate-ok``.

JA4 (FoxIO's TLS client fingerprint): ``t`` + TLS version (the highest of supported_versions) + ``d``/``i``
(SNI or not) + the numbers of cipher suites and extensions (GREASE left out) + the first and last character
of the first ALPN value; then the first 12 hex digits of the SHA-256 of the sorted cipher suites; then those
of the sorted extensions (without SNI and ALPN) and the signature algorithms in their order. JA3: the MD5 of
``version,ciphers,extensions,groups,point formats`` in decimal, GREASE left out.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import html
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# JA4's first two parts for Chrome since 110 (15 cipher suites, 16 extensions, h2; its extension order is
# randomised, which JA4 sorts away), after the TLS version and the SNI letter.
CHROME_JA4_AB = ("1516h2", "8daaf6152771")

_MAX_HELLO = 64 * 1024
_MAX_HEAD = 64 * 1024


def _grease(value: int) -> bool:
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


@dataclass(frozen=True)
class ClientHello:
    legacy_version: int
    ciphers: list[int]
    extensions: list[int]  # in the order sent, GREASE included
    sni: str | None
    alpn: list[str]
    versions: list[int]
    groups: list[int]
    point_formats: list[int]
    signature_algorithms: list[int]

    @property
    def tls_version(self) -> str:
        versions = [v for v in self.versions if not _grease(v)] or [self.legacy_version]
        return {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10"}.get(max(versions), "00")

    @property
    def ja4(self) -> str:
        ciphers = [c for c in self.ciphers if not _grease(c)]
        extensions = [e for e in self.extensions if not _grease(e)]
        alpn = (self.alpn[0][0] + self.alpn[0][-1]) if self.alpn and self.alpn[0] else "00"
        part_a = (
            f"t{self.tls_version}{'d' if self.sni is not None else 'i'}"
            f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn}"
        )
        part_b = _sha12(",".join(sorted(f"{c:04x}" for c in ciphers)))
        kept = sorted(f"{e:04x}" for e in extensions if e not in (0x0000, 0x0010))
        algorithms = ",".join(f"{a:04x}" for a in self.signature_algorithms if not _grease(a))
        part_c = _sha12(",".join(kept) + (f"_{algorithms}" if algorithms else ""))
        return f"{part_a}_{part_b}_{part_c}"

    @property
    def ja3(self) -> str:
        def join(values: list[int]) -> str:
            return "-".join(str(v) for v in values if not _grease(v))

        return ",".join(
            [
                str(self.legacy_version),
                join(self.ciphers),
                join(self.extensions),
                join(self.groups),
                join(self.point_formats),
            ]
        )


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise ValueError("truncated ClientHello")
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.number(length_size))


def _pairs(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)]


def parse_client_hello(record: bytes) -> ClientHello:
    """The ClientHello of a TLS record (its 5-byte header included); ValueError for anything else."""
    outer = _Reader(record)
    if outer.number(1) != 0x16:
        raise ValueError("not a TLS handshake record")
    outer.take(2)
    body = _Reader(outer.vector(2))
    if body.number(1) != 0x01:
        raise ValueError("not a ClientHello")
    hello = _Reader(body.vector(3))
    legacy_version = hello.number(2)
    hello.take(32)  # random
    hello.vector(1)  # session id
    ciphers = _pairs(hello.vector(2))
    hello.vector(1)  # compression methods
    extensions: list[int] = []
    sni: str | None = None
    alpn: list[str] = []
    versions: list[int] = []
    groups: list[int] = []
    point_formats: list[int] = []
    algorithms: list[int] = []
    if hello.at < len(hello.data):
        block = _Reader(hello.vector(2))
        while block.at < len(block.data):
            kind = block.number(2)
            data = block.vector(2)
            extensions.append(kind)
            inner = _Reader(data)
            if kind == 0x0000 and data:
                names = _Reader(inner.vector(2))
                names.number(1)
                sni = names.vector(2).decode("ascii", "replace")
            elif kind == 0x0010 and data:
                protocols = _Reader(inner.vector(2))
                while protocols.at < len(protocols.data):
                    alpn.append(protocols.vector(1).decode("ascii", "replace"))
            elif kind == 0x002B and data:
                versions = _pairs(inner.vector(1))
            elif kind == 0x000A and data:
                groups = _pairs(inner.vector(2))
            elif kind == 0x000B and data:
                point_formats = list(inner.vector(1))
            elif kind == 0x000D and data:
                algorithms = _pairs(inner.vector(2))
    return ClientHello(
        legacy_version, ciphers, extensions, sni, alpn, versions, groups, point_formats, algorithms
    )


def ja4_ab(ja4: str) -> str:
    """The first two parts of a JA4 (``t13d1516h2_8daaf6152771``)."""
    return "_".join(ja4.split("_")[:2])


def is_chrome(ja4: str) -> bool:
    """Whether a JA4's first two parts are Chrome's (TLS 1.3, with or without SNI)."""
    part_a, _, rest = ja4.partition("_")
    return part_a[:3] == "t13" and (part_a[4:], rest.partition("_")[0]) == CHROME_JA4_AB


def make_certificate(folder: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for ``host`` (an IP address) and ``tls.test``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crawljobs test TLS site")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("tls.test")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@dataclass
class TlsHit:
    path: str
    ja4: str
    ja3: str
    alpn: list[str]
    sni: str | None
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0


class TlsSite:
    def __init__(self, host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the TLS test site binds only loopback addresses, not {host!r}")
        self.host = host
        self._folder = tempfile.TemporaryDirectory(prefix="tls-site-")
        self.cert_path, key_path = make_certificate(Path(self._folder.name), host)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.cert_path, key_path)
        self._context.set_alpn_protocols(["http/1.1"])
        # No session tickets: every handshake is a full one. (A resumed one adds pre_shared_key, one extension
        # more, in Chrome's handshake too: which of the worker's requests resumes would decide the count.)
        self._context.num_tickets = 0
        self._context.options |= ssl.OP_NO_TICKET
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._hits: list[TlsHit] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tls-site", daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"https://{self.host}:{self.port}{path}"

    def hits(self, path: str | None = None) -> list[TlsHit]:
        with self._lock:
            return [h for h in self._hits if path is None or h.path == path]

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(5)
        self._folder.cleanup()

    def __enter__(self) -> TlsSite:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- serving --------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="tls-site-conn", daemon=True).start()

    def _peek_hello(self, conn: socket.socket) -> ClientHello:
        data = b""
        while True:
            data = conn.recv(_MAX_HELLO, socket.MSG_PEEK)
            if len(data) >= 5:
                need = 5 + int.from_bytes(data[3:5], "big")
                if len(data) >= need:
                    return parse_client_hello(data[:need])
                if need > _MAX_HELLO:
                    raise ValueError("ClientHello too large")
            if not data:
                raise ConnectionError("closed before its ClientHello")
            threading.Event().wait(0.01)  # MSG_PEEK returns what is there: wait for the rest

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            hello = self._peek_hello(conn)
            with self._context.wrap_socket(conn, server_side=True) as tls:
                reader = tls.makefile("rb")
                while self._answer(tls, reader, hello):
                    pass
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _answer(self, tls: ssl.SSLSocket, reader: Any, hello: ClientHello) -> bool:
        request_line = reader.readline(_MAX_HEAD)
        if not request_line:
            return False
        method, target, _ = request_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = reader.readline(_MAX_HEAD).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        ja4 = hello.ja4
        hit = TlsHit(path, ja4, hello.ja3, hello.alpn, hello.sni, headers)
        with self._lock:
            self._hits.append(hit)
        if path == "/tls":
            seen = {
                "ja4": ja4,
                "ja4_ab": ja4_ab(ja4),
                "ja3": hello.ja3,
                "ja3_hash": hashlib.md5(hello.ja3.encode(), usedforsecurity=False).hexdigest(),
                "alpn": hello.alpn,
                "sni": hello.sni,
                "user_agent": headers.get("user-agent"),
            }
            status, body = (
                200,
                _page("TLS fingerprint", f'<pre id="tls">{html.escape(json.dumps(seen))}</pre>'),
            )
        elif path == "/tls-gate":
            if is_chrome(ja4):
                status, body = 200, _page("Welcome", "<p>tls-gate-ok</p>")
            else:
                status, body = (
                    403,
                    _page("Access denied", f"<p>Access denied: TLS fingerprint {ja4_ab(ja4)}</p>"),
                )
        else:
            status, body = 404, _page("Not found", "<p>not found</p>")
        hit.status = status
        reason = {200: "OK", 403: "Forbidden", 404: "Not Found"}[status]
        keep = headers.get("connection", "").lower() != "close"
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        tls.sendall(head.encode() + (b"" if method == "HEAD" else body))
        return keep


def _page(title: str, body: str) -> bytes:
    filler = "<p>" + "This page of the crawljobs TLS test site is here to be fetched. " * 8 + "</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{body}{filler}</body></html>"
    ).encode()


def start_tls_site(host: str = "127.0.0.1") -> TlsSite:
    """Start the TLS test site on ``host`` (a loopback address) and a free port; it is its own context manager."""
    return TlsSite(host)


def fingerprint_of(page: str) -> dict[str, Any]:
    """The JSON object of a ``/tls`` page's ``<pre id="tls">``."""
    start = page.index('<pre id="tls">') + len('<pre id="tls">')
    loaded: dict[str, Any] = json.loads(html.unescape(page[start : page.index("</pre>", start)]))
    return loaded
