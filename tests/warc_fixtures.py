"""A real WARC for tests: a small site served over loopback HTTP and crawled by wget.

The server is `http.server` with a few extra routes for what a static file server never
sends but real crawls are full of: gzip/deflate/brotli Content-Encoding, chunked transfer,
a response with no Content-Type at all, a redirect with an HTML body. Every response the
server sends is logged, so tests have an oracle that does not come from any WARC reader.

Import `crawl_site(workdir)` from tests, or use the `warc_crawl` fixture (session-scoped
when imported into a test module).
"""
from __future__ import annotations

import dataclasses
import gzip
import http.server
import shutil
import subprocess
import threading
import zlib
from pathlib import Path

import brotli  # a FastWARC dependency, so always present beside it
import pytest

ENGLISH = (
    "The river runs past the old mill, where the miller once ground wheat for the whole "
    "valley. In spring the water rises over the lower meadow and the children are told to "
    "keep away from the bank."
)
FRENCH = (
    "Deuxième page : la rivière passe devant le vieux moulin, où le meunier moulait autrefois "
    "le blé de toute la vallée. Au printemps, l'eau monte sur la prairie basse."
)
GERMAN = (
    "Die Straßenbahn fährt jeden Morgen um sieben Uhr über die Brücke, und im Winter "
    "räumen die Arbeiter den Schnee von den Gleisen, bevor die ersten Fahrgäste kommen."
)
SPANISH = (
    "El mercado abre temprano los sábados; los agricultores traen tomates, pimientos y "
    "queso de las montañas, y la plaza se llena de voces hasta el mediodía."
)
XHTML_TEXT = "Ein XHTML-Dokument über die Geschichte der Uhrmacherei im Schwarzwald."


def _page(title: str, text: str, lang: str, links: str = "") -> bytes:
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{title}</title></head>\n<body><h1>{title}</h1><p>{text}</p>{links}</body></html>\n"
    ).encode("utf-8")


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


# Dynamic routes: path -> (status, headers, body, how the body is sent). "plain" bodies get a
# Content-Length; "chunked" ones are sent with Transfer-Encoding: chunked in 3 pieces.
def _dynamic_routes() -> dict[str, tuple[int, list[tuple[str, str]], bytes, str]]:
    german = _page("Straßenbahn", GERMAN, "de")
    spanish = _page("Mercado", SPANISH, "es")
    untyped = (
        '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
        f"<head><title>ohne Typ</title></head><body><p>{GERMAN}</p></body></html>"
    ).encode()
    return {
        "/gzip.html": (200, [("Content-Type", "text/html; charset=utf-8"),
                             ("Content-Encoding", "gzip")], gzip.compress(german), "plain"),
        "/deflate.html": (200, [("Content-Type", "text/html; charset=utf-8"),
                                ("Content-Encoding", "deflate")], zlib.compress(spanish), "plain"),
        "/brotli.html": (200, [("Content-Type", "text/html; charset=utf-8"),
                               ("Content-Encoding", "br")], brotli.compress(german), "plain"),
        "/chunked.html": (200, [("Content-Type", "text/html; charset=UTF-8")], spanish, "chunked"),
        "/untyped": (200, [], untyped, "plain"),
        "/moved": (301, [("Location", "/sub/page.html"), ("Content-Type", "text/html")],
                   b"<html><body><a href='/sub/page.html'>Moved here</a></body></html>", "plain"),
    }


@dataclasses.dataclass
class Crawl:
    warc_gz: Path          # wget's output: one gzip member per record
    warc: Path             # the same records, uncompressed
    base_url: str
    html_bodies: dict[str, bytes]   # path -> decoded HTML body, for every HTML response sent
    served: list[tuple[str, int, str]]   # (path, status, content type sent) for every response


def _write_site(root: Path) -> dict[str, bytes]:
    """Static files; returns the HTML ones by URL path."""
    links = "".join(
        f'<a href="{href}">{href}</a> '
        for href in ["fr.html", "sub/page.html", "doc.xhtml", "raw-page", "blob.bin",
                     "gzip.html", "deflate.html", "brotli.html", "chunked.html", "untyped",
                     "moved", "missing.html"]
    ) + '<img src="logo.png"><link rel="stylesheet" href="style.css">'
    files = {
        "index.html": _page("The mill", ENGLISH, "en", links),
        "fr.html": _page("Le moulin", FRENCH, "fr", '<a href="index.html">accueil</a>'),
        "sub/page.html": _page("Sub page", ENGLISH, "en", '<a href="../index.html">home</a>'),
        "doc.xhtml": (
            '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Uhren</title></head>'
            f"<body><p>{XHTML_TEXT}</p></body></html>\n"
        ).encode(),
        # No extension: http.server sends application/octet-stream, so only sniffing finds it.
        "raw-page": _page("Sans type", FRENCH, "fr"),
        "blob.bin": bytes(range(256)) * 4,
        "logo.png": _png_1x1(),
        "style.css": b"body { font-family: serif; color: #222 }\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    html = {"/" + n: d for n, d in files.items() if n.endswith((".html", ".xhtml")) or n == "raw-page"}
    html["/"] = files["index.html"]
    return html


def _handler(site: Path, served: list, routes: dict):
    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # chunked transfer needs 1.1

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, *args):   # keep test output quiet
            pass

        def send_response(self, code, message=None):
            self._status = int(code)
            super().send_response(code, message)

        def send_header(self, keyword, value):
            if keyword.lower() == "content-type":
                self._ctype = value
            super().send_header(keyword, value)

        def end_headers(self):
            served.append((self.path, self._status, getattr(self, "_ctype", "")))
            self._ctype = ""
            super().end_headers()

        def do_GET(self):
            route = routes.get(self.path)
            if route is None:
                return super().do_GET()
            status, headers, body, mode = route
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            if mode == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                third = len(body) // 3 + 1
                for i in range(0, len(body), third):
                    piece = body[i:i + third]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    return Handler


def crawl_site(workdir: Path) -> Crawl:
    """Serve a small site on 127.0.0.1 (a free port chosen by the OS) and crawl it with wget."""
    wget = shutil.which("wget")
    if wget is None:
        pytest.fail("wget is needed to make a real WARC for these tests (apt-get install wget)")
    site = workdir / "site"
    site.mkdir(parents=True)
    html_bodies = _write_site(site)
    routes = _dynamic_routes()
    html_bodies["/gzip.html"] = gzip.decompress(routes["/gzip.html"][2])
    html_bodies["/deflate.html"] = zlib.decompress(routes["/deflate.html"][2])
    html_bodies["/brotli.html"] = brotli.decompress(routes["/brotli.html"][2])
    html_bodies["/chunked.html"] = routes["/chunked.html"][2]
    html_bodies["/untyped"] = routes["/untyped"][2]
    html_bodies["/moved"] = routes["/moved"][2]

    served: list[tuple[str, int, str]] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(site, served, routes))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        base_url = f"http://127.0.0.1:{port}"
        warc_base = workdir / "crawl"
        # wget exits 8 when some page was an HTTP error (the 404 we serve on purpose).
        result = subprocess.run(
            [wget, "-r", "-l", "2", "--no-verbose", f"--warc-file={warc_base}",
             "--no-warc-keep-log", "-e", "robots=off", "-P", str(workdir / "mirror"),
             "--tries=1", "--timeout=10", base_url + "/"],
            capture_output=True, timeout=60,
        )
        if result.returncode not in (0, 8):
            pytest.fail(f"wget failed ({result.returncode}): {result.stderr.decode()[-500:]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    warc_gz = workdir / "crawl.warc.gz"
    warc = workdir / "crawl.warc"
    with open(warc, "wb") as out:
        subprocess.run(["gzip", "-dc", str(warc_gz)], stdout=out, check=True, timeout=30)
    return Crawl(warc_gz, warc, base_url, html_bodies, served)


def gzip_member_offsets(data: bytes) -> list[int]:
    """Start offset of every gzip member, found by decompressing member by member."""
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        inflater = zlib.decompressobj(wbits=31)
        inflater.decompress(data[pos:])
        if not inflater.eof:
            break
        pos = len(data) - len(inflater.unused_data)
    return offsets


@pytest.fixture(scope="session")
def warc_crawl(tmp_path_factory) -> Crawl:
    return crawl_site(tmp_path_factory.mktemp("crawl"))
