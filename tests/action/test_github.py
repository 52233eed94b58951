"""The REST client against a real loopback server: pagination, retries, redirects, secrecy."""

from __future__ import annotations

import pytest

from ckpt_guard.action.github import GitHub, GitHubError
from tests.action.fakegithub import BOT, FakeGitHub

TOKEN = "ghs_SECRETtoken123"


@pytest.fixture
def api():
    with FakeGitHub() as fake:
        yield fake


def client(api: FakeGitHub, **kw) -> GitHub:
    return GitHub(TOKEN, api.url, backoff=0.01, **kw)


def test_paginate_follows_link_past_100(api):
    for i in range(250):
        api.add_comment(7, f"c{i}", BOT)
    items = list(client(api).paginate("/repos/acme/models/issues/7/comments"))
    assert [c["body"] for c in items] == [f"c{i}" for i in range(250)]
    gets = api.of("GET", r"/repos/acme/models/issues/7/comments")
    assert [r.query.get("page", ["1"])[0] for r in gets] == ["1", "2", "3"]
    assert all(r.query["per_page"] == ["100"] for r in gets)


def test_retries_5xx_then_succeeds(api):
    api.fail("GET", r"/repos/acme/models/pulls/3", 502, 503)
    api.state.pulls[3] = {"number": 3}
    assert client(api).get_json("/repos/acme/models/pulls/3") == {"number": 3}
    assert len(api.of("GET", r"/repos/acme/models/pulls/3")) == 3


def test_retries_429_and_post(api):
    api.fail("POST", r"/repos/acme/models/issues/1/comments", 429, 500)
    c = client(api).request("POST", "/repos/acme/models/issues/1/comments",
                            json={"body": "x"}).json()
    assert c["body"] == "x"
    assert len(api.of("POST", r"/repos/acme/models/issues/1/comments")) == 3
    assert len(api.state.comments[1]) == 1


def test_retries_are_bounded(api):
    api.fail("GET", r"/repos/acme/models/pulls/4", *([503] * 10))
    with pytest.raises(GitHubError) as e:
        client(api, retries=2).get_json("/repos/acme/models/pulls/4")
    assert e.value.status == 503
    assert len(api.of("GET", r"/repos/acme/models/pulls/4")) == 3


def test_422_is_not_retried_and_token_never_in_messages(api):
    gh = client(api)
    with pytest.raises(GitHubError) as e:
        gh.request("POST", "/repos/acme/models/issues/1/comments", json={"body": "x" * 70000})
    assert e.value.status == 422
    assert "Validation Failed" in str(e.value)
    assert len(api.of("POST", r"/repos/acme/models/issues/1/comments")) == 1
    assert TOKEN not in str(e.value) and TOKEN not in repr(gh)


def test_token_sent_only_to_api_and_download_follows_302_without_it(api, tmp_path):
    rel = api.add_release(tag="v1", draft=True, assets={"model.pt": b"\x00" * 5000})
    aid = rel["assets"][0]["id"]
    dest = tmp_path / "model.pt"
    n = client(api).download(f"/repos/acme/models/releases/assets/{aid}", dest)
    assert n == 5000 and dest.read_bytes() == b"\x00" * 5000
    (api_req,) = api.of("GET", rf"/repos/acme/models/releases/assets/{aid}")
    assert api_req.headers["authorization"] == f"Bearer {TOKEN}"
    assert api_req.headers["accept"] == "application/octet-stream"
    (blob_req,) = api.blob_requests
    assert blob_req.path == f"/blob/{aid}" and blob_req.query == {"sig": ["abc"]}
    assert "authorization" not in blob_req.headers
    assert not (tmp_path / "model.pt.part").exists()


def test_connection_refused_is_a_clean_error(tmp_path):
    gh = GitHub(TOKEN, "http://127.0.0.1:9", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(GitHubError) as e:
        gh.get_json("/user")
    assert e.value.status == 0 and TOKEN not in str(e.value)


def test_retry_after_is_honoured_but_bounded(api):
    """A 429 asking for an hour waits at most backoff_max; a 403 with Retry-After (secondary
    rate limit) is retried; a plain 403 (fork token) is not."""
    import time

    api.state.pulls[5] = {"number": 5}
    api.fail_with("GET", r"/repos/acme/models/pulls/5", 429, {"message": "slow down"},
                  {"Retry-After": "3600"})
    api.fail_with("GET", r"/repos/acme/models/pulls/5", 403,
                  {"message": "You have exceeded a secondary rate limit"}, {"Retry-After": "60"})
    t0 = time.monotonic()
    assert client(api, backoff_max=0.2).get_json("/repos/acme/models/pulls/5") == {"number": 5}
    assert time.monotonic() - t0 < 5
    assert len(api.of("GET", r"/repos/acme/models/pulls/5")) == 3
    api.fail("GET", r"/repos/acme/models/pulls/5", 403)
    with pytest.raises(GitHubError) as e:
        client(api).get_json("/repos/acme/models/pulls/5")
    assert e.value.status == 403 and len(api.of("GET", r"/repos/acme/models/pulls/5")) == 4


@pytest.mark.parametrize(("api_url", "url", "sent"), [
    ("https://api.github.com", "https://api.github.com/repos/a/b", True),
    # release uploads go to the upload host the release's upload_url names
    ("https://api.github.com", "https://uploads.github.com/repos/a/b/releases/1/assets", True),
    ("https://ghe.example/api/v3", "https://ghe.example/api/uploads/repos/a/b/releases/1/assets",
     True),
    ("https://api.github.com", "https://objects.githubusercontent.com/blob?sig=x", False),
    ("https://api.github.com", "http://api.github.com/repos/a/b", False),
    ("https://api.github.com", "https://uploads.github.com.evil.example/x", False),
    ("https://api.github.com", "https://api.github.com:8443/x", False),
    ("https://ghe.example/api/v3", "https://uploads.ghe.example/x", False),
])
def test_which_hosts_get_the_token(api_url, url, sent):
    assert bool(GitHub(TOKEN, api_url)._auth_for(url)) is sent
