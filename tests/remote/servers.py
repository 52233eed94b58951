"""Real HTTP servers on loopback for the remote-source tests: a static file server that
answers ``Range`` requests (or, on request, ignores them), counting requests and bytes; and a
stand-in for the Hugging Face Hub API that ``huggingface_hub`` itself talks to (HF_ENDPOINT),
whose ``resolve`` redirects to a "CDN" on another host name, as the Hub does for LFS files."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Log:
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    bytes_sent: int = 0

    def count(self, prefix: str = "") -> int:
        return sum(1 for _, p, _ in self.requests if p.startswith(prefix))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _DiskBytes:
    """Slicing a file on disk like bytes, reading only the slice."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return self.path.stat().st_size

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(len(self))
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(max(0, stop - start))


class _Loopback:
    """A server on 127.0.0.1 (port chosen by the OS) in a daemon thread, with ``companion``
    servers (a CDN, a blob host) started and stopped with it. ``host`` names it in ``url``
    (``localhost`` makes it another host than ``127.0.0.1`` for redirects)."""

    host = "127.0.0.1"
    companion: _Loopback | None = None

    def _start_server(self) -> None:
        self.log = Log()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def _handler(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def __enter__(self):  # type: ignore[no-untyped-def]
        if self.companion is not None:
            self.companion.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.companion is not None:
            self.companion.__exit__()


class FileServer(_Loopback):
    """``files``: URL path → bytes, or a Path read by range from disk (a 1 GB benchmark file
    is never held in memory). ``ignore_range``: answer 200 with the whole body."""

    def __init__(self, files: dict[str, bytes | Path], *, ignore_range: bool = False,
                 host: str = "127.0.0.1") -> None:
        self.files = files
        self.ignore_range = ignore_range
        self.host = host
        self._start_server()

    def _handler(self):  # type: ignore[no-untyped-def]
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                outer.log.requests.append((self.command, path, {k.lower(): v for k, v in self.headers.items()}))
                data = outer.files.get(path)
                if data is None:
                    return self._send(404, b"not found", {})
                if isinstance(data, Path):
                    data = _DiskBytes(data)
                rng = self.headers.get("Range")
                if rng and not outer.ignore_range:
                    m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng)
                    if not m:
                        return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    a, b = m.groups()
                    if a == "":
                        start, end = max(0, len(data) - int(b)), len(data) - 1
                    else:
                        start = int(a)
                        end = min(int(b), len(data) - 1) if b else len(data) - 1
                    if start >= len(data) or start > end:
                        return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    body = bytes(data[start:end + 1])
                    return self._send(206, body, {
                        "Content-Range": f"bytes {start}-{end}/{len(data)}",
                        "Accept-Ranges": "bytes"}, head)
                return self._send(200, bytes(data[:]), {"Accept-Ranges": "none"}, head)

            def _send(self, status: int, body: bytes, headers: dict[str, str],
                      head: bool = False) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                    outer.log.bytes_sent += len(body)

        return H


def _oid(data: bytes | Path) -> str:
    """The object id: sha256 of the bytes; of the path and size for a file on disk (a
    benchmark's multi-GB sparse shard is not hashed)."""
    if isinstance(data, Path):
        return hashlib.sha256(f"{data}:{data.stat().st_size}".encode()).hexdigest()
    return hashlib.sha256(data).hexdigest()


def _len(data: bytes | Path) -> int:
    return data.stat().st_size if isinstance(data, Path) else len(data)


class FakeHub(_Loopback):
    """The Hub API calls huggingface_hub makes for repo_info, get_paths_info, list_repo_tree
    and hf_hub_url downloads, for one model repository at one commit. ``resolve`` answers
    302 to the CDN (``localhost`` instead of ``127.0.0.1``: another host, so the token is not
    forwarded), which serves ranges. ``token``: when set, API calls without it get 401."""

    def __init__(self, repo: str, files: dict[str, bytes | Path], *,
                 sha: str = "c0ffee" * 6 + "abcd", token: str | None = None) -> None:
        self.repo, self.files, self.sha, self.token = repo, files, sha, token
        self.cdn = FileServer({f"/blobs/{_oid(d)}": d for d in files.values()},
                              host="localhost")
        self.companion = self.cdn
        self._start_server()

    def _entry(self, path: str) -> dict:
        data = self.files[path]
        oid, size = _oid(data), _len(data)
        return {"type": "file", "path": path, "size": size, "oid": oid[:40],
                "lfs": {"oid": oid, "size": size, "pointerSize": 132}}

    def _folders(self) -> set[str]:
        out = set()
        for p in self.files:
            parts = p.split("/")[:-1]
            out |= {"/".join(parts[:i + 1]) for i in range(len(parts))}
        return out

    def _handler(self):  # type: ignore[no-untyped-def]
        hub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _json(self, status: int, obj: object, headers: dict | None = None) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _auth_ok(self) -> bool:
                if hub.token is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {hub.token}":
                    return True
                self._json(401, {"error": "Invalid credentials"},
                           {"X-Error-Code": "RepoNotFound"})
                return False

            def do_POST(self) -> None:
                self.do_GET()

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                u = urlsplit(self.path)
                path = unquote(u.path)
                hub.log.requests.append((self.command, path, {k.lower(): v for k, v in self.headers.items()}))
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode()) if length else {}
                repo = re.escape(hub.repo)
                if m := re.fullmatch(rf"/api/models/{repo}(?:/revision/([^/]+))?", path):
                    if not self._auth_ok():
                        return None
                    rev = m.group(1)
                    if rev not in (None, "main", hub.sha):
                        return self._json(404, {"error": "Revision not found"},
                                          {"X-Error-Code": "RevisionNotFound"})
                    return self._json(200, {"id": hub.repo, "sha": hub.sha, "siblings": [
                        {"rfilename": p} for p in sorted(hub.files)]})
                if m := re.fullmatch(rf"/api/models/{repo}/paths-info/([^/]+)", path):
                    if not self._auth_ok():
                        return None
                    wanted = form.get("paths", [])
                    out = [hub._entry(p) for p in wanted if p in hub.files]
                    out += [{"type": "directory", "path": p, "oid": "d" * 40, "size": 0}
                            for p in wanted if p in hub._folders()]
                    return self._json(200, out)
                if m := re.fullmatch(rf"/api/models/{repo}/tree/([^/]+)(?:/(.*))?", path):
                    if not self._auth_ok():
                        return None
                    prefix = (m.group(2) or "").strip("/")
                    recursive = parse_qs(u.query).get("recursive", ["false"])[0] == "true"
                    out = []
                    for p in sorted(hub.files):
                        if prefix and not p.startswith(prefix + "/"):
                            continue
                        rest = p[len(prefix) + 1:] if prefix else p
                        if recursive or "/" not in rest:
                            out.append(hub._entry(p))
                    return self._json(200, out)
                if m := re.fullmatch(rf"/{repo}/resolve/([^/]+)/(.+)", path):
                    data = hub.files.get(m.group(2))
                    if data is None:
                        return self._json(404, {"error": "Entry not found"},
                                          {"X-Error-Code": "EntryNotFound"})
                    blob = f"{hub.cdn.url}/blobs/{_oid(data)}"
                    self.send_response(302)
                    self.send_header("Location", blob)
                    self.send_header("X-Repo-Commit", hub.sha)
                    self.send_header("X-Linked-Size", str(_len(data)))
                    self.send_header("ETag", f'"{_oid(data)}"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self._json(404, {"error": f"not served: {self.command} {path}"})

        return H


class FakeLfs(_Loopback):
    """A Git LFS server's batch endpoint (``POST /{repo}.git/info/lfs/objects/batch``) for
    ``objects`` (oid → bytes), whose download actions point at a blob host (``localhost``:
    another host) that wants the action's own header and serves ranges."""

    def __init__(self, repo: str, objects: dict[str, bytes]) -> None:
        self.repo, self.objects = repo, objects
        self.blobs = FileServer({f"/objects/{oid}": d for oid, d in objects.items()},
                                host="localhost")
        self.batches: list[dict] = []
        self.companion = self.blobs
        self._start_server()

    def _handler(self):  # type: ignore[no-untyped-def]
        lfs = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                path = unquote(urlsplit(self.path).path)
                lfs.log.requests.append(("POST", path,
                                         {k.lower(): v for k, v in self.headers.items()}))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                lfs.batches.append(body)
                if path != f"/{lfs.repo}.git/info/lfs/objects/batch":
                    return self._send(404, {"message": "Not Found"})
                out = []
                for o in body.get("objects", []):
                    if o["oid"] in lfs.objects:
                        out.append({**o, "authenticated": True, "actions": {"download": {
                            "href": f"{lfs.blobs.url}/objects/{o['oid']}",
                            "header": {"X-Signed": "sig-123"}, "expires_in": 3600}}})
                    else:
                        out.append({**o, "error": {"code": 404, "message": "Object does not "
                                                                           "exist"}})
                return self._send(200, {"transfer": "basic", "objects": out})

            def _send(self, status: int, obj: object) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.git-lfs+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return H
