"""The plugin host: content scanners as one check of the pipeline.

Plugins implement the ``check_data`` hook (see :class:`DataSpec`) as a
coroutine returning a :class:`Verdict` or ``None``. They are registered with a
pluggy ``PluginManager`` (hook validation, ``pm.list_name_plugin()``), but the
host calls each hook implementation itself: pluggy's hook call is synchronous
and would only hand back un-awaited coroutines, while each plugin needs its own
``asyncio.wait_for`` timeout and fail-open/closed handling, in our ``order``.

Discovery: every plugin, the built-in ones (``clamav``, ``spamd``, ``rspamd``)
included, is an entry point of the group ``elemta.policy.plugins`` (see
``pyproject.toml``), each a factory ``(options) -> plugin``; a third-party
package registers its own the same way. A factory whose ``options`` parameter is
annotated with a pydantic model gets its options checked against it at load
(an unknown key or a bad value stops the load with a message naming the plugin
and the key) and receives the model; an unannotated one receives the dict.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from elemta.common.config import PluginSettings

from ..checks import TEMPFAIL, Gathered, Verdict

__all__ = [
    "ENTRY_POINT_GROUP",
    "UNAVAILABLE",
    "PluginOptionError",
    "PluginHost",
    "PluginSpec",
    "hookimpl",
    "hookspec",
    "find_factory",
    "load_plugin",
    "plugin_spec",
]

log = logging.getLogger(__name__)

PROJECT = "elemta.policy"
ENTRY_POINT_GROUP = "elemta.policy.plugins"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# A built-in's default ``fail`` mode; "open" for everything else.
DEFAULT_FAIL = {"clamav": "closed"}


def UNAVAILABLE() -> Verdict:  # noqa: N802 - reads as a constant
    return Verdict(
        action=TEMPFAIL,
        code=451,
        enhanced="4.7.1",
        reason="Content scanner unavailable, try again later",
    )


class DataSpec:
    @hookspec
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        """Scan the whole message (CRLF bytes); a verdict or None (no opinion)."""


@dataclass
class PluginSpec:
    name: str
    plugin: Any
    order: int = 100
    timeout: float = 30.0
    fail: str = "open"  # "open": errors accept; "closed": errors tempfail 451 4.7.1
    concurrency: int = 0  # calls at once; more wait within the timeout; 0: no limit

    def __post_init__(self) -> None:
        if self.fail not in ("open", "closed"):
            raise ValueError(f"plugin {self.name}: fail must be 'open' or 'closed'")


def find_factory(name: str) -> Callable[[dict[str, Any]], Any]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    raise LookupError(f"unknown policy plugin {name!r}; installed: {', '.join(known)}")


class PluginOptionError(ValueError):
    """A plugin's options do not fit what it declares; the message names plugin and key."""


def options_model(factory: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model a factory's first parameter is annotated with, if any."""
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        params = list(inspect.signature(factory).parameters)
        hints = typing.get_type_hints(target)
    except (TypeError, ValueError, NameError):
        return None
    model = hints.get(params[0]) if params else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def checked_options(name: str, factory: Callable[..., Any], options: dict[str, Any]) -> Any:
    """``options`` as the factory takes them: validated into its model, if it has one."""
    model = options_model(factory)
    if model is None:
        return dict(options)
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = [
            f"option {'.'.join(str(p) for p in err['loc']) or '?'!r}: {err['msg']}"
            for err in exc.errors()
        ]
        raise PluginOptionError(f"plugin {name}: " + "; ".join(problems)) from None


def load_plugin(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    order: int = 100,
    timeout: float = 30.0,
    fail: str | None = None,
) -> PluginSpec:
    """A plugin by its entry-point name."""
    factory = find_factory(name)
    plugin = factory(checked_options(name, factory, dict(options or {})))
    fail = fail or DEFAULT_FAIL.get(name, "open")
    return PluginSpec(name=name, plugin=plugin, order=order, timeout=timeout, fail=fail)


def plugin_spec(settings: PluginSettings) -> PluginSpec:
    """The plugin a ``[[policy.plugins]]`` table describes, in this process or in
    worker processes (``isolation = "process"``, see :mod:`.isolation`)."""
    fail = settings.fail or DEFAULT_FAIL.get(settings.name, "open")
    if settings.isolation == "process":
        from .isolation import WorkerPool

        pool = WorkerPool(
            settings.name,
            dict(settings.options),
            workers=settings.workers,
            cpu_seconds=settings.cpu_seconds,
            memory_mb=settings.memory_mb,
        )
        return PluginSpec(
            settings.name,
            pool,
            order=settings.order,
            timeout=settings.timeout,
            fail=fail,
            concurrency=settings.concurrency,
        )
    spec = load_plugin(
        settings.name, settings.options, order=settings.order, timeout=settings.timeout, fail=fail
    )
    spec.concurrency = settings.concurrency
    return spec


@dataclass
class _Entry:
    spec: PluginSpec
    call: Callable[..., Any] = field(repr=False)
    limit: asyncio.Semaphore | None = field(default=None, repr=False)

    async def run(self, **kwargs: Any) -> Verdict | None:
        """One call, waiting for a free slot first when the plugin has a limit."""
        if self.limit is None:
            return await self.call(**kwargs)  # type: ignore[no-any-return]
        async with self.limit:
            return await self.call(**kwargs)  # type: ignore[no-any-return]


class PluginHost:
    """A pipeline check (``data`` stage) running the plugins in ``order``."""

    def __init__(self, plugins: list[PluginSpec]) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(DataSpec)
        self.entries: list[_Entry] = []
        # sorted() is stable: equal orders keep the configured sequence.
        ordered = sorted(plugins, key=lambda s: s.order)
        for spec in ordered:
            self.pm.register(spec.plugin, name=spec.name)
        by_plugin = {
            id(impl.plugin): impl.function for impl in self.pm.hook.check_data.get_hookimpls()
        }
        for spec in ordered:
            call = by_plugin.get(id(spec.plugin))
            if call is None:
                raise TypeError(f"plugin {spec.name} has no check_data hook implementation")
            if not inspect.iscoroutinefunction(call):
                raise TypeError(f"plugin {spec.name}: check_data must be a coroutine function")
            limit = asyncio.Semaphore(spec.concurrency) if spec.concurrency > 0 else None
            self.entries.append(_Entry(spec, call, limit))

    @property
    def names(self) -> list[str]:
        return [e.spec.name for e in self.entries]

    async def start(self) -> None:
        """Start what the plugins need before their first call (their ``start()``)."""
        for entry in self.entries:
            start = getattr(entry.spec.plugin, "start", None)
            if start is not None:
                await start()

    async def close(self) -> None:
        """Release what the plugins hold (their ``close()``); errors are only logged."""
        for entry in self.entries:
            close = getattr(entry.spec.plugin, "close", None)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:  # noqa: BLE001 - closing must go on for the others
                log.warning("plugin %s failed to close: %r", entry.spec.name, exc)

    async def data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        gathered = Gathered()
        for entry in self.entries:
            spec = entry.spec
            try:
                verdict = await asyncio.wait_for(
                    entry.run(
                        session=session, sender=sender, recipients=recipients, message=message
                    ),
                    spec.timeout,
                )
            except Exception as exc:  # noqa: BLE001 - a plugin must never crash the service
                if isinstance(exc, TimeoutError):
                    log.warning("plugin %s timed out after %ss", spec.name, spec.timeout)
                else:
                    log.warning("plugin %s failed: %r", spec.name, exc)
                if spec.fail == "closed":
                    verdict = UNAVAILABLE()
                else:
                    continue
            if verdict is None:
                continue
            final = gathered.add(verdict)
            if final is not None:
                return final
        return gathered.result
