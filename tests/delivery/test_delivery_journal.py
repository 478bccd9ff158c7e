"""The ends of delivered messages written down on local disk: a delivery process
killed before their end is stored leaves them to the next one, not a copy."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from delivery_harness import BODY, Harness, metric, until

from elemta.common.envelope import Envelope, FirstAttempt, new_queue_id
from elemta.common.jetstream import (
    ENVELOPE_HEADER,
    EVENTS_STREAM,
    FIRST_CONSUMER,
    MESSAGES_STREAM,
    OUTCOMES_STREAM,
    ensure_streams,
    first_consumer_config,
)
from elemta.delivery.journal import EndJournal, Entry, take_over, unsettled

from support.smtpsink import SmtpSink
from support.stack import ELEMTA

ONE = Entry("q1", "first.q1.7", b'{"envelope":1}')
TWO = Entry("q2", "first.q2.8", b"two\nlines")


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.journal"))


def _die(journal: EndJournal) -> None:
    """What a kill does to a journal: its files stay, their locks go."""
    for fd in {journal._current.fd, *(s.fd for s in journal._where.values())}:
        os.close(fd)


def test_a_settled_end_is_not_taken_over_and_an_unsettled_one_is(tmp_path: Path) -> None:
    journal = EndJournal(tmp_path)
    journal.settle(journal.write(ONE))
    journal.write(TWO)
    assert unsettled(_files(tmp_path)[0].read_bytes()) == [TWO]


def test_a_torn_last_entry_ends_the_reading(tmp_path: Path) -> None:
    journal = EndJournal(tmp_path)
    journal.write(ONE)
    journal.write(TWO)
    data = _files(tmp_path)[0].read_bytes()
    assert unsettled(data[:-3]) == [ONE]
    assert unsettled(data[: data.index(b"first.q2")]) == [ONE]


def test_an_old_file_goes_once_its_ends_are_settled(tmp_path: Path) -> None:
    journal = EndJournal(tmp_path, segment_bytes=64)
    first = journal.write(ONE)
    journal.write(TWO)  # the file is full: the next ends go to a new one
    assert len(_files(tmp_path)) == 2
    journal.settle(first)
    assert len(_files(tmp_path)) == 2  # TWO still waits
    journal.settle(2)
    assert len(_files(tmp_path)) == 1


def test_a_clean_stop_leaves_nothing_to_take_over(tmp_path: Path) -> None:
    journal = EndJournal(tmp_path)
    journal.settle(journal.write(ONE))
    journal.close()
    assert _files(tmp_path) == []


async def test_a_stop_before_an_end_was_stored_leaves_it_for_the_next_start(
    tmp_path: Path,
) -> None:
    journal = EndJournal(tmp_path)
    journal.settle(journal.write(ONE))
    journal.write(TWO)  # its store never returned: the drain was cut short
    journal.close()
    stored: list[Entry] = []

    async def store(entry: Entry) -> None:
        stored.append(entry)

    assert await take_over(tmp_path, store) == 1
    assert stored == [TWO]


async def test_the_ends_of_a_live_process_are_left_to_it(tmp_path: Path) -> None:
    live = EndJournal(tmp_path)
    live.write(ONE)
    stored: list[Entry] = []

    async def store(entry: Entry) -> None:
        stored.append(entry)

    assert await take_over(tmp_path, store) == 0
    assert stored == []
    _die(live)
    assert await take_over(tmp_path, store) == 1
    assert stored == [ONE]
    assert _files(tmp_path) == []  # taken over once


async def test_ends_that_cannot_be_stored_are_left_for_the_next_start(tmp_path: Path) -> None:
    dead = EndJournal(tmp_path)
    dead.write(ONE)
    _die(dead)

    async def refuse(entry: Entry) -> None:
        raise TimeoutError

    assert await take_over(tmp_path, refuse) == 0
    assert len(_files(tmp_path)) == 1


async def test_the_ends_of_a_file_are_stored_together(tmp_path: Path) -> None:
    """A store that takes its time (a stream electing a leader) holds the start up
    once per file, not once per end."""
    dead = EndJournal(tmp_path)
    dead.write(ONE)
    dead.write(TWO)
    _die(dead)
    arrived: list[Entry] = []
    both = asyncio.Event()

    async def store(entry: Entry) -> None:
        arrived.append(entry)
        if len(arrived) == 2:
            both.set()
        await both.wait()  # returns only once the other is being stored too

    assert await asyncio.wait_for(take_over(tmp_path, store), 5.0) == 2


def test_without_a_writable_directory_delivery_goes_on_without_a_journal(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert EndJournal.open(tmp_path / "file" / "journal") is None


async def test_a_process_killed_after_the_destinations_250_does_not_deliver_it_again(
    harness: Harness, sink: SmtpSink, tmp_path: Path
) -> None:
    """A real delivery process, killed -9 while the end of a delivered message
    cannot be stored (its streams gone); the next process stores that end, and the
    message, offered again, is not delivered a second time."""
    route = f"smtp:[127.0.0.1]:{sink.port}"
    cfg = harness.config()
    cfg = cfg.model_copy(
        update={"transport": cfg.transport.model_copy(update={"routes": {"relay.test": route}})}
    )
    await harness.js.add_consumer(MESSAGES_STREAM, first_consumer_config(cfg))
    env = dict(
        os.environ,
        ELEMTA_NATS_URL=harness.nats_url,
        ELEMTA_SERVER_STATE_DIR=cfg.server.state_dir,
        ELEMTA_DELIVERY_HTTP_LISTEN="127.0.0.1:0",
        ELEMTA_TRANSPORT_ROUTES=f"relay.test={route}",
    )
    log = (tmp_path / "delivery.log").open("w")
    process = await asyncio.create_subprocess_exec(
        ELEMTA, "serve", "delivery", env=env, stderr=log, stdout=log
    )
    try:
        while not (await harness.js.consumer_info(MESSAGES_STREAM, FIRST_CONSUMER)).num_waiting:
            assert process.returncode is None, (tmp_path / "delivery.log").read_text()
            await asyncio.sleep(0.05)
        await harness.js.delete_stream(EVENTS_STREAM)  # no end can be stored
        await harness.js.delete_stream(OUTCOMES_STREAM)
        qid = new_queue_id()
        envelope = Envelope(qid, "alice@sender.test", ["bob@relay.test"], time.time())
        await harness.js.publish(
            f"elemta.msg.{qid}", BODY, headers={ENVELOPE_HEADER: envelope.to_header()}
        )
        journal = Path(cfg.server.state_dir) / "journal"
        await until(lambda: any(b"E " in f.read_bytes() for f in _files(journal)))
        assert sink.recipients() == ["bob@relay.test"]
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
        log.close()

    await ensure_streams(harness.js, cfg)
    taken = metric("elemta_delivery_ends_taken_over_total")
    await harness.start(cfg)
    await harness.first_all_acked(within=20.0)  # offered again and acked
    assert sink.recipients() == ["bob@relay.test"]  # not delivered again
    assert metric("elemta_delivery_ends_taken_over_total") == taken + 1
    report = await harness.outcome_msg(qid)  # its end, stored by the new process
    assert report.data is not None
    assert FirstAttempt.decode(report.data).outcomes[0].results[0].status == "delivered"
    assert len(_files(journal)) == 1  # the new process's own
