"""Priorities in delivery: MT-PRIORITY passed on to a next hop that offers it."""

from __future__ import annotations

from delivery_harness import Harness

from support.dsnsink import DsnSink
from support.smtpsink import SmtpSink


async def test_the_priority_goes_on_as_mt_priority_to_a_next_hop_that_offers_it(
    harness: Harness,
) -> None:
    offering = DsnSink(mt_priority=True).start()
    plain = DsnSink().start()
    try:
        await harness.start()
        for sink in (offering, plain):
            route = f"smtp:[127.0.0.1]:{sink.port}"
            urgent = await harness.submit(route, ["bob@example.test"], priority=-7)
            ordinary = await harness.submit(route, ["carol@example.test"])
            for qid in (urgent, ordinary):
                assert (await harness.outcome(qid)).results[0].status == "delivered"
    finally:
        offering.stop()
        plain.stop()
    assert offering.mail_params == [["MT-PRIORITY=-7"], []]
    assert plain.mail_params == [[], []]


async def test_a_peer_without_the_extension_gets_no_parameter(
    harness: Harness, sink: SmtpSink
) -> None:
    await harness.start()
    qid = await harness.submit(f"smtp:[127.0.0.1]:{sink.port}", ["bob@example.test"], priority=5)
    assert (await harness.outcome(qid)).results[0].status == "delivered"
    assert sink.wait_for(1)[0].rcpt_tos == ["bob@example.test"]
