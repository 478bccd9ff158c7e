"""The configuration: defaults that run locally, overrides, and loud failures."""

from __future__ import annotations

import subprocess

import pytest

from elemta.common.config import ConfigError, load_config, parse_route

from support.stack import ELEMTA, ROOT


def test_defaults_run_everything_on_localhost():
    cfg = load_config(env={})
    assert cfg.ingress.listen == "127.0.0.1:2525"
    assert cfg.api.listen == "127.0.0.1:8025"
    assert cfg.server.local_domains == ["localhost"]
    assert cfg.queue.lifetime == 5 * 86400
    assert cfg.queue.retry_schedule[0] == 60
    assert str(cfg.maildir_root) == "var/mail"


def test_a_file_is_read_and_environment_variables_override_it(tmp_path):
    path = tmp_path / "elemta.toml"
    path.write_text(
        '[server]\nhostname = "mx.example.org"\nlocal_domains = ["example.org"]\n'
        '[transport.routes]\n"example.net" = "smtp:[10.0.0.5]:2525"\n'
    )
    cfg = load_config(
        path,
        env={
            "ELEMTA_SERVER_HOSTNAME": "mx2.example.org",
            "ELEMTA_QUEUE_RETRY_SCHEDULE": "10,20",
            "ELEMTA_TRANSPORT_ROUTES": "example.com=lmtp:store:24",
        },
    )
    assert cfg.server.hostname == "mx2.example.org"
    assert cfg.server.local_domains == ["example.org"]
    assert cfg.queue.retry_schedule == [10.0, 20.0]
    assert cfg.transport.routes == {"example.com": "lmtp:store:24"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ELEMTA_INGRESS_MAX_RECIPIENTS": "lots"}, "ingress.max_recipients"),
        ({"ELEMTA_SERVER_TRUSTED_NETWORKS": "10.0.0.0/33"}, "server.trusted_networks"),
        ({"ELEMTA_INGRESS_LISTEN": "nowhere"}, "ingress.listen"),
        ({"ELEMTA_TRANSPORT_ROUTES": "a.org=carrier-pigeon:x"}, "transport.routes"),
        ({"ELEMTA_QUEUE_RETRY_SCHEDULE": "-5"}, "queue.retry_schedule"),
        ({"ELEMTA_INGRESS_COLOUR": "blue"}, "ELEMTA_INGRESS_COLOUR"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(env, named):
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert named in str(err.value)


def test_an_unknown_key_in_the_file_is_refused(tmp_path):
    path = tmp_path / "elemta.toml"
    path.write_text("[ingress]\nmax_recipient = 5\n")
    with pytest.raises(ConfigError, match="ingress.max_recipient"):
        load_config(path, env={})


def test_a_broken_file_stops_a_service_with_a_message_naming_the_key(tmp_path):
    path = tmp_path / "elemta.toml"
    path.write_text("[queue]\nlifetime = -1\n")
    proc = subprocess.run(
        [ELEMTA, "serve", "policy", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "queue.lifetime" in proc.stderr


@pytest.mark.parametrize(
    ("text", "kind", "host", "port", "mx"),
    [
        ("smtp:[relay.example]:2525", "smtp", "relay.example", 2525, False),
        ("smtp:relay.example", "smtp", "relay.example", 25, True),
        ("lmtp:store:24", "lmtp", "store", 24, False),
        ("lmtp:[10.1.2.3]", "lmtp", "10.1.2.3", 24, False),
        ("local", "local", "", 0, True),
        ("mx", "mx", "", 0, True),
    ],
)
def test_transport_routes_read_like_postfix_transport_maps(text, kind, host, port, mx):
    route = parse_route(text)
    assert (route.kind, route.host, route.port, route.mx_lookup) == (kind, host, port, mx)


def test_milters_are_addresses_or_tables_with_their_own_settings(tmp_path):
    path = tmp_path / "elemta.toml"
    path.write_text(
        '[policy]\nmilters = ["inet:127.0.0.1:8891", '
        '{ address = "unix:/run/clamav/milter.sock", default_action = "accept" }]\n'
    )
    cfg = load_config(path, env={})
    assert [m.address for m in cfg.policy.milters] == [
        "inet:127.0.0.1:8891",
        "unix:/run/clamav/milter.sock",
    ]
    assert cfg.policy.milters[0].default_action is None  # policy.milter_default_action
    assert cfg.policy.milters[1].default_action == "accept"
    env = load_config(env={"ELEMTA_POLICY_MILTERS": "inet:a:1,unix:/b"})
    assert [m.address for m in env.policy.milters] == ["inet:a:1", "unix:/b"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ELEMTA_POLICY_MILTERS": "tcp:host:25"}, "policy.milters.0.address"),
        ({"ELEMTA_POLICY_MILTER_DEFAULT_ACTION": "shrug"}, "policy.milter_default_action"),
        ({"ELEMTA_POLICY_MILTER_PROTOCOL": "5"}, "policy.milter_protocol"),
    ],
)
def test_a_bad_milter_setting_is_refused_naming_the_key(env, named):
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert named in str(err.value)
