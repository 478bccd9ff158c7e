"""Content-scanning plugins (ClamAV, SpamAssassin, third-party) run by a host."""

from __future__ import annotations

from .host import ENTRY_POINT_GROUP, PluginHost, PluginSpec, hookimpl, hookspec, load_plugin

__all__ = ["ENTRY_POINT_GROUP", "PluginHost", "PluginSpec", "hookimpl", "hookspec", "load_plugin"]
