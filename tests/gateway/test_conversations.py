"""Stored conversations: create, list (newest first), get, rename, replace messages, delete, cap."""

from __future__ import annotations

import httpx
from gateway.conversations import ConversationLimits, ConversationStore


def test_conversation_lifecycle(gateway):
    base = gateway.url + "/v1/conversations"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    created = httpx.post(base, json={"title": "first", "messages": messages}).json()
    assert created["id"].startswith("conv_") and created["messages"] == messages
    second = httpx.post(base, json={"title": "second"}).json()
    listed = httpx.get(base).json()["data"]
    ids = [c["id"] for c in listed]
    assert ids.index(second["id"]) < ids.index(created["id"])  # newest first
    assert "messages" not in listed[0]
    renamed = httpx.patch(f"{base}/{created['id']}", json={"title": "renamed"}).json()
    assert renamed["title"] == "renamed" and renamed["messages"] == messages
    more = messages + [{"role": "user", "content": "again"}]
    assert httpx.patch(f"{base}/{created['id']}", json={"messages": more}).json()["messages"] == more
    assert httpx.get(f"{base}/{created['id']}").json()["title"] == "renamed"
    assert [c["id"] for c in httpx.get(base, params={"q": "HELLO"}).json()["data"]] == [created["id"]]
    assert [c["id"] for c in httpx.get(base).json()["data"]][0] == created["id"]  # updated moves it up
    assert httpx.delete(f"{base}/{created['id']}").status_code == 204
    assert httpx.get(f"{base}/{created['id']}").status_code == 404
    assert httpx.delete(f"{base}/{created['id']}").status_code == 404


def test_bad_conversations_are_400(gateway):
    base = gateway.url + "/v1/conversations"
    r = httpx.post(base, json={"messages": [{"role": "assistant", "content": "first"}]})
    assert r.status_code == 400 and "expected role 'user'" in r.json()["error"]["message"]
    assert httpx.post(base, json={"title": "x" * 201}).status_code == 400
    assert httpx.post(base, json={"owner": "someone"}).status_code == 400


def test_search_matches_titles_and_message_text(redis_server):
    store = ConversationStore(redis_server, ConversationLimits(ttl_s=120, max_per_owner=10))
    owner = "search-owner"
    plain = store.create(owner, "Shopping list", [{"role": "user", "content": "Eggs and MILK"}])
    parts = [{"type": "text", "text": "Let me run it."}, {"type": "python", "text": "print(sum(range(10)))"}]
    tool = store.create(
        owner, "Sums", [{"role": "user", "content": "add"}, {"role": "assistant", "content": parts}]
    )
    titled = store.create(owner, "Milkshake recipes", [])

    def found(query: str, limit: int = 100) -> list[str]:
        return [c["id"] for c in store.recent(owner, limit, query)]

    assert found("milk") == [titled["id"], plain["id"]]  # title or text, any case, newest first
    assert found("range(10)") == [tool["id"]]  # a python part's text
    assert found("milk", limit=1) == [titled["id"]]  # the limit counts matches, not conversations read
    assert found("nothing like this") == []
    assert all("messages" not in c for c in store.recent(owner, 100, "milk"))


def test_cap_and_ttl(redis_server):
    store = ConversationStore(redis_server, ConversationLimits(ttl_s=120, max_per_owner=3))
    ids = [store.create("cap-owner", f"c{i}", [])["id"] for i in range(5)]
    kept = [c["id"] for c in store.recent("cap-owner")]
    assert sorted(kept) == sorted(ids[-3:])
    assert store.get("cap-owner", ids[0]) is None
    assert 0 < redis_server.ttl(f"chatforge:conv:cap-owner:{ids[-1]}") <= 120
    assert 0 < redis_server.ttl("chatforge:convs:cap-owner") <= 120


def test_report_cards(gateway, artifacts):
    report = artifacts / "runs" / "tiny" / "report"
    report.mkdir(parents=True, exist_ok=True)
    (report / "report.md").write_text("# tiny\n\n![loss](loss.png)\n")
    (report / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (report / "notes.txt").write_text("not served")
    assert {"run": "tiny"}.items() <= httpx.get(gateway.url + "/v1/reports").json()["data"][0].items()
    card = httpx.get(gateway.url + "/v1/reports/tiny/report.md")
    assert (
        card.status_code == 200
        and card.text.startswith("# tiny")
        and card.headers["content-type"].startswith("text/markdown")
    )
    assert httpx.get(gateway.url + "/v1/reports/tiny/loss.png").headers["content-type"] == "image/png"
    assert httpx.get(gateway.url + "/v1/reports/tiny/notes.txt").status_code == 404
    assert httpx.get(gateway.url + "/v1/reports/tiny/..%2Fsft").status_code in (400, 404)
    assert httpx.get(gateway.url + "/v1/reports/..%2F..%2Fetc/passwd").status_code in (400, 404)
