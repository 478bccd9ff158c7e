"""What the policy service checks and signs (``[policy]``: DKIM keys, plugins,
milters) and whom it lets log in (``[users]``: the user store it alone reads)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import Secret, _listen, _Section
from .routes import split_hostport


class DkimKey(_Section):
    """One DKIM signing key; the file can be a mounted Kubernetes Secret."""

    domain: str
    selector: str
    algorithm: str = Field("rsa-sha256", pattern="^(rsa-sha256|ed25519-sha256)$")
    key_file: str

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        return v.strip().lower().rstrip(".")


class PluginSettings(_Section):
    """One content scanner run at end of DATA."""

    name: str = Field(description="clamav, spamd, rspamd, or an elemta.policy.plugins entry point")
    order: int = Field(100, description="Lower runs first")
    timeout: float = Field(30.0, gt=0, description="Seconds before the plugin counts as failed")
    fail: str = Field(
        "",
        pattern="^(open|closed|)$",
        description="open: accept on error; closed: 451 4.7.1; empty: the plugin's default",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Plugin options, e.g. address = '127.0.0.1:3310'"
    )
    concurrency: int = Field(
        0, ge=0, description="Calls at once; more wait within the timeout; 0: no limit"
    )
    isolation: str = Field(
        "none",
        pattern="^(none|process)$",
        description="process: run the plugin in worker processes with the limits below",
    )
    workers: int = Field(1, ge=1, description="Worker processes (isolation = process)")
    cpu_seconds: float = Field(
        10.0, gt=0, description="CPU seconds per call in a worker; past it the worker is replaced"
    )
    memory_mb: int = Field(512, ge=64, description="Address-space limit of a worker, MiB")


_MILTER_ACTION = "^(accept|reject|tempfail|quarantine)$"


class MilterSettings(_Section):
    """One milter (Postfix ``smtpd_milters`` entry); unset keys take ``policy.milter_*``."""

    address: str = Field(description="inet:host:port or unix:/path")
    name: str = Field("", description="Name in logs and metrics; empty: the address")
    default_action: str | None = Field(
        None, pattern=_MILTER_ACTION, description="When the milter fails"
    )
    protocol: int | None = Field(None, description="Milter protocol version")
    connect_timeout: float | None = Field(None, gt=0)
    command_timeout: float | None = Field(None, gt=0)
    content_timeout: float | None = Field(None, gt=0)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        kind, sep, rest = v.strip().partition(":")
        if not sep or not rest or kind not in ("inet", "inet6", "unix", "local"):
            raise ValueError(f"expected inet:host:port or unix:/path, got {v!r}")
        if kind.startswith("inet"):
            split_hostport(rest)
        return v.strip()

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: int | None) -> int | None:
        if v is not None and v not in (2, 3, 4, 6):
            raise ValueError("milter protocol must be 2, 3, 4 or 6")
        return v


class PolicySettings(_Section):
    """The policy gRPC service, how clients reach it, and which checks it runs.

    Mail from ``server.trusted_networks`` is our own outbound mail: it is signed
    (``dkim_keys``) rather than checked. Everything else is checked.
    """

    listen: str = Field("127.0.0.1:7071", description="gRPC address the service binds")
    address: str = Field("127.0.0.1:7071", description="gRPC address clients call")
    http_listen: str = Field("127.0.0.1:9102", description="health and metrics address")
    authserv_id: str = Field(
        "", description="authserv-id of Authentication-Results; empty: server.hostname"
    )
    spf: bool = Field(True, description="Check SPF of inbound mail")
    dkim_verify: bool = Field(True, description="Verify DKIM signatures of inbound mail")
    arc_verify: bool = Field(True, description="Verify the ARC chain of inbound mail")
    dmarc: str = Field(
        "enforce",
        pattern="^(enforce|monitor|off)$",
        description="enforce: p=reject -> 550 5.7.1, p=quarantine -> hold; monitor: header only",
    )
    dkim_keys: list[DkimKey] = Field(
        default_factory=list, description="Signing keys for outbound mail, per domain"
    )
    arc_seal_domain: str = Field(
        "", description="d= of the ARC sets added to mail forwarded for relay_domains; empty: off"
    )
    arc_seal_selector: str = Field("", description="s= of the ARC sets")
    arc_seal_key_file: str = Field("", description="RSA key (PEM) of the ARC sets")
    dnsbl_ip_zones: list[str] = Field(
        default_factory=list, description="DNSBL zones for client IPs (e.g. zen.spamhaus.org)"
    )
    dnsbl_domain_zones: list[str] = Field(
        default_factory=list, description="DNSBL zones for sender domains (e.g. dbl.spamhaus.org)"
    )
    greylist: bool = Field(False, description="Greylist unknown (client /24, sender, rcpt)")
    greylist_delay: float = Field(300.0, gt=0, description="Seconds before a retry is accepted")
    greylist_retry_window: float = Field(
        4 * 3600.0, gt=0, description="Seconds a first attempt waits for its retry"
    )
    greylist_pass_ttl: float = Field(
        36 * 86400.0, gt=0, description="Seconds a passed triplet is remembered"
    )
    rate_limit_per_ip: int = Field(
        0, ge=0, description="MAIL FROMs per client IP and window; 0 off"
    )
    rate_limit_per_ip_window: float = Field(60.0, gt=0, description="Window of the IP limit, s")
    rate_limit_per_sender: int = Field(
        0, ge=0, description="MAIL FROMs per sender and window; 0 off"
    )
    rate_limit_per_sender_window: float = Field(3600.0, gt=0, description="Sender window, s")
    kv_timeout: float = Field(2.0, gt=0, description="Seconds per shared-state check; then accept")
    plugin_dirs: list[str] = Field(
        default_factory=list,
        description="Folders put first on the import path for plugins installed there"
        " (pip install --target)",
    )
    plugins: list[PluginSettings] = Field(
        default_factory=list, description="Content scanners at end of DATA, in order"
    )
    tls_cert: str = Field(
        "", description="Certificate (PEM) the gRPC server presents; empty: plain"
    )
    tls_key: str = Field("", description="Key of tls_cert")
    tls_client_ca: str = Field(
        "", description="CA that clients' certificates must chain to (mTLS); empty: none asked"
    )
    tls_ca: str = Field("", description="CA clients check the server with; set: clients use TLS")
    client_cert: str = Field("", description="Certificate (PEM) clients present (mTLS)")
    client_key: str = Field("", description="Key of client_cert")
    tls_server_name: str = Field(
        "", description="Name clients expect in the server's certificate; empty: address's host"
    )

    @model_validator(mode="after")
    def _tls_pairs(self) -> PolicySettings:
        for cert, key in (("tls_cert", "tls_key"), ("client_cert", "client_key")):
            if bool(getattr(self, cert)) != bool(getattr(self, key)):
                raise ValueError(f"{cert} and {key} go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert (client certificates need TLS)")
        return self

    milters: list[MilterSettings] = Field(
        default_factory=list,
        description="Milters asked at end of DATA after the plugins, in order"
        " (inet:host:port or unix:/path, or tables with per-milter settings)",
    )
    milter_default_action: str = Field(
        "tempfail",
        pattern=_MILTER_ACTION,
        description="When a milter is down, slow or broken (Postfix milter_default_action)",
    )
    milter_protocol: int = Field(6, description="Milter protocol version: 2, 3, 4 or 6")
    milter_connect_timeout: float = Field(5.0, gt=0, description="Seconds to reach a milter")
    milter_command_timeout: float = Field(
        5.0, gt=0, description="Seconds per milter step up to DATA"
    )
    milter_content_timeout: float = Field(
        8.0, gt=0, description="Seconds per header, body chunk and end of message"
    )

    reload_check_interval: float = Field(
        5.0,
        ge=0,
        description="Seconds between looks at the config file; a change reloads plugins"
        " and milters (as SIGHUP does); 0: only on SIGHUP",
    )

    _v_listen = field_validator("listen", "address", "http_listen")(_listen)

    @field_validator("milters", mode="before")
    @classmethod
    def _milter_addresses(cls, v: Any) -> Any:
        """A plain address stands for a milter with the policy-wide settings."""
        if isinstance(v, list):
            return [{"address": m} if isinstance(m, str) else m for m in v]
        return v

    @field_validator("milter_protocol")
    @classmethod
    def _protocol(cls, v: int) -> int:
        if v not in (2, 3, 4, 6):
            raise ValueError("milter protocol must be 2, 3, 4 or 6")
        return v


class UsersSettings(_Section):
    """Who may log in (SMTP AUTH, the console): the user store, read by the policy
    service only (``Authenticate`` over gRPC), and how failed logins are held back."""

    store: str = Field(
        "sqlite",
        pattern="^(sqlite|sql|ldap)$",
        description="sqlite: <state_dir>/users.db or url; sql: PostgreSQL or MariaDB/MySQL"
        " at url; ldap: a directory (read-only)",
    )
    url: Secret = Field(
        Secret(""),
        description="SQLAlchemy URL: postgresql+psycopg://user:pw@host/db,"
        " mysql+pymysql://user:pw@host/db, sqlite:////path/users.db; empty: the default SQLite",
    )
    password_scheme: str = Field(
        "argon2",
        pattern="^(argon2|bcrypt|sha512_crypt)$",
        description="Hash of new passwords; argon2 is Argon2id",
    )
    ldap_url: str = Field("", description="ldap://host:389 or ldaps://host:636")
    ldap_start_tls: bool = Field(False, description="StartTLS on an ldap:// connection")
    ldap_ca_file: str = Field("", description="CA the directory is verified with; empty: system")
    ldap_bind_dn: str = Field(
        "", description="DN to search with (search-and-bind); empty: anonymous search"
    )
    ldap_bind_password: Secret = Field(Secret(""), description="Password of ldap_bind_dn")
    ldap_base_dn: str = Field("", description="Where users are searched")
    ldap_user_filter: str = Field(
        "(&(objectClass=inetOrgPerson)(|(uid={login})(mail={login})))",
        description="Search filter; {login} is the escaped login",
    )
    ldap_user_dn: str = Field(
        "",
        description="Bind mode: the DN of a login, e.g. uid={login},ou=people,dc=example,dc=org;"
        " empty: search then bind",
    )
    ldap_address_attributes: list[str] = Field(
        default_factory=lambda: ["mail", "mailAlternateAddress"],
        description="Attributes holding the addresses a user may send as",
    )
    ldap_role_attribute: str = Field(
        "", description="Attribute holding roles; empty: every user has ldap_default_roles"
    )
    ldap_default_roles: list[str] = Field(
        default_factory=lambda: ["user"], description="Roles of a user without role attribute"
    )
    ldap_timeout: float = Field(5.0, gt=0, description="Seconds per directory operation")
    lockout_failures: int = Field(
        5, ge=1, description="Failed logins per client address or login before lockout"
    )
    lockout_window: float = Field(
        900.0, gt=0, description="Seconds failures are counted, and a lockout lasts"
    )
