"""API keys and scopes, the keys CLI, the per-key token buckets (429) and the queue limit (503)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import openai
import pytest
from gateway.auth import KeyStore

from tests.gateway.conftest import PEPPER

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def secured(launch):
    return launch(auth="required", rate_requests_per_min=60, rate_request_burst=3)


@pytest.fixture(scope="module")
def keys(redis_server) -> KeyStore:
    return KeyStore(redis_server, PEPPER)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_required_and_checked(secured, keys):
    r = httpx.get(secured.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = httpx.get(secured.url + "/v1/models", headers=_auth("cf-000000000000-forged"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    key, info = keys.create("reader", ["chat"])
    assert httpx.get(secured.url + "/v1/models", headers=_auth(key)).status_code == 200
    assert keys.revoke(info.key_id)
    assert httpx.get(secured.url + "/v1/models", headers=_auth(key)).status_code == 401


def test_keys_are_stored_hashed(keys, redis_server):
    key, info = keys.create("hashed", ["chat"])
    dump = " ".join(str(redis_server.get(k)) for k in redis_server.keys("chatforge:apikey:*"))
    assert key not in dump and info.key_id in dump
    assert key.split("-")[-1] not in " ".join(redis_server.keys("chatforge:*"))


def test_scopes(secured, keys):
    chat_key, _ = keys.create("chatter", ["chat"])
    admin_key, _ = keys.create("admin", ["admin"])
    r = httpx.get(secured.url + "/v1/jobs", headers=_auth(chat_key))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = httpx.post(secured.url + "/v1/deployments", json={"checkpoint": "tiny/sft"}, headers=_auth(chat_key))
    assert r.status_code == 403
    assert httpx.get(secured.url + "/v1/jobs", headers=_auth(admin_key)).status_code == 200
    # admin implies chat
    assert httpx.get(secured.url + "/v1/conversations", headers=_auth(admin_key)).status_code == 200
    r = httpx.post(
        secured.url + "/v1/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=_auth(admin_key)
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "scopes.0"
    r = httpx.post(
        secured.url + "/v1/admin/keys", json={"name": "made", "scopes": ["chat"]}, headers=_auth(admin_key)
    )
    made = r.json()
    assert r.status_code == 201 and made["key"].startswith("cf-")
    assert httpx.get(secured.url + "/v1/models", headers=_auth(made["key"])).status_code == 200
    assert (
        httpx.delete(secured.url + f"/v1/admin/keys/{made['id']}", headers=_auth(admin_key)).status_code
        == 200
    )
    assert httpx.get(secured.url + "/v1/models", headers=_auth(made["key"])).status_code == 401


def test_conversations_are_per_key(secured, keys):
    a, _ = keys.create("a", ["chat"])
    b, _ = keys.create("b", ["chat"])
    created = httpx.post(secured.url + "/v1/conversations", json={"title": "mine"}, headers=_auth(a)).json()
    assert httpx.get(secured.url + f"/v1/conversations/{created['id']}", headers=_auth(a)).status_code == 200
    assert httpx.get(secured.url + f"/v1/conversations/{created['id']}", headers=_auth(b)).status_code == 404
    assert httpx.get(secured.url + "/v1/conversations", headers=_auth(b)).json()["data"] == []


def test_keys_cli_creates_a_working_key(secured, redis_url):
    env = {**os.environ, "REDIS_URL": redis_url, "CHATFORGE_GATEWAY_KEY_PEPPER": PEPPER}
    cli = [sys.executable, "-m", "chatforge.cli", "keys"]
    created = subprocess.run(
        [*cli, "create", "from-cli", "--scope", "chat"], env=env, capture_output=True, text=True, timeout=60
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    client = openai.OpenAI(base_url=secured.url + "/v1", api_key=key, max_retries=0)
    assert client.models.list().data[0].id == "chatforge"
    listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=60).stdout
    key_id = next(line.split("\t")[0] for line in listed.splitlines() if "\tfrom-cli\t" in line)
    assert key not in listed
    revoked = subprocess.run([*cli, "revoke", key_id], env=env, capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    bad = subprocess.run([*cli, "revoke", "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no key" in bad.stderr


def test_keys_cli_prints_no_key_without_the_gateways_pepper(redis_url):
    """Without CHATFORGE_GATEWAY_KEY_PEPPER the CLI would hash with the development pepper, which
    every gateway that checks keys refuses: it says so and prints nothing, and stores nothing."""
    env = {k: v for k, v in os.environ.items() if k != "CHATFORGE_GATEWAY_KEY_PEPPER"}
    env["REDIS_URL"] = redis_url
    cli = [sys.executable, "-m", "chatforge.cli", "keys"]
    before = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=60).stdout
    created = subprocess.run(
        [*cli, "create", "no-pepper"], env=env, capture_output=True, text=True, timeout=60
    )
    assert created.returncode == 2 and created.stdout == ""
    assert "CHATFORGE_GATEWAY_KEY_PEPPER" in created.stderr
    after = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=60).stdout
    assert after == before and "no-pepper" not in after


def test_keys_cli_prints_no_key_with_another_pepper_than_the_gateways(secured, redis_url):
    """A gateway with keys on publishes (an HMAC of) its pepper at start; another pepper is refused."""
    env = {**os.environ, "REDIS_URL": redis_url, "CHATFORGE_GATEWAY_KEY_PEPPER": "not-the-gateways-pepper"}
    cli = [sys.executable, "-m", "chatforge.cli", "keys", "create", "wrong-pepper"]
    created = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 2 and created.stdout == "" and "pepper" in created.stderr


def test_request_rate_limit_answers_429_with_retry_after(secured, keys):
    key, _ = keys.create("limited", ["chat"])
    other, _ = keys.create("unlimited", ["chat"])
    body = {"model": "chatforge", "messages": USER, "max_tokens": 1}
    statuses = [
        httpx.post(secured.url + "/v1/chat/completions", json=body, headers=_auth(key), timeout=30)
        for _ in range(5)
    ]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]  # the burst
    limited = statuses[3]
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert int(limited.headers["Retry-After"]) >= 1
    # buckets are per key
    assert (
        httpx.post(
            secured.url + "/v1/chat/completions", json=body, headers=_auth(other), timeout=30
        ).status_code
        == 200
    )


def test_token_budget(launch):
    tight = launch(auth="off", rate_token_burst=100, rate_tokens_per_min=60)
    body = {"model": "chatforge", "messages": USER, "max_tokens": 40}
    ok = httpx.post(tight.url + "/v1/chat/completions", json=body, timeout=30)
    assert ok.status_code == 200
    second = httpx.post(tight.url + "/v1/chat/completions", json=body, timeout=30)
    third = httpx.post(tight.url + "/v1/chat/completions", json=body, timeout=30)
    assert 429 in (second.status_code, third.status_code)
    too_big = httpx.post(tight.url + "/v1/chat/completions", json={**body, "max_tokens": 120}, timeout=30)
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "token_budget_exceeded"


def test_queue_limit_answers_503_instead_of_hanging(launch):
    """With the one slot taken (as a long generation would), a new request is refused at once, or
    after the queue timeout when one may wait."""
    body = {"model": "chatforge", "messages": USER, "max_tokens": 1}
    for waiting, code in ((0, "overloaded"), (1, "queue_timeout")):
        gw = launch(
            auth="off", max_concurrent_generations=1, max_queued_generations=waiting, queue_timeout_s=0.5
        )
        slot = gw.state.admission.slot()
        gw.call(slot.__aenter__)
        try:
            r = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == code and r.headers["Retry-After"] == "1"
        finally:
            gw.call(lambda slot=slot: slot.__aexit__(None, None, None))
        assert httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
