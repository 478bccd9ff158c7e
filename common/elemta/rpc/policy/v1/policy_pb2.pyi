from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_ACCEPT: _ClassVar[Action]
    ACTION_REJECT: _ClassVar[Action]
    ACTION_TEMPFAIL: _ClassVar[Action]
    ACTION_HOLD: _ClassVar[Action]
    ACTION_DISCARD: _ClassVar[Action]

class AuthResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTH_RESULT_UNSPECIFIED: _ClassVar[AuthResult]
    AUTH_RESULT_OK: _ClassVar[AuthResult]
    AUTH_RESULT_INVALID: _ClassVar[AuthResult]
    AUTH_RESULT_LOCKED: _ClassVar[AuthResult]
    AUTH_RESULT_UNAVAILABLE: _ClassVar[AuthResult]
ACTION_UNSPECIFIED: Action
ACTION_ACCEPT: Action
ACTION_REJECT: Action
ACTION_TEMPFAIL: Action
ACTION_HOLD: Action
ACTION_DISCARD: Action
AUTH_RESULT_UNSPECIFIED: AuthResult
AUTH_RESULT_OK: AuthResult
AUTH_RESULT_INVALID: AuthResult
AUTH_RESULT_LOCKED: AuthResult
AUTH_RESULT_UNAVAILABLE: AuthResult

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("action", "smtp_code", "enhanced_code", "reason", "add_headers", "remove_headers")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SMTP_CODE_FIELD_NUMBER: _ClassVar[int]
    ENHANCED_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ADD_HEADERS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_HEADERS_FIELD_NUMBER: _ClassVar[int]
    action: Action
    smtp_code: int
    enhanced_code: str
    reason: str
    add_headers: _containers.RepeatedCompositeFieldContainer[Header]
    remove_headers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, action: _Optional[_Union[Action, str]] = ..., smtp_code: _Optional[int] = ..., enhanced_code: _Optional[str] = ..., reason: _Optional[str] = ..., add_headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., remove_headers: _Optional[_Iterable[str]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("client_ip", "client_port", "client_hostname", "helo", "tls", "authenticated_user", "queue_id")
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PORT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    HELO_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_USER_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    client_ip: str
    client_port: int
    client_hostname: str
    helo: str
    tls: bool
    authenticated_user: str
    queue_id: str
    def __init__(self, client_ip: _Optional[str] = ..., client_port: _Optional[int] = ..., client_hostname: _Optional[str] = ..., helo: _Optional[str] = ..., tls: _Optional[bool] = ..., authenticated_user: _Optional[str] = ..., queue_id: _Optional[str] = ...) -> None: ...

class CheckConnectRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class CheckConnectResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class CheckMailRequest(_message.Message):
    __slots__ = ("session", "sender", "parameters")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    session: Session
    sender: str
    parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., sender: _Optional[str] = ..., parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckMailResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class CheckRcptRequest(_message.Message):
    __slots__ = ("session", "sender", "recipient", "parameters")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    session: Session
    sender: str
    recipient: str
    parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckRcptResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class CheckDataRequest(_message.Message):
    __slots__ = ("session", "sender", "recipients", "message")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    session: Session
    sender: str
    recipients: _containers.RepeatedScalarFieldContainer[str]
    message: bytes
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., sender: _Optional[str] = ..., recipients: _Optional[_Iterable[str]] = ..., message: _Optional[bytes] = ...) -> None: ...

class MessageChanges(_message.Message):
    __slots__ = ("sender", "add_recipients", "delete_recipients", "header", "body")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    ADD_RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    DELETE_RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    sender: str
    add_recipients: _containers.RepeatedScalarFieldContainer[str]
    delete_recipients: _containers.RepeatedScalarFieldContainer[str]
    header: bytes
    body: bytes
    def __init__(self, sender: _Optional[str] = ..., add_recipients: _Optional[_Iterable[str]] = ..., delete_recipients: _Optional[_Iterable[str]] = ..., header: _Optional[bytes] = ..., body: _Optional[bytes] = ...) -> None: ...

class CheckDataResponse(_message.Message):
    __slots__ = ("verdict", "changes")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    changes: MessageChanges
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ..., changes: _Optional[_Union[MessageChanges, _Mapping]] = ...) -> None: ...

class AuthenticateRequest(_message.Message):
    __slots__ = ("login", "password", "client_ip", "service")
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    login: str
    password: str
    client_ip: str
    service: str
    def __init__(self, login: _Optional[str] = ..., password: _Optional[str] = ..., client_ip: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("login", "roles", "addresses")
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    login: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, login: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ("result", "user", "failures", "retry_after")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    result: AuthResult
    user: User
    failures: int
    retry_after: int
    def __init__(self, result: _Optional[_Union[AuthResult, str]] = ..., user: _Optional[_Union[User, _Mapping]] = ..., failures: _Optional[int] = ..., retry_after: _Optional[int] = ...) -> None: ...
