"""``elemta run`` (``make run``) as a user runs it: it starts nats-server and the
services, prints where they are, and stops all of them on Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import sys
import tomllib
from pathlib import Path

import nats
import pytest

from elemta.common.config import Config, load_config
from elemta.common.jetstream import ensure_streams
from elemta.launcher.addresses import (
    concrete_addresses,
    configured_ports,
    next_free_port,
    split_hostport,
)

from support.dnsserver import DnsServer, free_port
from support.elemta_run import (
    Run,
    assert_all_stopped,
    http_status,
    listening,
    nats_port,
    processes_mentioning,
    write_config,
)
from support.natsserver import NatsServer
from support.stack import ROOT


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_the_api_alone_starts_with_its_own_nats_server_and_ctrl_c_stops_both(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, cfg = write_config(tmp_path)
    api = cfg["api"]["listen"]
    run = Run(
        tmp_path,
        *("--config", str(config), "--only", "api", "--nats-port", str(free_port())),
        *("--nats-memory-limit", "256MiB"),
    )
    runs.append(run)
    out = run.wait_for("Press Ctrl-C to stop.")

    assert "Elemta is running" in out
    assert f"API/UI   http://{api}/" in out
    assert "(embedded" in out
    assert f"Maildir  {tmp_path / 'var' / 'mail'}" in out
    assert f"api {api}" in out
    assert http_status(f"http://{api}/readyz") == 200
    assert http_status(f"http://{api}/api/v1/queue") == 401  # ready (streams made), keys asked
    nats = nats_port(out)
    assert listening(nats)
    conf = (tmp_path / "var" / "nats" / "nats.conf").read_text()
    assert "sync_interval: always" in conf
    assert "max_payload: 8MB" in conf
    assert f"listen: 127.0.0.1:{nats}" in conf
    assert (tmp_path / "var" / "nats" / "jetstream").is_dir()
    assert "api listening" in (tmp_path / "var" / "log" / "api.log").read_text()
    pid = (tmp_path / "var" / "run" / "nats-server.pid").read_text().strip()
    assert b"GOMEMLIMIT=256MiB" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")

    assert run.ctrl_c() == 0, run.output
    assert_all_stopped(tmp_path, nats, int(api.rsplit(":", 1)[1]))
    nats_log = (tmp_path / "var" / "log" / "nats-server.log").read_text()
    assert "Server Exiting" in nats_log
    api_log = (tmp_path / "var" / "log" / "api.log").read_text()
    assert "api stopped" in api_log


def test_when_the_default_nats_port_is_taken_the_embedded_server_picks_another(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, cfg = write_config(tmp_path)
    with socket.socket() as occupier:  # plays a NATS server already on 4222
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        taken = occupier.getsockname()[1]
        run = Run(tmp_path, "--config", str(config), "--only", "api", "--nats-port", str(taken))
        runs.append(run)
        out = run.wait_for("Press Ctrl-C to stop.")
        port = nats_port(out)
        assert port != taken
        assert f"port {taken} is in use" in out
        assert http_status(f"http://{cfg['api']['listen']}/readyz") == 200
        assert run.ctrl_c() == 0, run.output
    assert_all_stopped(tmp_path, port)


def test_with_a_nats_url_the_launcher_uses_that_server_and_starts_none(
    tmp_path: Path, runs: list[Run], nats_server: NatsServer
) -> None:
    work = tmp_path / "run"  # apart from the fixture's server, also under tmp_path
    work.mkdir()
    config, cfg = write_config(work)

    async def streams() -> None:  # the queue service elsewhere would have made them
        nc = await nats.connect(nats_server.url)
        await ensure_streams(nc.jetstream(), Config())
        await nc.close()

    asyncio.run(streams())
    run = Run(work, "--config", str(config), "--only", "api", "--nats-url", nats_server.url)
    runs.append(run)
    out = run.wait_for("Press Ctrl-C to stop.")
    assert f"NATS     {nats_server.url} (external)" in out
    assert not (work / "var" / "nats").exists()
    assert http_status(f"http://{cfg['api']['listen']}/readyz") == 200

    assert run.ctrl_c() == 0, run.output
    assert_all_stopped(work)
    assert nats_server.proc is not None and nats_server.proc.poll() is None


def test_a_service_that_exits_makes_the_launcher_show_its_log_and_stop_everything(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, cfg = write_config(tmp_path)
    api_port = int(cfg["api"]["listen"].rsplit(":", 1)[1])
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", api_port))
        occupier.listen()
        run = Run(
            tmp_path, "--config", str(config), "--only", "api", "--nats-port", str(free_port())
        )
        runs.append(run)
        assert run.wait() == 1
    assert "api exited with status 1" in run.output
    assert "cannot listen" in run.output  # the log tail
    assert_all_stopped(tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_when_the_launcher_is_killed_its_services_and_nats_server_stop_too(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, _ = write_config(tmp_path)
    run = Run(tmp_path, "--config", str(config), "--only", "api", "--nats-port", str(free_port()))
    runs.append(run)
    nats = nats_port(run.wait_for("Press Ctrl-C to stop."))
    assert len(processes_mentioning(str(tmp_path))) == 3  # elemta run, api, nats-server

    run.proc.kill()
    run.wait()
    assert_all_stopped(tmp_path, nats)


def test_a_bad_configuration_exits_78_naming_the_key(tmp_path: Path, runs: list[Run]) -> None:
    config = tmp_path / "elemta.toml"
    config.write_text('[api]\nlisten = "nowhere"\n')
    run = Run(tmp_path, "--config", str(config))
    runs.append(run)
    assert run.wait() == 78
    assert "api.listen" in run.output
    assert not (tmp_path / "var").exists()


def test_an_unknown_service_in_only_is_a_usage_error(tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path, "--only", "api,mailer")
    runs.append(run)
    assert run.wait() == 2
    assert "unknown service mailer" in run.output


def test_a_nats_memory_limit_that_is_no_size_is_a_usage_error(
    tmp_path: Path, runs: list[Run]
) -> None:
    run = Run(tmp_path, "--nats-memory-limit", "lots")
    runs.append(run)
    assert run.wait() == 2
    assert "'lots' is no size" in run.output
    assert not (tmp_path / "var").exists()


def test_extra_instances_skip_ports_that_the_configuration_or_others_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert next_free_port(port, set()) != port
        chosen = next_free_port(port - 1, {port - 1})
        assert chosen not in (port - 1, port)
    cfg = load_config(env={"ELEMTA_DELIVERY_HTTP_LISTEN": "127.0.0.1:0"})
    taken = configured_ports(cfg)
    assert {9101, 9102, 9103, 8025, 2525, 7071} <= taken
    fixed = concrete_addresses(cfg, taken)
    host, port = split_hostport(fixed["ELEMTA_DELIVERY_HTTP_LISTEN"])
    assert host == "127.0.0.1" and port != 0


def test_the_example_configuration_lists_every_key_with_its_default() -> None:
    path = ROOT / "elemta.example.toml"
    assert load_config(path, env={}) == Config()
    data = tomllib.loads(path.read_text())
    for section, field in Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert set(data[section]) == set(model.model_fields), section  # type: ignore[attr-defined]
    text = path.read_text()
    assert '# "example.org" = "smtp:[127.0.0.1]:2526"' in text
    assert '# ".corp.example" = "lmtp:mailstore:24"' in text


def test_the_whole_system_starts_answers_smtp_and_stops_on_ctrl_c(
    tmp_path: Path, runs: list[Run], dns_server: DnsServer
) -> None:
    config, cfg = write_config(tmp_path, dns_server.port)
    run = Run(tmp_path, "--config", str(config), "--nats-port", str(free_port()), "--delivery", "2")
    runs.append(run)
    out = run.wait_for("Press Ctrl-C to stop.", timeout=120)

    smtp = cfg["ingress"]["listen"]
    assert f"SMTP     {smtp} (1 ingress process)" in out
    health = dict(re.findall(r"([a-z]+(?:-\d)?) (127\.0\.0\.1:\d+)", out.split("Health", 1)[1]))
    assert set(health) >= {"policy", "queue", "delivery-0", "delivery-1", "ingress", "api"}
    assert health["delivery-0"] != health["delivery-1"]
    for name, address in health.items():
        assert http_status(f"http://{address}/readyz") == 200, name
    host, port = smtp.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=10) as client:
        code, _ = client.ehlo("client.test")
        assert code == 250
    for name in ("policy", "queue", "delivery-0", "delivery-1", "ingress", "api"):
        assert (tmp_path / "var" / "log" / f"{name}.log").exists()

    nats = nats_port(out)
    assert run.ctrl_c(timeout=150) == 0, run.output
    assert_all_stopped(tmp_path, nats, int(port))
