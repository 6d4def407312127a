"""The edge serves the console under /ui/: content types, caching, security headers, and nothing outside its folder."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aigw_server.edge.console_files import CONSOLE_DIR, ConsoleFiles
from aigw_server.edge.gateway import Gateway
from aigw_server.edge.protocol import Limits
from aigw_server.edge.service import Edge, config_resolver, descriptor_set_path
from aigw_server.runtime.config import parse_config


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A console folder with a secret file beside it and links pointing out of it."""
    root = tmp_path / "console"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>aigw</title>")
    (root / "js" / "app.js").write_text("export const x = 1;")
    (root / "style.css").write_text("body{}")
    (root / "notes.txt").write_text("not a served kind")
    (root / ".hidden.js").write_text("hidden")
    (tmp_path / "secret.js").write_text("SECRET")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "leak.js").write_text("SECRET")
    (root / "link.js").symlink_to(tmp_path / "secret.js")
    (root / "dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    return root


@pytest.fixture
async def edge(site: Path) -> AsyncIterator[Edge]:
    cfg = parse_config({}, env={})
    gateway = Gateway(descriptor_set_path().read_bytes(), config_resolver(cfg))
    server = Edge(gateway, Limits(), ConsoleFiles(site))
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop(0)


async def raw(port: int, target: str, method: str = "GET", extra: str = "") -> tuple[int, dict[str, str], bytes]:
    """Sends the request target exactly as given (no client-side normalisation of `..` or `%2e`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_files_are_served_with_their_content_type_and_security_headers(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}") as client:
        index = await client.get("/ui/")
        script = await client.get("/ui/js/app.js")
        style = await client.get("/ui/style.css")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.text.startswith("<!doctype html>")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    for answer in (index, script, style):
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-cache"
        assert answer.headers["etag"].startswith('"')


async def test_an_unchanged_file_is_answered_304(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}") as client:
        first = await client.get("/ui/js/app.js")
        again = await client.get("/ui/js/app.js", headers={"if-none-match": first.headers["etag"]})
        other = await client.get("/ui/js/app.js", headers={"if-none-match": '"something-else"'})
    assert again.status_code == 304
    assert again.content == b""
    assert other.status_code == 200


async def test_ui_without_slash_redirects_and_head_has_no_body(edge: Edge) -> None:
    status, headers, _ = await raw(edge.port, "/ui")
    assert status == 308
    assert headers["location"] == "/ui/"
    status, headers, body = await raw(edge.port, "/ui/index.html", method="HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["content-length"]) > 0


@pytest.mark.parametrize(
    "target",
    [
        "/ui/../secret.js",
        "/ui/js/../../secret.js",
        "/ui/%2e%2e/secret.js",
        "/ui/%2E%2E%2Fsecret.js",
        "/ui/..%2fsecret.js",
        "/ui/..%5csecret.js",
        "/ui/js/..%2F..%2Fsecret.js",
        "/ui//etc/passwd",
        "/ui/link.js",
        "/ui/dir/leak.js",
        "/ui/notes.txt",
        "/ui/.hidden.js",
        "/ui/js",
        "/ui/index.html%00.js",
        "/ui/js/app.js/",
    ],
)
async def test_nothing_outside_the_console_folder_or_of_another_kind_is_served(edge: Edge, target: str) -> None:
    status, headers, body = await raw(edge.port, target)
    assert status == 404
    assert b"SECRET" not in body
    assert headers["x-content-type-options"] == "nosniff"


async def test_other_methods_are_refused(edge: Edge) -> None:
    status, headers, _ = await raw(edge.port, "/ui/index.html", method="POST", extra="content-length: 0\r\n")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


async def test_the_api_is_still_transcoded_beside_the_console(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}") as client:
        unknown = await client.get("/uix")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/json"  # the gateway's own answer, not the console's


def test_the_real_console_obeys_its_content_security_policy() -> None:
    """Every page loads only files that exist, and nothing inline that the policy would block."""
    files = ConsoleFiles(CONSOLE_DIR).files
    assert "/ui/" in files
    for url, found in files.items():
        if not url.endswith(".html"):
            continue
        html = found.body.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{url}: inline script"
        assert "<style" not in html, f"{url}: inline style"
        assert not re.search(r"\son[a-z]+=", html), f"{url}: inline event handler"
        assert not re.search(r"\sstyle=", html), f"{url}: inline style attribute"
        for ref in re.findall(r'(?:src|href)="([^"#]+)"', html):
            assert ref.startswith("/ui/"), f"{url}: {ref} is not a console file"
            assert ref in files, f"{url}: {ref} is missing"
    for url, found in files.items():
        if url.endswith(".js"):
            text = found.body.decode()
            for forbidden in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
                assert forbidden not in text, f"{url} uses {forbidden}"
