"""``elemta queue``: the queue through the API, as Postfix's ``postqueue -p``,
``postsuper -h/-H/-r/-d`` and ``qshape`` show and change it; ``elemta suspend``:
destination suspensions."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .apiclient import ApiClient, api_options
from .keys import parse_duration

__all__ = ["queue", "suspend"]

F = TypeVar("F", bound=Callable[..., Any])

FILTERS = (
    ("state", "State: active, deferred, held or failed."),
    ("sender", "Sender address."),
    ("sender_domain", "Sender's domain."),
    ("recipient", "A recipient's address."),
    ("recipient_domain", "A recipient's domain."),
    ("domain", "Sender's or a recipient's domain."),
    ("destination", "Destination (recipient domain the message waits for)."),
)
# postqueue -p marks: * active, ! held; we add # for failed.
MARKS = {"active": "*", "held": "!", "deferred": " ", "failed": "#"}


def filter_options(f: F) -> F:
    for name, text in reversed(FILTERS):
        f = click.option("--" + name.replace("_", "-"), name, default="", help=text)(f)
    f = click.option(
        "--min-age", default="", metavar="DURATION", help="At least this old (30m, 2h, 1d)."
    )(f)
    return f


def _filters(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: kwargs.pop(k) for k, _ in FILTERS if kwargs.get(k)}
    for k, _ in FILTERS:
        kwargs.pop(k, None)
    age = kwargs.pop("min_age", "")
    if age:
        out["min_age"] = parse_duration(age)
    return out


def _arrival(ts: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S", time.localtime(ts)) if ts else "-"


@click.group()
def queue() -> None:
    """The mail queue: list, show, summary (qshape), and hold, release, retry,
    bounce or delete messages, by queue id or by filter. Talks to the API
    (--api-url/--api-key, ELEMTA_API_URL/ELEMTA_API_KEY or ~/.config/elemta/cli.toml)."""


@queue.command(name="list")
@filter_options
@click.option("--limit", type=click.IntRange(1, 100000), default=10000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@api_options
def list_(limit: int, as_json: bool, client: ApiClient, **kwargs: Any) -> None:
    """Messages in the queue, as postqueue -p prints them: queue id (* active,
    ! held, # failed), size, arrival, sender, then the last error and the
    recipients still waiting."""
    params = _filters(kwargs)
    shown, total_bytes, cursor = 0, 0, ""
    if not as_json:
        click.echo(
            f"{'-Queue ID-':<21} {'--Size--':>8} {'----Arrival Time----':<20} -Sender/Recipient-------"
        )
    while shown < limit:
        page = client.get(
            "/api/v1/messages", **params, limit=min(1000, limit - shown), cursor=cursor
        )
        for m in page["messages"]:
            shown += 1
            total_bytes += m["size"]
            if as_json:
                click.echo(json.dumps(m))
                continue
            mark = MARKS.get(m["state"], "?")
            click.echo(
                f"{m['id'] + mark:<21} {m['size']:>8} {_arrival(m['received_at']):<20} {m['sender'] or 'MAILER-DAEMON'}"
            )
            err = m.get("last_error")
            if err and m["state"] != "active":
                text = f"{err.get('code') or ''} {err.get('enhanced') or ''} {err.get('text') or ''}".strip()
                click.echo(f"{'':<52}({text[:200]})")
            for r in m["pending"] or m["recipients"]:
                click.echo(f"{'':<52}{r}")
            if not as_json:
                click.echo("")
        cursor = page.get("next_cursor") or ""
        if not cursor:
            break
    if not as_json:
        if shown:
            click.echo(
                f"-- {(total_bytes + 1023) // 1024} Kbytes in {shown} Request{'s' if shown != 1 else ''}."
            )
        else:
            click.echo("Mail queue is empty")


@queue.command()
@click.argument("queue_id")
@click.option("--raw", is_flag=True, help="The stored message itself (admin keys only).")
@api_options
def show(queue_id: str, raw: bool, client: ApiClient) -> None:
    """One message: envelope, destinations with their last reply, and its history."""
    if raw:
        click.echo(
            client.raw(f"/api/v1/messages/{queue_id}/raw").decode("utf-8", "replace"), nl=False
        )
        return
    m = client.get(f"/api/v1/messages/{queue_id}")
    st = m.get("state") or {}
    click.echo(f"Queue ID:   {m['id']}")
    if st:
        click.echo(f"Status:     {st.get('status')}")
        click.echo(f"Sender:     {st.get('sender') or 'MAILER-DAEMON'}")
        click.echo(f"Recipients: {', '.join(st.get('recipients') or [])}")
        click.echo(f"Size:       {st.get('size')}")
        click.echo(f"Arrival:    {_arrival(float(st.get('received_at') or 0))}")
        for key, d in (st.get("dests") or {}).items():
            last = d.get("last") or {}
            reply = f"{last.get('code') or ''} {last.get('enhanced') or ''} {last.get('text') or ''}".strip()
            click.echo(
                f"  {key}: {d.get('status')}, attempt {d.get('attempt')}, {', '.join(d.get('recipients') or [])}"
                + (f" ({reply})" if reply else "")
            )
    click.echo("History:")
    for e in m.get("events") or []:
        when = time.strftime("%H:%M:%S", time.localtime(float(e.get("at") or 0)))
        detail = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("type", "at", "id"))
        click.echo(f"  {when} {e.get('type')} {detail}".rstrip())


@queue.command()
@click.option("--json", "as_json", is_flag=True)
@api_options
def summary(as_json: bool, client: ApiClient) -> None:
    """Counts by state, and per destination the messages by age in minutes (qshape)."""
    s = client.get("/api/v1/queue/summary")
    if as_json:
        click.echo(json.dumps(s))
        return
    click.echo("  ".join(f"{k}: {v}" for k, v in s["by_state"].items()))
    heads = ["T", *[b.rstrip("m") for b in s["age_buckets"]]]
    width = max([len("TOTAL"), *(len(r["destination"]) for r in s["destinations"])])
    click.echo(f"{'':<{width}} " + " ".join(f"{h:>5}" for h in heads))
    totals = [0] * len(heads)
    rows = []
    for r in s["destinations"]:
        cells = [r["total"], *r["ages"]]
        totals = [a + b for a, b in zip(totals, cells, strict=True)]
        rows.append((r, cells))
    click.echo(f"{'TOTAL':>{width}} " + " ".join(f"{c:>5}" for c in totals))
    for r, cells in rows:
        tail = ""
        if r.get("suspended_until"):
            tail += "  suspended"
        err = r.get("last_error")
        if err:
            tail += f"  ({err.get('code') or ''} {err.get('text') or ''})".rstrip()
        click.echo(f"{r['destination']:>{width}} " + " ".join(f"{c:>5}" for c in cells) + tail)


def _action(verb: str, past: str, doc: str) -> click.Command:
    @click.argument("queue_ids", nargs=-1)
    @filter_options
    @api_options
    def command(queue_ids: tuple[str, ...], client: ApiClient, **kwargs: Any) -> None:
        flt = _filters(kwargs)
        if queue_ids and flt:
            raise click.UsageError("give queue ids or filters, not both")
        if not queue_ids and not flt:
            raise click.UsageError("give queue ids, or filters such as --sender-domain")
        touched = matched = 0
        errors: list[str] = []
        if queue_ids:
            for qid in queue_ids:
                r = client.post(f"/api/v1/messages/{qid}/{verb}")
                matched += r["matched"]
                touched += r["touched"]
                errors += [
                    f"{i}: {a.get('error')}" for i, a in r["results"].items() if not a.get("ok")
                ]
        else:
            r = client.post(f"/api/v1/queue/actions/{verb}", json=flt)
            matched, touched = r["matched"], r["touched"]
            errors += [f"{i}: {a.get('error')}" for i, a in r["results"].items() if not a.get("ok")]
        for e in errors:
            click.echo(f"elemta: {e}", err=True)
        click.echo(f"{past} {touched} of {matched} message{'s' if matched != 1 else ''}")
        if queue_ids and errors:
            raise SystemExit(1)

    return click.command(name=verb, help=doc)(command)


for _verb, _past, _doc in (
    ("hold", "held", "Put messages on hold: no delivery attempt until released (postsuper -h)."),
    ("release", "released", "Release held messages to delivery (postsuper -H)."),
    ("retry", "retrying", "Retry deferred messages now (postqueue -i)."),
    ("bounce", "bounced", "Return messages to their senders with a DSN now."),
    ("delete", "deleted", "Delete messages without notice (postsuper -d)."),
):
    queue.add_command(_action(_verb, _past, _doc))


@click.group()
def suspend() -> None:
    """Destination suspensions: no delivery attempt to a domain until the
    suspension ends or is removed."""


@suspend.command()
@click.argument("domain")
@click.option("--for", "duration", default="", metavar="DURATION", help="How long: 30m, 2h, 1d.")
@click.option(
    "--until", "until", type=float, default=0.0, metavar="EPOCH", help="End, in epoch seconds."
)
@click.option("--reason", default="", help="Why (shown in lists and to delivery's log).")
@api_options
def add(domain: str, duration: str, until: float, reason: str, client: ApiClient) -> None:
    """Suspend delivery to DOMAIN."""
    if bool(duration) == bool(until):
        raise click.UsageError("give --for or --until")
    body: dict[str, Any] = {"domain": domain, "reason": reason}
    if duration:
        body["duration"] = parse_duration(duration)
    else:
        body["until"] = until
    s = client.post("/api/v1/suspensions", json=body)
    click.echo(
        f"suspended {s['domain']} until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s['until']))}"
    )


@suspend.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@api_options
def list_suspensions(as_json: bool, client: ApiClient) -> None:
    """Suspensions in force."""
    for s in client.get("/api/v1/suspensions"):
        if as_json:
            click.echo(json.dumps(s))
        else:
            until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["until"]))
            click.echo(f"{s['domain']:<30} until {until}  {s['reason']}")


@suspend.command()
@click.argument("domain")
@api_options
def remove(domain: str, client: ApiClient) -> None:
    """Lift the suspension of DOMAIN: its waiting messages are tried at once."""
    client.delete(f"/api/v1/suspensions/{domain}")
    click.echo(f"lifted {domain}")
