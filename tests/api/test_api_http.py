"""The REST API in-process against a real nats-server: queue counts, message state
and history, errors as RFC 9457 problems, readiness, health and metrics on the API port."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from elemta.common.config import Config, load_config
from elemta.common.envelope import Envelope, new_queue_id
from elemta.common.history import batch_subject
from elemta.common.jetstream import (
    DELIVERY_CONSUMER,
    DELIVERY_STREAM,
    STATE_BUCKET,
    delivery_consumer_config,
    ensure_streams,
)

from support.apiserver import api_server, wait_status
from support.dnsserver import free_port
from support.natsserver import NatsServer

# A well-formed key that nobody created: checking it needs NATS.
SOME_KEY = "elemta_000000000000_" + "A" * 43


async def get_json(client: httpx.AsyncClient, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status_code == status, resp.text
    kind = "application/json" if status < 400 else "application/problem+json"
    assert resp.headers["content-type"] == kind
    return resp.json()


async def publish_events(js: JetStreamContext, qid: str, *types: str) -> list[dict[str, Any]]:
    events = []
    for n, kind in enumerate(types):
        event = {"type": kind, "at": 1_700_000_000.0 + n, "n": n}
        await js.publish(f"elemta.events.{qid}", json.dumps(event).encode())
        events.append(event)
    return events


async def test_readyz_answers_503_until_the_events_stream_exists_then_200(
    client: httpx.AsyncClient, js: JetStreamContext, cfg: Config
) -> None:
    resp = await client.get("/readyz")
    assert resp.status_code == 503
    assert "streams" in resp.text
    client.headers["Authorization"] = f"Bearer {SOME_KEY}"
    body = await get_json(client, "/api/v1/queue", 503)
    assert body["type"].endswith("/unavailable")
    await ensure_streams(js, cfg)
    await wait_status(client, "/readyz", 200)


async def test_healthz_and_metrics_are_served_on_the_api_port(api: httpx.AsyncClient) -> None:
    resp = await api.get("/healthz")
    assert resp.status_code == 200
    await get_json(api, "/api/v1/queue")
    metrics = (await api.get("/metrics")).text
    assert 'elemta_api_requests_total{code="200",route="/api/v1/queue"}' in metrics


async def test_queue_counts_report_messages_delivery_jobs_deferred_jobs_and_consumers(
    api: httpx.AsyncClient, js: JetStreamContext, cfg: Config
) -> None:
    empty = await get_json(api, "/api/v1/queue")
    assert (empty["messages"], empty["delivery_waiting"], empty["deferred"]) == (0, 0, 0)

    ids = [new_queue_id() for _ in range(3)]
    for qid in ids[:2]:
        await js.publish(f"elemta.msg.{qid}", b"Subject: hi\r\n\r\nbody\r\n")
    for qid in ids:
        await js.publish(f"elemta.delivery.{qid}", b"{}")
    await js.publish(f"elemta.deferred.{ids[2]}", b"{}")
    await js.add_consumer(DELIVERY_STREAM, config=delivery_consumer_config(cfg))
    worker = await js.pull_subscribe_bind(durable=DELIVERY_CONSUMER, stream=DELIVERY_STREAM)
    taken = await worker.fetch(1, timeout=5)  # in flight: fetched, not acknowledged
    assert len(taken) == 1

    body = await get_json(api, "/api/v1/queue")
    assert body["messages"] == 2
    assert body["message_bytes"] > 0
    assert body["delivery_waiting"] == 2
    assert body["delivery_in_flight"] == 1
    assert body["deferred"] == 1
    assert body["outcomes_pending"] == 0
    consumer = body["streams"]["ELEMTA_DELIVERY"]["consumers"][DELIVERY_CONSUMER]
    assert consumer["pending"] == 2
    assert consumer["ack_pending"] == 1
    assert set(body["streams"]) == {
        "ELEMTA_MESSAGES",
        "ELEMTA_DELIVERY",
        "ELEMTA_DEFERRED",
        "ELEMTA_OUTCOMES",
        "ELEMTA_EVENTS",
    }


async def test_a_message_shows_its_state_and_its_events_oldest_first(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    qid, other = new_queue_id(), new_queue_id()
    state = {"id": qid, "sender": "a@example.org", "recipients_left": ["b@example.net"]}
    kv = await js.key_value(STATE_BUCKET)
    await kv.put(qid, json.dumps(state).encode())
    await publish_events(js, other, "accepted")
    events = await publish_events(js, qid, "accepted", "attempt", "deferred")
    await publish_events(js, other, "delivered")

    body = await get_json(api, f"/api/v1/messages/{qid}")
    assert (body["id"], body["state"], body["events"]) == (qid, state, events)
    assert [a["attempt"] for a in body["attempts"]] == [0]  # the one "attempt" event
    assert (body["summary"]["state"], body["summary"]["sender"]) == ("active", "a@example.org")


async def test_a_finished_message_without_state_still_shows_its_history(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    qid = new_queue_id()
    events = await publish_events(js, qid, "accepted", "delivered")
    kv = await js.key_value(STATE_BUCKET)
    await kv.put(qid, b'{"left": 0}')
    await kv.delete(qid)  # the queue removes the state when the message is finished

    body = await get_json(api, f"/api/v1/messages/{qid}")
    assert body["state"] is None
    assert [e["type"] for e in body["events"]] == ["accepted", "delivered"]
    assert body["events"] == events


async def test_a_message_with_state_but_no_events_yet_is_found(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    qid = new_queue_id()
    kv = await js.key_value(STATE_BUCKET)
    await kv.put(qid, b'{"attempts": 0}')

    body = await get_json(api, f"/api/v1/messages/{qid}")
    assert (body["id"], body["state"], body["events"]) == (qid, {"attempts": 0}, [])
    assert body["summary"]["state"] == "active"
    assert await get_json(api, f"/api/v1/messages/{qid}/events") == {"id": qid, "events": []}


async def test_a_message_waiting_for_its_first_attempt_is_found_from_its_envelope(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    env = Envelope(new_queue_id(), "a@client.test", ["b@relay.test"], 1700000000.0, size=5)
    ack = await js.publish(
        f"elemta.msg.{env.id}", b"hello", headers={"Elemta-Envelope": env.to_header()}
    )
    got = await get_json(api, f"/api/v1/messages/{env.id}")
    assert got["state"]["first_attempt"] == "pending"
    assert got["state"]["status"] == "active"
    assert got["state"]["recipients"] == ["b@relay.test"]
    assert got["state"]["msg_seq"] == ack.seq


async def test_a_waiting_message_of_another_priority_class_is_found_with_its_priority(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    env = Envelope(new_queue_id(), "a@client.test", ["b@relay.test"], 1700000000.0, priority=7)
    await js.publish(
        f"elemta.high.msg.{env.id}", b"hello", headers={"Elemta-Envelope": env.to_header()}
    )
    got = await get_json(api, f"/api/v1/messages/{env.id}")
    assert got["state"]["first_attempt"] == "pending"
    assert got["state"]["priority"] == 7


async def test_the_events_endpoint_returns_only_that_messages_events(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    qid, other = new_queue_id(), new_queue_id()
    await publish_events(js, other, "accepted", "bounced")
    events = await publish_events(js, qid, "accepted", "attempt", "delivered")

    body = await get_json(api, f"/api/v1/messages/{qid}/events")
    assert body == {"id": qid, "events": events}


async def test_events_stored_with_other_messages_are_found_for_their_message(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    """Delivery stores the history of messages it ends at once a few messages to a
    record (elemta.common.history): the message's own events come back, after any
    stored on its own subject, and nothing of its neighbours'."""
    now = time.time()
    qid, neighbour, later = new_queue_id(now), new_queue_id(now), new_queue_id(now)
    policy = await publish_events(js, qid, "policy")
    mine = [{"type": "accepted", "at": now, "id": qid}, {"type": "done", "at": now, "id": qid}]
    theirs = [{"type": "done", "at": now, "id": neighbour}]
    await js.publish(batch_subject(qid), json.dumps({neighbour: theirs}).encode())
    await js.publish(batch_subject(qid), json.dumps({qid: mine, later: theirs}).encode())
    await js.publish(batch_subject(qid), json.dumps({qid: theirs}).encode())  # ended twice

    body = await get_json(api, f"/api/v1/messages/{qid}/events")
    assert body == {"id": qid, "events": policy + mine}
    body = await get_json(api, f"/api/v1/messages/{neighbour}/events")
    assert body == {"id": neighbour, "events": theirs}


async def test_an_event_that_is_not_json_is_shown_raw(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    qid = new_queue_id()
    await js.publish(f"elemta.events.{qid}", b"not json")

    body = await get_json(api, f"/api/v1/messages/{qid}/events")
    assert body["events"] == [{"raw": "not json"}]


async def test_a_lower_case_queue_id_names_the_same_message(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    qid = new_queue_id()
    await publish_events(js, qid, "accepted")

    body = await get_json(api, f"/api/v1/messages/{qid.lower()}")
    assert body["id"] == qid
    assert len(body["events"]) == 1


@pytest.mark.parametrize("path", ["", "/events"])
async def test_an_unknown_queue_id_is_404_with_a_json_error(
    api: httpx.AsyncClient, path: str
) -> None:
    qid = new_queue_id()
    body = await get_json(api, f"/api/v1/messages/{qid}{path}", 404)
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert qid in body["detail"]
    assert body["instance"] == f"/api/v1/messages/{qid}{path}"


@pytest.mark.parametrize(
    "bad",
    [
        "SHORT",
        "0123456789ABCDEFGHJK0",  # 21 characters
        "0123456789ABCDEFGHIL",  # I and L are not Crockford base32
        "0123456789ABCDEFGHJU",  # nor is U
        "0123456789ABCDEF.HJK",
        "0123456789ABCDEFG%20JK",  # a space
    ],
)
@pytest.mark.parametrize("path", ["", "/events"])
async def test_a_malformed_queue_id_is_400_with_a_json_error(
    api: httpx.AsyncClient, bad: str, path: str
) -> None:
    body = await get_json(api, f"/api/v1/messages/{bad}{path}", 400)
    assert body["type"].endswith("/bad-queue-id")
    assert "queue id" in body["detail"]


async def test_unknown_api_paths_and_methods_answer_json_errors(
    api: httpx.AsyncClient,
) -> None:
    body = await get_json(api, "/api/v1/nothing-here", 404)
    assert body["detail"] == "no such path: /api/v1/nothing-here"
    resp = await api.post("/api/v1/queue")
    assert resp.status_code == 405
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == 405


async def test_the_root_leads_to_the_console_whose_page_is_html(
    api: httpx.AsyncClient,
) -> None:
    resp = await api.get("/")
    assert resp.status_code == 307 and resp.headers["location"] == "/console/"
    resp = await api.get("/console/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert 'src="js/main.js"' in resp.text
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_while_nats_is_down_the_api_is_not_ready_and_answers_503_in_json(
    api: httpx.AsyncClient, nats_server: NatsServer
) -> None:
    nats_server.stop()
    await wait_status(api, "/readyz", 503)
    assert "nats" in (await api.get("/readyz")).text
    body = await get_json(api, "/api/v1/queue", 503)
    assert body["type"].endswith("/unavailable")
    body = await get_json(api, f"/api/v1/messages/{new_queue_id()}", 503)
    assert body["type"].endswith("/unavailable")

    nats_server.start()
    await wait_status(api, "/readyz", 200)
    await get_json(api, "/api/v1/queue")


async def test_healthz_answers_while_nats_has_never_been_reachable() -> None:
    cfg = load_config(
        env={
            "ELEMTA_NATS_URL": f"nats://127.0.0.1:{free_port()}",
            "ELEMTA_API_LISTEN": f"127.0.0.1:{free_port()}",
        }
    )
    async with api_server(cfg) as url, httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/healthz")).status_code == 200
        resp = await c.get("/readyz")
        assert resp.status_code == 503
        assert "nats" in resp.text
        c.headers["Authorization"] = f"Bearer {SOME_KEY}"
        assert (await get_json(c, "/api/v1/queue", 503))["status"] == 503


async def test_the_detail_lists_attempts_and_links_the_trace(
    js: JetStreamContext, cfg: Config, tokens: dict[str, str]
) -> None:
    cfg = cfg.model_copy(
        update={"api": cfg.api.model_copy(update={"jaeger_url": "http://jaeger:16686/"})}
    )
    qid, trace = new_queue_id(), "4bf92f3577b34da6a3ce929d0e0e4736"
    kv = await js.key_value(STATE_BUCKET)
    state = {"id": qid, "trace": {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}}
    await kv.put(qid, json.dumps(state).encode())
    attempt = {
        "type": "attempt",
        "at": 1.0,
        "dest": "mx:b.test",
        "attempt": 1,
        "recipient": "x@b.test",
        "host": "mx.b.test",
        "status": "deferred",
        "code": 451,
        "enhanced": "4.3.0",
        "text": "busy",
    }
    await js.publish(f"elemta.events.{qid}", json.dumps(attempt).encode())
    async with (
        api_server(cfg) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {tokens['readonly']}"}
        ) as c,
    ):
        await wait_status(c, "/readyz", 200)
        body = await get_json(c, f"/api/v1/messages/{qid}")
    assert body["trace_id"] == trace
    assert body["trace_url"] == f"http://jaeger:16686/trace/{trace}"
    assert body["attempts"] == [{k: v for k, v in attempt.items() if k != "type"}]


async def test_config_is_redacted_and_health_names_every_service(
    api: httpx.AsyncClient,
) -> None:
    conf = await get_json(api, "/api/v1/config")
    assert conf["api"]["listen"] and "nats" in conf
    health = {h["service"]: h for h in await get_json(api, "/api/v1/health")}
    assert set(health) == {"api", "ingress", "policy", "queue", "delivery"}
    assert health["api"]["ready"] is True
    assert health["queue"]["ready"] is False  # not running in this test


async def test_a_listing_right_after_each_change_shows_every_kept_record_and_no_deleted_one(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    kv = await js.key_value(STATE_BUCKET)
    kept: set[str] = set()
    for n in range(30):
        qid = new_queue_id()
        await kv.put(qid, json.dumps({"id": qid, "status": "hold", "dests": {}}).encode())
        kept.add(qid)
        if n % 3 == 2:  # now and then one ends and its record goes
            gone = sorted(kept)[0]
            await kv.delete(gone)
            kept.discard(gone)
        body = await get_json(api, "/api/v1/messages?state=held&limit=1000")
        assert {m["id"] for m in body["messages"]} == kept
