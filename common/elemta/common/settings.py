"""Where the configuration comes from, strongest first:

1. ``ELEMTA_<SECTION>_<KEY>`` environment variables, for every key of the model
   (``ELEMTA_POLICY_DNSBL_IP_ZONES=zen.example``): derived from the model, so a
   new key is settable at once;
2. ``ELEMTA_<SECTION>_<KEY>_FILE``: the variable names a file whose content is
   the value (a Kubernetes Secret or Docker secret mounted as a file);
3. a file named like the variable (``ELEMTA_NATS_URL``, any case) in the
   directory ``ELEMTA_SECRETS_DIR`` (a whole Secret mounted as a volume);
4. the TOML file (``--config`` or ``ELEMTA_CONFIG``);
5. the defaults of the model (:mod:`elemta.common.config`).

Text from the environment is read by the key's type, as pydantic reads it
(``true``/``false``, ``1``/``0``; numbers). Lists are JSON (``["a", "b"]``) or
comma-separated (``a,b``); tables are JSON (``{"a": "b"}``) or ``key=value``
pairs (``example.org=smtp:[relay]:25,example.net=mx``); lists of tables
(``policy.plugins``, ``policy.dkim_keys``) are JSON, except where a plain value
stands for a table (``policy.milters``: addresses, comma-separated). An empty
variable is an empty list or table. A file's content loses one trailing newline.

A variable ``ELEMTA_<SECTION>_<KEY>`` whose section exists but has no such key
is an error, so a typo does not pass silently. A variable whose ``<SECTION>`` is
no section belongs to some other program (the operator's ``ELEMTA_OPERATOR_*``,
Kubernetes' service links) and is left alone, as are ``ELEMTA_CONFIG`` and
``ELEMTA_SECRETS_DIR``. pydantic-settings splits each name at the first ``_``
after the prefix: section names have no ``_``.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .config import Config, ConfigError

__all__ = [
    "CONFIG_VARIABLE",
    "ENV_PREFIX",
    "SECRETS_DIR_VARIABLE",
    "load_config",
    "redacted",
    "variable",
]

ENV_PREFIX = "ELEMTA_"
CONFIG_VARIABLE = "ELEMTA_CONFIG"
SECRETS_DIR_VARIABLE = "ELEMTA_SECRETS_DIR"
FILE_SUFFIX = "_FILE"


def variable(section: str, key: str = "") -> str:
    """The environment variable of ``section.key`` (of a whole section without key)."""
    return f"{ENV_PREFIX}{section}_{key}".upper() if key else f"{ENV_PREFIX}{section}".upper()


def _keys() -> dict[str, tuple[str, str, FieldInfo]]:
    """Every variable name -> (section, key, field); a section alone takes JSON."""
    out: dict[str, tuple[str, str, FieldInfo]] = {}
    for section, section_field in Config.model_fields.items():
        out[variable(section)] = (section, "", section_field)
        model = section_field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for key, field in model.model_fields.items():
                out[variable(section, key)] = (section, key, field)
    return out


def _read(name: str, path: str | os.PathLike[str]) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path} is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def _is_collection(field: FieldInfo) -> bool:
    annotation = field.annotation
    return get_origin(annotation) in (list, dict) or annotation in (list, dict)


def _variables(env: Mapping[str, str]) -> dict[str, str]:
    """The ``ELEMTA_*`` values by variable name, files read and empty collections
    written as JSON; :class:`ConfigError` for a name that is no key."""
    keys = _keys()
    found: dict[str, str] = {}
    secrets_dir = env.get(SECRETS_DIR_VARIABLE, "")
    if secrets_dir:
        try:
            entries = sorted(Path(secrets_dir).iterdir())
        except OSError as exc:
            raise ConfigError(f"{SECRETS_DIR_VARIABLE}: {secrets_dir}: {exc.strerror}") from None
        for entry in entries:
            name = entry.name.upper()
            if not name.startswith(ENV_PREFIX) or not entry.is_file():
                continue  # Kubernetes keeps ..data and timestamped folders beside the keys
            if name not in keys:
                raise ConfigError(f"{entry}: no such setting ({_hint(name)})")
            found[name] = _read(str(entry), entry)
    from_files: dict[str, str] = {}
    direct: dict[str, str] = {}
    for raw_name, value in env.items():
        name = raw_name.upper()
        if not name.startswith(ENV_PREFIX) or name in (CONFIG_VARIABLE, SECRETS_DIR_VARIABLE):
            continue
        if name in keys:
            direct[name] = value
        elif name.endswith(FILE_SUFFIX) and name.removesuffix(FILE_SUFFIX) in keys:
            from_files[name.removesuffix(FILE_SUFFIX)] = _read(raw_name, value)
        elif _section_of(name) in Config.model_fields:
            raise ConfigError(f"{raw_name}: no such setting ({_hint(name)})")
    found.update(from_files)
    found.update(direct)
    for name, value in found.items():
        _, _, field = keys[name]
        if not value.strip() and _is_collection(field):
            found[name] = "{}" if get_origin(field.annotation) is dict else "[]"
    return found


def _section_of(name: str) -> str:
    return name.removeprefix(ENV_PREFIX).lower().partition("_")[0]


def _hint(name: str) -> str:
    section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("_")
    if section in Config.model_fields and key:
        return f"{section} has no key {key!r}"
    return "expected ELEMTA_<SECTION>_<KEY>; elemta config show lists them"


_VARIABLES: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("elemta_variables")


class ElemtaEnvironment(EnvSettingsSource):
    """pydantic-settings' environment source, reading the given variables instead
    of ``os.environ`` and accepting comma-separated lists and ``key=value`` tables
    besides JSON."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        self._given = dict(variables)
        self._section = ""
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._given.items()}

    def explode_env_vars(
        self, field_name: str, field: FieldInfo, env_vars: Mapping[str, str | None]
    ) -> dict[str, Any]:
        self._section = field_name  # for error messages: decode sees only the key
        return super().explode_env_vars(field_name, field, env_vars)

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        text = str(value).strip()
        name = f"{self._section}.{field_name}" if self._section != field_name else field_name
        where = f"{name} ({variable(*name.split('.', 1))})"
        annotation = field.annotation if field is not None else None
        if text[:1] in ("[", "{"):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{where}: not valid JSON: {exc}") from None
        origin = get_origin(annotation)
        if origin is list:  # items that must be tables say so when validated
            return [part.strip() for part in text.split(",") if part.strip()]
        if origin is dict or annotation is dict:
            table: dict[str, str] = {}
            for pair in text.split(","):
                if not pair.strip():
                    continue
                key, sep, val = pair.partition("=")
                if not sep:
                    raise ConfigError(f"{where}: expected key=value pairs or JSON, got {pair!r}")
                table[key.strip()] = val.strip()
            return table
        raise ConfigError(f"{where}: expected a JSON table")


class _Sources(BaseSettings, Config):
    """:class:`Config` as pydantic-settings fills it: environment over file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        case_sensitive=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init values; the environment comes first, so it wins.
        return (ElemtaEnvironment(settings_cls, _VARIABLES.get()), init_settings)


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, merge and validate the configuration; raise :class:`ConfigError` on any
    fault, naming the key. ``env`` defaults to ``os.environ``."""
    env = dict(os.environ if env is None else env)
    path = path or env.get(CONFIG_VARIABLE) or None
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    variables = _variables(env)
    keys = _keys()
    for name in variables:  # a variable replaces the file's value whole, tables too
        section, key, _ = keys[name]
        if not key:
            data.pop(section, None)
        elif isinstance(data.get(section), dict):
            data[section].pop(key, None)
    token = _VARIABLES.set(variables)
    try:
        loaded = _Sources(**data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"{key}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    finally:
        _VARIABLES.reset(token)
    return Config.model_construct(**{name: getattr(loaded, name) for name in Config.model_fields})


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@", re.IGNORECASE)


def redacted(model: BaseModel) -> dict[str, Any]:
    """The configuration as plain data with every secret replaced by ``***``: keys
    of type :data:`elemta.common.config.Secret` and passwords inside URLs
    (``nats://user:***@host``)."""
    return _redact(model.model_dump())  # type: ignore[no-any-return]


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return "***"
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: m.group("head") + "***@", value)
    return value
