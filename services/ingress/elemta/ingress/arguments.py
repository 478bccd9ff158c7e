"""The arguments of MAIL FROM and RCPT TO, read into what a transaction keeps, or refused.

Each function returns either what was asked for or the reply refusing it, so that
the SMTP dialogue (``protocol``) only says it. ESMTP parameters are looked up in
:data:`MAIL_PARAMETERS` and :data:`RCPT_PARAMETERS`: an extension adds its
parameter there (a checker that returns a refusal or None) and advertises it in
EHLO. An unknown parameter is ``555 5.5.4`` (RFC 5321 section 4.1.1.11); a
malformed one ``501 5.5.4``; a malformed address ``501 5.1.7`` (sender) or
``501 5.1.3`` (recipient): syntax is permanent, never a reason to retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from elemta.common.priority import read_mt_priority

from . import dsnparams
from .address import AddressError, ParameterError, parse_parameters, parse_path
from .replies import TOO_BIG

__all__ = [
    "MAIL_PARAMETERS",
    "RCPT_PARAMETERS",
    "Mail",
    "Rcpt",
    "read_mail",
    "read_rcpt",
]

MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address>"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
BAD_SENDER = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
BAD_PARAMETERS = "501 5.5.4 Syntax error in parameters"
MAIL_UNKNOWN = "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
RCPT_UNKNOWN = "555 5.5.4 RCPT TO parameters not recognized or not implemented"
NEED_SMTPUTF8 = "553 5.6.7 Must declare SMTPUTF8 to send UTF8 mail"


@dataclass
class Mail:
    """A sender and its parameters. ``sender`` is "" for the null reverse path."""

    sender: str
    options: list[str] = field(default_factory=list)
    size: int = 0
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str = ""  # DSN: FULL or HDRS (RFC 3461), "" when not asked
    envid: str = ""  # DSN: the sender's envelope id, xtext as received
    mt_priority: int | None = None  # RFC 6710 MT-PRIORITY, -9..9, None when not given


@dataclass
class Rcpt:
    recipient: str
    options: list[str] = field(default_factory=list)
    notify: str = ""  # DSN: "NEVER" or e.g. "SUCCESS,FAILURE"; "" when not asked
    orcpt: str = ""  # DSN: "<addr-type>;<xtext>" as received


MailParameter = Callable[[Mail, str | None, int], str | None]
RcptParameter = Callable[[Rcpt, str | None], str | None]


def _size(mail: Mail, value: str | None, max_size: int) -> str | None:
    """SIZE=<octets> (RFC 1870): refused at once when over the limit."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
        return "501 5.5.4 Bad SIZE parameter"
    mail.size = int(value)
    if max_size and mail.size > max_size:
        return TOO_BIG
    mail.options.append(f"SIZE={mail.size}")
    return None


def _body(mail: Mail, value: str | None, max_size: int) -> str | None:
    """BODY=7BIT or BODY=8BITMIME (RFC 6152)."""
    body = (value or "").upper()
    if body not in ("7BIT", "8BITMIME"):
        return "501 5.5.4 Bad BODY parameter"
    mail.body = body
    mail.options.append(f"BODY={body}")
    return None


def _smtputf8(mail: Mail, value: str | None, max_size: int) -> str | None:
    """SMTPUTF8 (RFC 6531): no value."""
    if value is not None:
        return "501 5.5.4 SMTPUTF8 takes no value"
    mail.smtputf8 = True
    mail.options.append("SMTPUTF8")
    return None


def _ret(mail: Mail, value: str | None, max_size: int) -> str | None:
    """RET=FULL|HDRS (RFC 3461): what a failure notice returns."""
    ret = dsnparams.read_ret(value)
    if dsnparams.is_refusal(ret):
        return ret
    mail.ret = ret
    return None


def _envid(mail: Mail, value: str | None, max_size: int) -> str | None:
    """ENVID=<xtext> (RFC 3461): shown in every notice about this message."""
    envid = dsnparams.read_envid(value)
    if dsnparams.is_refusal(envid):
        return envid
    mail.envid = envid
    return None


def _mt_priority(mail: Mail, value: str | None, max_size: int) -> str | None:
    """MT-PRIORITY=<-9..9> (RFC 6710): whether it is honoured is the session's call."""
    priority = read_mt_priority(value)
    if isinstance(priority, str):
        return priority
    mail.mt_priority = priority
    return None


def _notify(rcpt: Rcpt, value: str | None) -> str | None:
    """NOTIFY=NEVER|SUCCESS,FAILURE,DELAY (RFC 3461): which notices the sender wants."""
    notify = dsnparams.read_notify(value)
    if dsnparams.is_refusal(notify):
        return notify
    rcpt.notify = notify
    return None


def _orcpt(rcpt: Rcpt, value: str | None) -> str | None:
    """ORCPT=<addr-type>;<xtext> (RFC 3461): the recipient as the sender first gave it."""
    orcpt = dsnparams.read_orcpt(value)
    if dsnparams.is_refusal(orcpt):
        return orcpt
    rcpt.orcpt = orcpt
    return None


MAIL_PARAMETERS: dict[str, MailParameter] = {
    "SIZE": _size,
    "BODY": _body,
    "SMTPUTF8": _smtputf8,
    "RET": _ret,
    "ENVID": _envid,
    "MT-PRIORITY": _mt_priority,  # only where priorities are on (read_mail's mt_priority)
}
RCPT_PARAMETERS: dict[str, RcptParameter] = {"NOTIFY": _notify, "ORCPT": _orcpt}


def _keyword(arg: str | None, keyword: str) -> str | None:
    """What follows ``FROM:`` or ``TO:`` (any case), or None when it is not there."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    return arg[len(keyword) :]


def read_mail(
    arg: str | None, extended: bool, max_size: int, mt_priority: bool = False
) -> Mail | str:
    """The sender of ``MAIL <arg>`` and its parameters, or the refusal. ``mt_priority``:
    the MT-PRIORITY extension is offered (``priorities.enabled``)."""
    rest = _keyword(arg, "FROM:")
    if rest is None:
        return MAIL_SYNTAX
    try:
        sender, text = parse_path(rest, null=True)
        params = parse_parameters(text)
    except AddressError:
        return BAD_SENDER
    except ParameterError:
        return BAD_PARAMETERS
    mail = Mail(sender)
    if params and not extended:
        return MAIL_UNKNOWN
    for key, value in params.items():
        check = MAIL_PARAMETERS.get(key)
        if check is None or (key == "MT-PRIORITY" and not mt_priority):
            return MAIL_UNKNOWN
        refusal = check(mail, value, max_size)
        if refusal:
            return refusal
    if not sender.isascii() and not mail.smtputf8:
        return NEED_SMTPUTF8
    return mail


def read_rcpt(arg: str | None, extended: bool, smtputf8: bool) -> Rcpt | str:
    """The recipient of ``RCPT <arg>`` (a bare ``postmaster`` kept as is), or the refusal."""
    rest = _keyword(arg, "TO:")
    if rest is None:
        return RCPT_SYNTAX
    try:
        recipient, text = parse_path(rest, bare=("postmaster",))
        params = parse_parameters(text)
    except AddressError:
        return BAD_RECIPIENT
    except ParameterError:
        return BAD_PARAMETERS
    rcpt = Rcpt(recipient)
    if params and not extended:
        return RCPT_UNKNOWN
    for key, value in params.items():
        check = RCPT_PARAMETERS.get(key)
        if check is None:
            return RCPT_UNKNOWN
        refusal = check(rcpt, value)
        if refusal:
            return refusal
    if not recipient.isascii() and not smtputf8:
        return NEED_SMTPUTF8
    return rcpt
