"""The user stores against real servers: SQLite, PostgreSQL, MariaDB (one SQL
store, migrated by Alembic) and OpenLDAP (bind and search-and-bind)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ldap3 import Connection, Server

from elemta.common.config import UsersSettings
from elemta.policy.credentials.hashing import hash_password, verify_password
from elemta.policy.credentials.ldapstore import LdapStore
from elemta.policy.credentials.sqlstore import SqlStore
from elemta.policy.credentials.store import NoSuchUser, UserExists

from support.userstores import MariaDbServer, PostgresServer, SlapdServer

# Made elsewhere, as imported from a Dovecot setup: `openssl passwd -6` and bcrypt's $2y$.
SHA512_CRYPT = (
    "{SHA512-CRYPT}$6$Xq2uW8nR0tZc$RLHyyZkPXa2..lz4mvBSZ3BG7/VGxfxp0c2tFbEgWuGi4gbHjIwQhX"
    "l.fhaUc6HFxVeVhkEJMZjo7KgeVXmgq0"
)
SHA512_PASSWORD = "s3cret-SHA512"
BLF_CRYPT = "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuuDO4TV6KkRIcy6mrzqqqfGUuo4h0bUb2"
BLF_PASSWORD = "s3cret-BLF"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDbServer]:
    server = MariaDbServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slapd() -> Iterator[SlapdServer]:
    server = SlapdServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def sql_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[SqlStore]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'users.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres").url
    else:
        url = request.getfixturevalue("mariadb").url
    store = SqlStore(url)
    store.migrate()
    for u in store.list():  # module-scoped servers: start each test empty
        store.remove(u.login)
    yield store
    store.engine.dispose()


def test_imported_dovecot_hashes_verify() -> None:
    assert verify_password(SHA512_PASSWORD, SHA512_CRYPT)
    assert verify_password(BLF_PASSWORD, BLF_CRYPT)
    assert not verify_password("wrong", SHA512_CRYPT)
    assert not verify_password(BLF_PASSWORD, "!")
    argon = hash_password("pw")
    assert argon.startswith("$argon2id$")
    assert verify_password("pw", "{ARGON2ID}" + argon)


async def test_sql_store_adds_checks_and_removes_users(sql_store: SqlStore) -> None:
    sql_store.migrate()  # a second migration changes nothing
    made = sql_store.add("Alice@Example.org", "correct horse", user_roles=("user", "admin"))
    assert made.login == "alice@example.org"
    assert made.roles == ("admin", "user")
    assert made.addresses == ("alice@example.org",)
    assert made.password_hash.startswith("$argon2id$")
    user = await sql_store.authenticate("alice@example.org", "correct horse")
    assert user is not None and user.addresses == ("alice@example.org",)
    assert await sql_store.authenticate("alice@example.org", "wrong") is None
    assert await sql_store.authenticate("nobody@example.org", "correct horse") is None
    with pytest.raises(UserExists):
        sql_store.add("alice@example.org", "again")
    sql_store.add_address("alice@example.org", "@Example.NET")
    with pytest.raises(UserExists):
        sql_store.add_address("alice@example.org", "@example.net")
    got = await sql_store.get("ALICE@example.org")
    assert got is not None and got.addresses == ("@example.net", "alice@example.org")
    sql_store.remove_address("alice@example.org", "@example.net")
    sql_store.passwd("alice@example.org", "new one")
    assert await sql_store.authenticate("alice@example.org", "new one") is not None
    sql_store.remove("alice@example.org")
    assert await sql_store.get("alice@example.org") is None
    with pytest.raises(NoSuchUser):
        sql_store.remove("alice@example.org")


async def test_sql_store_verifies_imported_hashes(sql_store: SqlStore) -> None:
    sql_store.add("bob", password_hash=SHA512_CRYPT, sender_addresses=["bob@example.org"])
    sql_store.add("carol", password_hash=BLF_CRYPT)
    assert await sql_store.authenticate("bob", SHA512_PASSWORD) is not None
    assert await sql_store.authenticate("carol", BLF_PASSWORD) is not None
    assert await sql_store.authenticate("bob", BLF_PASSWORD) is None
    assert [u.login for u in sql_store.list()] == ["bob", "carol"]


def _people(slapd: SlapdServer) -> None:
    conn = Connection(Server(slapd.url), slapd.admin_dn, slapd.admin_password, auto_bind=True)
    conn.add(slapd.base, ["dcObject", "organization"], {"o": "Elemta", "dc": "elemta"})
    conn.add(f"ou=people,{slapd.base}", ["organizationalUnit"], {"ou": "people"})
    conn.add(
        f"cn=search,{slapd.base}",
        ["simpleSecurityObject", "organizationalRole"],
        {"userPassword": "search-pw"},
    )
    # slapd checks {CRYPT} with crypt(3): the imported SHA512-CRYPT hash as it is
    conn.add(
        f"uid=dave,ou=people,{slapd.base}",
        ["inetOrgPerson"],
        {
            "cn": "Dave",
            "sn": "D",
            "uid": "dave",
            "mail": ["dave@example.org", "d@example.org"],
            "employeeType": ["user", "admin"],
            "userPassword": SHA512_CRYPT.replace("{SHA512-CRYPT}", "{CRYPT}"),
        },
    )
    assert conn.result["result"] == 0, conn.result
    conn.unbind()


@pytest.fixture(scope="module")
def directory(slapd: SlapdServer) -> SlapdServer:
    _people(slapd)
    return slapd


async def test_ldap_search_and_bind(directory: SlapdServer) -> None:
    store = LdapStore(
        UsersSettings(
            store="ldap",
            ldap_url=directory.url,
            ldap_bind_dn=f"cn=search,{directory.base}",
            ldap_bind_password="search-pw",  # type: ignore[arg-type]
            ldap_base_dn=f"ou=people,{directory.base}",
            ldap_role_attribute="employeeType",
        )
    )
    user = await store.authenticate("dave@example.org", SHA512_PASSWORD)
    assert user is not None
    assert user.addresses == ("dave@example.org", "d@example.org")
    assert set(user.roles) == {"user", "admin"}
    assert await store.authenticate("dave", SHA512_PASSWORD) is not None
    assert await store.authenticate("dave", "wrong") is None
    assert await store.authenticate("dave", "") is None  # no anonymous bind
    assert await store.authenticate("*", SHA512_PASSWORD) is None  # filter escaped
    assert await store.authenticate("nobody", SHA512_PASSWORD) is None
    found = await store.get("dave")
    assert found is not None and found.login == "dave"


async def test_ldap_bind_mode(directory: SlapdServer) -> None:
    store = LdapStore(
        UsersSettings(
            store="ldap",
            ldap_url=directory.url,
            ldap_user_dn=f"uid={{login}},ou=people,{directory.base}",
        )
    )
    user = await store.authenticate("dave", SHA512_PASSWORD)
    assert user is not None and user.roles == ("user",)
    assert "dave@example.org" in user.addresses
    assert await store.authenticate("dave", "wrong") is None
