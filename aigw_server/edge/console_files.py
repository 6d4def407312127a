"""The operator console's static files under /ui/: read once at start, served from memory with strict security headers."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from aigw_server.edge.protocol import Request, Responder

log = logging.getLogger(__name__)

PREFIX = "/ui"
CONSOLE_DIR = Path(__file__).resolve().parent / "console"

# Only these kinds of file are served; anything else in the folder is ignored.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# No inline script or style, nothing from elsewhere; blob: images are the playground's local page previews.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
)


@dataclass(frozen=True)
class StaticFile:
    """One file as it is answered: body, content type and entity tag."""

    body: bytes
    content_type: str
    etag: str


def load_files(root: Path) -> dict[str, StaticFile]:
    """Every servable regular file under `root`, keyed by its URL path under /ui/.

    The map is the whole namespace: a request path is looked up as is, so no path a client sends
    (`..`, percent-encoded or not) can reach a file outside it. Symbolic links are not followed.
    """
    files: dict[str, StaticFile] = {}
    if not root.is_dir():
        log.warning("console folder %s is missing; /ui/ is not served", root)
        return files
    for folder, subfolders, names in os.walk(root):  # does not descend into linked folders
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            path = Path(folder, name)
            content_type = CONTENT_TYPES.get(path.suffix.lower())
            if content_type is None or name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[f"{PREFIX}/{path.relative_to(root).as_posix()}"] = StaticFile(body, content_type, etag)
    index = files.get(f"{PREFIX}/index.html")
    if index is not None:
        files[f"{PREFIX}/"] = index
    return files


class ConsoleFiles:
    """Answers GET and HEAD under /ui/ from the files loaded at start."""

    def __init__(self, root: Path = CONSOLE_DIR) -> None:
        self.files = load_files(root)

    @staticmethod
    def claims(path: str) -> bool:
        """Whether a request path belongs to the console rather than the API."""
        return path == PREFIX or path.startswith(PREFIX + "/")

    def handle(self, request: Request, responder: Responder) -> None:
        headers = list(SECURITY_HEADERS)
        if request.method not in ("GET", "HEAD"):
            headers += [("allow", "GET, HEAD"), ("content-type", "text/plain; charset=utf-8")]
            responder.send(405, headers, b"method not allowed\n")
            return
        if request.path == PREFIX:
            responder.send(308, [*headers, ("location", PREFIX + "/")], b"")
            return
        found = self.files.get(request.path)
        if found is None:
            responder.send(404, [*headers, ("content-type", "text/plain; charset=utf-8")], b"not found\n")
            return
        # Names carry no version, so the browser revalidates each time; an unchanged file costs a 304.
        headers += [("cache-control", "no-cache"), ("etag", found.etag)]
        if _matches(request.header("if-none-match"), found.etag):
            responder.send(304, headers, b"")
            return
        responder.send(200, [*headers, ("content-type", found.content_type)], found.body)


def _matches(if_none_match: bytes | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.decode("latin-1").split(",")}
    return etag in tags or "*" in tags
