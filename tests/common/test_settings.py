"""Every key of the configuration can come from the environment, from a file named
by ``*_FILE`` or from a secrets directory; the environment beats the file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from elemta.common.config import Config, ConfigError, load_config, redacted
from elemta.common.settings import variable

# Values for keys that a generic value would not pass (their validators), or where
# a generic value would say little. Every other key gets one from its type.
SAMPLES: dict[tuple[str, str], Any] = {
    ("server", "trusted_networks"): ["10.0.0.0/8", "2001:db8::/32"],
    ("policy", "dkim_keys"): [
        {"domain": "example.org", "selector": "s1", "key_file": "/keys/s1.pem"},
        {"domain": "example.net", "selector": "ed", "algorithm": "ed25519-sha256", "key_file": "k"},
    ],
    ("policy", "plugins"): [
        {"name": "clamav", "order": 5, "fail": "open", "options": {"address": "127.0.0.1:3310"}},
        {"name": "spamd", "timeout": 3.5},
    ],
    ("policy", "milters"): [
        "inet:127.0.0.1:8891",
        {"address": "unix:/run/milter.sock", "default_action": "accept", "protocol": 2},
    ],
    ("policy", "milter_protocol"): 4,
    ("delivery", "tls_policy"): {"example.org": "verify", ".corp.example": "encrypt"},
    ("delivery", "relays"): {
        "[smtp.example.net]:465": {
            "security_level": "verify",
            "implicit_tls": True,
            "username_file": "/run/secrets/relay/username",
            "password_file": "/run/secrets/relay/password",
        }
    },
    ("transport", "routes"): {"example.net": "smtp:[192.0.2.5]:2525", ".corp.example": "local"},
    ("shaping", "suspend_on"): ["^421 .*try again later"],
    ("shaping", "destinations"): {
        "gmail.com": {"max_connections": 20, "max_message_rate": 50.0},
        "[192.0.2.7]:2525": {"suspend_on": ["^421 "], "suspend_for": 60.0},
    },
    ("priorities", "senders"): {"ceo@example.org": 5, ".lists.example.org": -5},
    ("priorities", "users"): {"alerts": 9},
    ("priorities", "routes"): {"partner.example": 3},
    ("shaping", "providers"): {
        "google": {"max_connections": 5},
        "bigmail": {"mx_suffixes": [".bigmail.example"], "max_connections": 2},
    },
    ("telemetry", "log_level"): "DEBUG",
    ("ingress", "proxy_networks"): ["10.0.0.0/8", "2001:db8::/48"],
    ("ingress", "listeners"): [
        {"address": "127.0.0.1:1587", "role": "submission"},
        {"address": "[::1]:1465", "role": "submissions", "auth": False},
    ],
}


# Keys that need another one set with them (a certificate and its key).
COMPANIONS: dict[tuple[str, str], dict[str, str]] = {
    ("nats", "tls_cert"): {"ELEMTA_NATS_TLS_KEY": "/tls/client.key"},
    ("ingress", "proxy_protocol"): {"ELEMTA_INGRESS_PROXY_NETWORKS": '["10.0.0.0/8"]'},
    ("nats", "tls_key"): {"ELEMTA_NATS_TLS_CERT": "/tls/client.pem"},
    ("api", "tls_cert"): {"ELEMTA_API_TLS_KEY": "/tls/api.key"},
    ("api", "tls_key"): {"ELEMTA_API_TLS_CERT": "/tls/api.pem"},
    ("policy", "tls_cert"): {"ELEMTA_POLICY_TLS_KEY": "/tls/policy.key"},
    ("policy", "tls_key"): {"ELEMTA_POLICY_TLS_CERT": "/tls/policy.pem"},
    ("policy", "tls_client_ca"): {
        "ELEMTA_POLICY_TLS_CERT": "/tls/policy.pem",
        "ELEMTA_POLICY_TLS_KEY": "/tls/policy.key",
    },
    ("policy", "client_cert"): {"ELEMTA_POLICY_CLIENT_KEY": "/tls/client.key"},
    ("policy", "client_key"): {"ELEMTA_POLICY_CLIENT_CERT": "/tls/client.pem"},
}


def fields() -> list[tuple[str, str, FieldInfo]]:
    out = []
    for section, section_field in Config.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        out += [(section, key, field) for key, field in model.model_fields.items()]
    return out


def _bound(field: FieldInfo, name: str) -> float | None:
    for item in field.metadata:
        value = getattr(item, name, None)
        if value is not None:
            return float(value)
    return None


def sample(section: str, key: str, field: FieldInfo) -> Any:
    """A valid value that is not the default."""
    if (section, key) in SAMPLES:
        return SAMPLES[section, key]
    default = field.get_default(call_default_factory=True)
    annotation = field.annotation
    origin = get_origin(annotation)
    if annotation is bool:
        return not default
    if annotation in (int, float):
        low = _bound(field, "ge") if _bound(field, "ge") is not None else _bound(field, "gt")
        high = _bound(field, "le")
        step = 1 if annotation is int else 0.25
        value = default + step
        if high is not None and value > high:
            value = default - step
        assert low is None or value >= low
        return value
    if annotation is str:
        pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None)
        if pattern:
            choices = re.findall(r"[\w-]+", pattern)
            return next(c for c in choices if c != default)
        if re.fullmatch(r"[\w.\[\]:-]*:\d+", default or ""):
            return "127.0.0.2:4321"  # a listen address
        return "sample.example"
    if origin is list and get_args(annotation) == (str,):
        return ["a.example", "b.example"]
    if origin is list and get_args(annotation) == (float,):
        return [10.0, 20.5]
    if annotation is SecretStr:
        return SecretStr("s3cret")
    raise AssertionError(f"{section}.{key}: add a sample value for {annotation!r} to SAMPLES")


def as_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def expected(section: str, key: str, value: Any) -> Any:
    """What the model makes of the value when it comes from a TOML file."""
    companions = {
        name.removeprefix(f"ELEMTA_{section.upper()}_").lower(): (
            json.loads(v) if v[:1] in "[{" else v
        )
        for name, v in COMPANIONS.get((section, key), {}).items()
    }
    table = {section: {key: value, **companions}}
    return getattr(getattr(Config.model_validate(table), section), key)


@pytest.mark.parametrize(
    ("section", "key", "field"),
    fields(),
    ids=[f"{s}.{k}" for s, k, _ in fields()],
)
def test_every_key_is_set_by_its_environment_variable(
    section: str, key: str, field: FieldInfo
) -> None:
    value = sample(section, key, field)
    name = variable(section, key)
    cfg = load_config(env={name: as_text(value), **COMPANIONS.get((section, key), {})})
    got = getattr(getattr(cfg, section), key)
    assert got == expected(section, key, value)
    assert got != getattr(getattr(Config(), section), key), f"{name} changed nothing"


def test_lists_and_tables_also_read_the_short_forms() -> None:
    cfg = load_config(
        env={
            "ELEMTA_POLICY_DNSBL_IP_ZONES": "zen.example",
            "ELEMTA_SERVER_LOCAL_DOMAINS": " example.org , Example.NET ,",
            "ELEMTA_QUEUE_RETRY_SCHEDULE": "10,20.5",
            "ELEMTA_TRANSPORT_ROUTES": "example.com=lmtp:store:24, .corp.example=local",
            "ELEMTA_SERVER_RELAY_DOMAINS": "",
        }
    )
    assert cfg.policy.dnsbl_ip_zones == ["zen.example"]
    assert cfg.server.local_domains == ["example.org", "example.net"]
    assert cfg.queue.retry_schedule == [10.0, 20.5]
    assert cfg.transport.routes == {"example.com": "lmtp:store:24", ".corp.example": "local"}
    assert cfg.server.relay_domains == []


def test_a_whole_section_can_be_one_json_variable() -> None:
    cfg = load_config(env={"ELEMTA_DNS": '{"nameservers": ["192.0.2.53"], "port": 5353}'})
    assert cfg.dns.nameservers == ["192.0.2.53"]
    assert cfg.dns.port == 5353


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ELEMTA_POLICY_PLUGINS": "clamav"}, "policy.plugins.0"),
        ({"ELEMTA_POLICY_DKIM_KEYS": '[{"domain": '}, "policy.dkim_keys"),
        ({"ELEMTA_TRANSPORT_ROUTES": "example.org"}, "transport.routes"),
        ({"ELEMTA_POLICY_GREYLIST": "perhaps"}, "policy.greylist"),
        ({"ELEMTA_NATS_REPLICAS": "9"}, "nats.replicas"),
        ({"ELEMTA_QUEUE_LIFETIMES": "1"}, "queue has no key 'lifetimes'"),
    ],
)
def test_a_bad_variable_is_refused_naming_the_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert named in str(err.value)


def test_variables_of_other_programs_sharing_the_prefix_are_left_alone() -> None:
    cfg = load_config(env={"ELEMTA_OPERATOR_NAMESPACES": "mail", "ELEMTA_PORT": "tcp://x:25"})
    assert cfg == load_config(env={})


def test_the_environment_wins_over_the_file_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "elemta.toml"
    path.write_text('[policy]\ngreylist = true\ndnsbl_ip_zones = ["file.example"]\n')
    cfg = load_config(path, env={"ELEMTA_POLICY_DNSBL_IP_ZONES": "env.example"})
    assert cfg.policy.greylist is True
    assert cfg.policy.dnsbl_ip_zones == ["env.example"]


def test_a_value_can_come_from_the_file_a_file_variable_names(tmp_path: Path) -> None:
    secret = tmp_path / "nats-url"
    secret.write_text("nats://elemta:s3cret@nats.internal:4222\n")  # as kubectl writes it
    cfg = load_config(env={"ELEMTA_NATS_URL_FILE": str(secret)})
    assert cfg.nats.url == "nats://elemta:s3cret@nats.internal:4222"


def test_a_key_that_ends_in_file_is_itself_not_a_file_variable() -> None:
    cfg = load_config(env={"ELEMTA_POLICY_ARC_SEAL_KEY_FILE": "/keys/arc.pem"})
    assert cfg.policy.arc_seal_key_file == "/keys/arc.pem"


def test_an_unreadable_file_variable_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ELEMTA_NATS_URL_FILE: cannot read"):
        load_config(env={"ELEMTA_NATS_URL_FILE": str(tmp_path / "missing")})


def test_a_secrets_directory_supplies_values_the_environment_can_still_override(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets"
    (secrets / "..data").mkdir(parents=True)  # what a Kubernetes volume also holds
    (secrets / "elemta_nats_url").write_text("nats://u:pw@nats:4222\n")
    (secrets / "ELEMTA_SERVER_HOSTNAME").write_text("mx.example.org")
    (secrets / "README").write_text("not a setting")
    env = {"ELEMTA_SECRETS_DIR": str(secrets), "ELEMTA_SERVER_HOSTNAME": "mx2.example.org"}
    cfg = load_config(env=env)
    assert cfg.nats.url == "nats://u:pw@nats:4222"
    assert cfg.server.hostname == "mx2.example.org"


def test_a_misspelt_file_in_the_secrets_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ELEMTA_NATS_URI").write_text("x")
    with pytest.raises(ConfigError, match="nats has no key 'uri'"):
        load_config(env={"ELEMTA_SECRETS_DIR": str(tmp_path)})


class _WithSecret(BaseModel):
    password: SecretStr
    url: str


def test_redaction_hides_secret_keys_and_passwords_in_urls() -> None:
    data = redacted(_WithSecret(password=SecretStr("pw"), url="postgresql://app:pw@db/elemta"))
    assert data == {"password": "***", "url": "postgresql://app:***@db/elemta"}
    assert redacted(Config())["nats"]["url"] == "nats://127.0.0.1:4222"
