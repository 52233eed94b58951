"""A small GitHub REST client on ``requests``: bounded retries, timeouts, pagination, downloads.

- Retries 429 and 5xx (every method: GitHub answers 5xx before acting) and a 403 that carries
  ``Retry-After`` (a secondary rate limit) with exponential backoff, honouring
  ``Retry-After`` up to ``backoff_max``; a bounded number of tries, then :class:`GitHubError`.
- Every request has a timeout. The token is sent only to the API's own origin (and its
  upload host, ``uploads.github.com`` for ``api.github.com``) and never appears in an
  exception message or a log line. A response that is not the JSON expected is a
  :class:`GitHubError` too.
- ``Link: <…>; rel="next"`` pagination.
- Asset downloads follow GitHub's 302 to the blob store by hand, so the Authorization header
  never reaches another host.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ckpt_guard import __version__

DEFAULT_API_URL = "https://api.github.com"
RETRY_STATUSES = (429, 500, 502, 503, 504)


class _Retry(Retry):
    """urllib3's Retry, but a server's ``Retry-After`` never makes us wait longer than
    ``backoff_max`` (a job must not hang for an hour on one header), and a 403 carrying
    ``Retry-After`` (GitHub's secondary rate limit) is retried too."""

    RETRY_AFTER_STATUS_CODES = frozenset({403, 413, 429, 503})

    def get_retry_after(self, response):  # type: ignore[no-untyped-def]
        after = super().get_retry_after(response)
        return None if after is None else min(after, self.backoff_max)


class GitHubError(Exception):
    """A request failed for good (after retries). ``status`` is the HTTP status, 0 if none."""

    def __init__(self, status: int, message: str, method: str = "", url: str = "") -> None:
        self.status = status
        self.message = message
        super().__init__(f"{method} {_redact(url)} -> {status or 'no response'}: {message}")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    return (p.scheme, (p.hostname or "").lower(), p.port)


class GitHub:
    def __init__(self, token: str = "", api_url: str | None = None, *, timeout: float = 30.0,
                 retries: int = 4, backoff: float = 1.0, backoff_max: float = 30.0) -> None:
        self.api_url = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        self._token = token
        self.timeout = timeout
        retry = _Retry(total=retries, connect=retries, read=retries, status=retries,
                      status_forcelist=RETRY_STATUSES, allowed_methods=None,
                      backoff_factor=backoff, backoff_max=backoff_max,
                      respect_retry_after_header=True, raise_on_status=False,
                      raise_on_redirect=False, redirect=0)
        self.retries, self.backoff, self.backoff_max = retries, backoff, backoff_max
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Streaming uploads cannot be replayed by urllib3 (the file is consumed): they get a
        # session without retries and a retry loop that reopens the file.
        self._once = requests.Session()
        self._once.headers = self.session.headers
        self.session.headers.update({
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": f"ckpt-guard/{__version__}",
        })

    def __repr__(self) -> str:
        return f"GitHub(api_url={self.api_url!r})"

    # -- core ------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.api_url}/{path.lstrip('/')}"

    def _trusted(self, url: str) -> bool:
        scheme, host, port = _origin(url)
        api_scheme, api_host, api_port = _origin(self.api_url)
        if (scheme, host, port) == (api_scheme, api_host, api_port):
            return True  # the API (on GHES, uploads live here too: https://HOST/api/uploads)
        return (api_host.startswith("api.") and scheme == api_scheme == "https"
                and host == "uploads." + api_host[4:] and port is None)

    def _auth_for(self, url: str) -> dict[str, str]:
        if self._token and self._trusted(url):
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                data: Any = None, stream: bool = False, ok: tuple[int, ...] = (),
                retry: bool = True) -> requests.Response:
        """One API call. Statuses >= 400 (not in ``ok``) raise :class:`GitHubError`."""
        url = self.url(path)
        hdrs = {**self._auth_for(url), **(headers or {})}
        session = self.session if retry else self._once
        try:
            resp = session.request(method, url, json=json, params=params, data=data,
                                        headers=hdrs, timeout=self.timeout, stream=stream,
                                        allow_redirects=False)
        except requests.RequestException as e:
            raise GitHubError(0, type(e).__name__, method, url) from e
        if resp.status_code >= 400 and resp.status_code not in ok:
            raise GitHubError(resp.status_code, _message(resp), method, url)
        return resp

    def get_json(self, path: str, **kw: Any) -> Any:
        return self.json("GET", path, **kw)

    def json(self, method: str, path: str, **kw: Any) -> Any:
        """The JSON body of a request; a body that is not JSON (a proxy's HTML page) is a
        :class:`GitHubError`, not a crash."""
        resp = self.request(method, path, **kw)
        return _json_of(resp, method)

    def paginate(self, path: str, params: Mapping[str, Any] | None = None,
                 max_pages: int = 100) -> Iterator[Any]:
        """Items of a list endpoint, following ``Link: rel="next"``."""
        url: str | None = self.url(path)
        query: Mapping[str, Any] | None = {"per_page": 100, **(params or {})}
        for _ in range(max_pages):
            if url is None:
                return
            resp = self.request("GET", url, params=query)
            body = _json_of(resp, "GET")
            items = body if isinstance(body, list) else (
                body.get("items", []) if isinstance(body, dict) else [])
            yield from (i for i in items if isinstance(i, dict))
            nxt = resp.links.get("next", {}).get("url")
            url, query = (urljoin(url, nxt) if nxt else None), None

    # -- downloads / uploads -----------------------------------------------------------
    def download(self, path: str, dest: Path, *, accept: str = "application/octet-stream",
                 max_redirects: int = 5, max_bytes: int | None = None) -> int:
        """Stream ``path`` to ``dest``; returns bytes written. Redirects are followed by hand:
        the token goes only to the API origin, never to the blob host it redirects to. More
        than ``max_bytes`` (e.g. the asset's declared size) is an error, not a full disk."""
        url = self.url(path)
        for _ in range(max_redirects + 1):
            resp = self.request("GET", url, headers={"Accept": accept}, stream=True)
            if resp.status_code in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                resp.close()
                if not location:
                    raise GitHubError(resp.status_code, "redirect without Location", "GET", url)
                url = urljoin(url, location)
                continue
            written = 0
            tmp = dest.with_name(dest.name + ".part")
            try:
                with open(tmp, "wb") as fh:
                    for chunk in resp.iter_content(chunk_size=1 << 20):
                        written += len(chunk)
                        if max_bytes is not None and written > max_bytes:
                            raise _TooBig(f"more than the expected {max_bytes} bytes")
                        fh.write(chunk)
                os.replace(tmp, dest)
            except _TooBig as e:
                tmp.unlink(missing_ok=True)
                raise GitHubError(0, f"download failed: {e}", "GET", url) from None
            except (OSError, requests.RequestException) as e:
                tmp.unlink(missing_ok=True)
                raise GitHubError(0, f"download failed: {type(e).__name__}", "GET", url) from e
            finally:
                resp.close()
            return written
        raise GitHubError(0, "too many redirects", "GET", url)

    def download_location(self, path: str, *, accept: str = "application/octet-stream",
                          max_redirects: int = 5) -> tuple[str, dict[str, str]]:
        """Where the bytes of ``path`` can be read (by range): the URL GitHub redirects to (a
        signed blob URL on another host: no token, nothing fetched from it here), or the API
        URL itself, with its headers, when it answers with the bytes."""
        url = self.url(path)
        for _ in range(max_redirects + 1):
            resp = self.request("GET", url, headers={"Accept": accept}, stream=True)
            resp.close()  # headers only: the body is read later, by range
            if resp.status_code not in (301, 302, 303, 307, 308):
                return url, {**self._auth_for(url), "Accept": accept}
            location = resp.headers.get("Location")
            if not location:
                raise GitHubError(resp.status_code, "redirect without Location", "GET", url)
            url = urljoin(url, location)
            if not self._trusted(url):
                return url, {}
        raise GitHubError(0, "too many redirects", "GET", url)

    def upload(self, upload_url: str, file: Path, name: str,
               content_type: str = "application/octet-stream") -> Any:
        """Upload a release asset. ``upload_url`` is the release's URI template
        (``…/assets{?name,label}``); the template part is dropped."""
        base = upload_url.split("{", 1)[0]
        for attempt in range(self.retries + 1):
            with open(file, "rb") as fh:
                try:
                    resp = self.request("POST", base, params={"name": name}, data=fh,
                                        retry=False,
                                        headers={"Content-Type": content_type,
                                                 "Content-Length": str(file.stat().st_size)})
                    return _json_of(resp, "POST")
                except GitHubError as e:
                    if e.status not in (0, *RETRY_STATUSES) or attempt == self.retries:
                        raise
            time.sleep(min(self.backoff_max, self.backoff * (2 ** attempt)))
        raise AssertionError("unreachable")  # pragma: no cover


class _TooBig(Exception):
    pass


def _json_of(resp: requests.Response, method: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise GitHubError(resp.status_code, "the response is not JSON", method,
                          resp.url) from None


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "")[:200]
    if isinstance(body, dict):
        msg = str(body.get("message", ""))
        errors = body.get("errors")
        if errors:
            msg += f" ({errors})"
        return msg[:500]
    return str(body)[:200]
