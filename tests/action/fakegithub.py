"""A real HTTP server on 127.0.0.1 standing in for the GitHub REST API (and its blob host).

Only what the action uses: issue comments (paginated with ``Link``), ``/user``, pulls,
releases and their assets (download answers 302 to a second server on another port, like
GitHub's redirect to its blob store), asset upload/delete/rename. Every request is recorded
with its headers so tests can assert on what was sent. Failures are injected per route.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BOT = {"login": "github-actions[bot]", "type": "Bot", "id": 41898282}
HUMAN = {"login": "octocat", "type": "User", "id": 1}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class State:
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    next_id: int = 1000
    viewer: dict[str, Any] | None = None  # None: GET /user -> 403 like GITHUB_TOKEN
    forbid_writes: bool = False  # fork token: POST/PATCH comments -> 403
    # (method, path re, status, headers, body): injected answers, used once each
    failures: list[tuple[str, str, int, dict[str, str], Any]] = field(default_factory=list)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    releases: list[dict[str, Any]] = field(default_factory=list)
    blobs: dict[int, bytes] = field(default_factory=dict)
    per_page_cap: int = 100
    labels: dict[int, list[str]] = field(default_factory=dict)
    blob_ignores_range: bool = False  # the blob host answers 200 with everything


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeGitHub:
    def __init__(self, repo: str = "acme/models") -> None:
        self.repo = repo
        self.state = State()
        self.requests: list[Request] = []
        self.blob_requests: list[Request] = []
        self.blob_bytes = 0  # body bytes the blob host sent
        self._lock = threading.Lock()
        self.api = _Server(("127.0.0.1", 0), self._handler(self._route))
        self.blob = _Server(("127.0.0.1", 0), self._handler(self._blob_route, blob=True))
        self.threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                                         daemon=True) for s in (self.api, self.blob)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api.server_address[1]}"

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.blob.server_address[1]}"

    def __enter__(self) -> FakeGitHub:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.api, self.blob):
            s.shutdown()
            s.server_close()

    # -- helpers for tests ----------------------------------------------------------------
    def add_comment(self, number: int, body: str, user: dict[str, Any] = HUMAN) -> dict[str, Any]:
        with self._lock:
            self.state.next_id += 1
            c = {"id": self.state.next_id, "body": body, "user": dict(user),
                 "html_url": f"https://github.com/{self.repo}/pull/{number}#issuecomment-"
                             f"{self.state.next_id}"}
            self.state.comments.setdefault(number, []).append(c)
            return c

    def fail(self, method: str, path_re: str, *statuses: int) -> None:
        """The next requests matching answer ``statuses`` in turn (then normally)."""
        self.state.failures.extend(
            (method, path_re, s, {"Retry-After": "0"} if s == 429 else {},
             {"message": f"injected {s}"}) for s in statuses)

    def fail_with(self, method: str, path_re: str, status: int, body: Any,
                  headers: dict[str, str] | None = None) -> None:
        """The next request matching answers ``status`` with ``headers`` and ``body``."""
        self.state.failures.append((method, path_re, status, headers or {}, body))

    def add_release(self, *, tag: str, draft: bool, assets: dict[str, bytes]) -> dict[str, Any]:
        rid = 500 + len(self.state.releases)
        rel = {"id": rid, "tag_name": tag, "draft": draft, "prerelease": False,
               "upload_url": f"{self.url}/uploads/repos/{self.repo}/releases/{rid}/assets"
                             "{?name,label}",
               "assets": []}
        for name, data in assets.items():
            rel["assets"].append(self._new_asset(rid, name, data))
        self.state.releases.append(rel)
        return rel

    def _new_asset(self, rid: int, name: str, data: bytes) -> dict[str, Any]:
        self.state.next_id += 1
        aid = self.state.next_id
        self.state.blobs[aid] = data
        return {"id": aid, "name": name, "size": len(data),
                "url": f"{self.url}/repos/{self.repo}/releases/assets/{aid}"}

    def of(self, method: str, path_re: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path_re, r.path)]

    # -- plumbing -------------------------------------------------------------------------
    def _handler(self, route, blob: bool = False):  # type: ignore[no-untyped-def]
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _do(self) -> None:
                parts = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                req = Request(self.command, parts.path, parse_qs(parts.query),
                              {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    (fake.blob_requests if blob else fake.requests).append(req)
                    status, headers, payload = route(req)
                data = payload if isinstance(payload, bytes) else (
                    b"" if payload is None else json.dumps(payload).encode())
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not isinstance(payload, bytes) and payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if blob:
                    with fake._lock:
                        fake.blob_bytes += len(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _do

        return H

    def _blob_route(self, req: Request):  # type: ignore[no-untyped-def]
        m = re.fullmatch(r"/blob/(\d+)", req.path)
        if not m or int(m.group(1)) not in self.state.blobs:
            return 404, {}, {"message": "Not Found"}
        data = self.state.blobs[int(m.group(1))]
        kind = {"Content-Type": "application/octet-stream"}
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", req.headers.get("range", ""))
        if not rng or self.state.blob_ignores_range:
            return 200, {**kind, "Accept-Ranges": "none" if rng else "bytes"}, data
        a, b = rng.groups()  # the blob store serves ranges (206 + Content-Range)
        start, end = ((max(0, len(data) - int(b)), len(data) - 1) if a == "" else
                      (int(a), min(int(b), len(data) - 1) if b else len(data) - 1))
        if start >= len(data) or start > end:
            return 416, {"Content-Range": f"bytes */{len(data)}"}, b""
        return 206, {**kind, "Content-Range": f"bytes {start}-{end}/{len(data)}",
                     "Accept-Ranges": "bytes"}, data[start:end + 1]

    def _route(self, req: Request):  # type: ignore[no-untyped-def]
        for i, (method, path_re, status, hdrs, body) in enumerate(self.state.failures):
            if method == req.method and re.fullmatch(path_re, req.path):
                del self.state.failures[i]
                return status, hdrs, body
        if not req.headers.get("authorization", "").startswith("Bearer "):
            return 401, {}, {"message": "Requires authentication"}
        repo = re.escape(self.repo)
        st = self.state
        if req.path == "/user":
            if st.viewer is None:
                return 403, {}, {"message": "Resource not accessible by integration"}
            return 200, {}, st.viewer
        if m := re.fullmatch(rf"/repos/{repo}/issues/(\d+)/comments", req.path):
            number = int(m.group(1))
            if req.method == "GET":
                return self._page(req, st.comments.get(number, []))
            if st.forbid_writes:
                return 403, {}, {"message": "Resource not accessible by integration"}
            body = req.json().get("body")
            if not isinstance(body, str) or len(body) > 65536:
                return 422, {}, {"message": "Validation Failed",
                                 "errors": [{"field": "body", "code": "too_long"}]}
            user = st.viewer or BOT
            st.next_id += 1
            c = {"id": st.next_id, "body": body, "user": dict(user),
                 "html_url": f"https://github.com/{self.repo}/pull/{number}#issuecomment-{st.next_id}"}
            st.comments.setdefault(number, []).append(c)
            return 201, {}, c
        if m := re.fullmatch(rf"/repos/{repo}/issues/comments/(\d+)", req.path):
            cid = int(m.group(1))
            if st.forbid_writes:
                return 403, {}, {"message": "Resource not accessible by integration"}
            for cs in st.comments.values():
                for c in cs:
                    if c["id"] == cid and req.method == "PATCH":
                        c["body"] = req.json()["body"]
                        return 200, {}, c
            return 404, {}, {"message": "Not Found"}
        if m := re.fullmatch(rf"/repos/{repo}/issues/(\d+)/labels", req.path):
            have = st.labels.setdefault(int(m.group(1)), [])
            if req.method == "POST":
                have += [n for n in req.json().get("labels", []) if n not in have]
            return 200, {}, [{"name": n} for n in have]
        if m := re.fullmatch(rf"/repos/{repo}/issues/(\d+)/labels/([^/]+)", req.path):
            from urllib.parse import unquote

            have, name = st.labels.setdefault(int(m.group(1)), []), unquote(m.group(2))
            if req.method != "DELETE" or name not in have:
                return 404, {}, {"message": "Label does not exist"}
            have.remove(name)
            return 200, {}, [{"name": n} for n in have]
        if m := re.fullmatch(rf"/repos/{repo}/pulls/(\d+)", req.path):
            pr = st.pulls.get(int(m.group(1)))
            return (200, {}, pr) if pr else (404, {}, {"message": "Not Found"})
        if req.path == f"/repos/{self.repo}/releases":
            return self._page(req, st.releases)
        if m := re.fullmatch(rf"/repos/{repo}/releases/(\d+)/assets", req.path):
            rel = self._release(int(m.group(1)))
            return (200, {}, rel["assets"]) if rel else (404, {}, {"message": "Not Found"})
        if m := re.fullmatch(rf"/repos/{repo}/releases/assets/(\d+)", req.path):
            return self._asset(req, int(m.group(1)))
        if m := re.fullmatch(rf"/uploads/repos/{repo}/releases/(\d+)/assets", req.path):
            rel = self._release(int(m.group(1)))
            if rel is None:
                return 404, {}, {"message": "Not Found"}
            if not rel["draft"]:
                return 422, {}, {"message": "Cannot modify an immutable release"}
            name = req.query.get("name", [""])[0]
            if any(a["name"] == name for a in rel["assets"]):
                return 422, {}, {"message": "Validation Failed",
                                 "errors": [{"code": "already_exists"}]}
            a = self._new_asset(rel["id"], name, req.body)
            rel["assets"].append(a)
            return 201, {}, a
        return 404, {}, {"message": f"Not Found: {req.method} {req.path}"}

    def _release(self, rid: int) -> dict[str, Any] | None:
        return next((r for r in self.state.releases if r["id"] == rid), None)

    def _asset(self, req: Request, aid: int):  # type: ignore[no-untyped-def]
        for rel in self.state.releases:
            for a in rel["assets"]:
                if a["id"] != aid:
                    continue
                if req.method == "GET":
                    if req.headers.get("accept") == "application/octet-stream":
                        return 302, {"Location": f"{self.blob_url}/blob/{aid}?sig=abc"}, None
                    return 200, {}, a
                if not rel["draft"]:
                    return 422, {}, {"message": "Cannot modify an immutable release"}
                if req.method == "DELETE":
                    rel["assets"].remove(a)
                    return 204, {}, None
                if req.method == "PATCH":
                    a["name"] = req.json()["name"]
                    return 200, {}, a
        return 404, {}, {"message": "Not Found"}

    def _page(self, req: Request, items: list[Any]):  # type: ignore[no-untyped-def]
        per = min(int(req.query.get("per_page", ["30"])[0]), self.state.per_page_cap)
        page = int(req.query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per: page * per]
        headers = {}
        if page * per < len(items):
            headers["Link"] = (f'<{self.url}{req.path}?per_page={per}&page={page + 1}>; '
                               f'rel="next", <{self.url}{req.path}?per_page={per}&page='
                               f'{(len(items) + per - 1) // per}>; rel="last"')
        return 200, headers, chunk
