"""``elemta user``: manage the users of an SQL user store, in the manner of
Postfix's and Dovecot's admin tools.

    elemta user add alice@example.org --password-stdin
    elemta user address add alice@example.org @example.org
    elemta user list

The commands open the store ``[users]`` names, as the policy service does (the
schema is migrated first); an LDAP store is managed in the directory itself.
Passwords are read from standard input or asked twice on a terminal, never
taken as arguments (they would show in the process list and shell history).
"""

from __future__ import annotations

import sys

import click

from elemta.cli.service import config_option, load_or_exit

from .credentials.sqlstore import SqlStore
from .credentials.store import StoreError, open_store

__all__ = ["user"]


def _store(config_path: str | None) -> SqlStore:
    cfg = load_or_exit("elemta user", config_path)
    try:
        store = open_store(cfg)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if not isinstance(store, SqlStore):
        raise click.ClickException("users.store is ldap: manage users in the directory")
    try:
        store.migrate()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    return store


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.ClickException("the password is empty")
    return str(password)


password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)


@click.group()
def user() -> None:
    """Users who may log in (SMTP AUTH, the console), their roles and the sender
    addresses they own (SQL stores: SQLite, PostgreSQL, MariaDB/MySQL)."""


@user.command("add")
@config_option
@click.argument("login")
@password_stdin
@click.option(
    "--role", "roles", multiple=True, default=("user",), show_default=True, help="Repeatable."
)
@click.option(
    "--password-hash",
    default=None,
    help="An imported hash ({BLF-CRYPT}, {SHA512-CRYPT}, {ARGON2ID} ...) instead of a password.",
)
def add(
    config_path: str | None,
    login: str,
    password_stdin: bool,
    roles: tuple[str, ...],
    password_hash: str | None,
) -> None:
    """Create LOGIN; when it is an address it is also the user's first address."""
    store = _store(config_path)
    password = None if password_hash else _password(password_stdin)
    try:
        made = store.add(login, password, password_hash=password_hash, user_roles=roles)
    except StoreError as exc:
        raise click.ClickException(f"{login}: user exists ({exc})") from None
    click.echo(f"added {made.login} (roles: {', '.join(made.roles)})")


@user.command("passwd")
@config_option
@click.argument("login")
@password_stdin
def passwd(config_path: str | None, login: str, password_stdin: bool) -> None:
    """Set the password of LOGIN."""
    store = _store(config_path)
    try:
        store.passwd(login, _password(password_stdin))
    except StoreError:
        raise click.ClickException(f"{login}: no such user") from None
    click.echo(f"password of {login} changed")


@user.command("remove")
@config_option
@click.argument("login")
def remove(config_path: str | None, login: str) -> None:
    """Delete LOGIN with its roles and addresses."""
    try:
        _store(config_path).remove(login)
    except StoreError:
        raise click.ClickException(f"{login}: no such user") from None
    click.echo(f"removed {login}")


@user.command("list")
@config_option
def list_users(config_path: str | None) -> None:
    """Every user: login, roles, addresses (tab-separated)."""
    for u in _store(config_path).list():
        state = "\tdisabled" if u.disabled else ""
        click.echo(f"{u.login}\t{','.join(u.roles)}\t{','.join(u.addresses)}{state}")


@user.group("address")
def address() -> None:
    """Sender addresses a user owns: an address, or @domain for a whole domain."""


@address.command("add")
@config_option
@click.argument("login")
@click.argument("sender")
def address_add(config_path: str | None, login: str, sender: str) -> None:
    """Let LOGIN send as SENDER."""
    try:
        _store(config_path).add_address(login, sender)
    except StoreError as exc:
        raise click.ClickException(f"{login}: {exc}") from None
    click.echo(f"{login} may send as {sender}")


@address.command("remove")
@config_option
@click.argument("login")
@click.argument("sender")
def address_remove(config_path: str | None, login: str, sender: str) -> None:
    """No longer let LOGIN send as SENDER."""
    try:
        _store(config_path).remove_address(login, sender)
    except StoreError as exc:
        raise click.ClickException(f"{login}: {exc}") from None
    click.echo(f"{login} may no longer send as {sender}")
