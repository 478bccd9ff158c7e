"""A third-party plugin that misbehaves on request, installed as an entry point.

The message's ``X-Misbehave`` header says how: ``raise``, ``hang`` (a blocking
sleep, which would freeze an event loop), ``spin`` (burns CPU), ``allocate``
(grows without bound), ``exit`` (the process dies); anything else answers
``X-Worker-Pid`` with the process that ran it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODULE", "install"]

MODULE = """
import os
import time

from elemta.policy.checks import Verdict
from elemta.policy.plugins import hookimpl


class Misbehaving:
    @hookimpl
    async def check_data(self, session, sender, recipients, message):
        how = message.split(b"X-Misbehave: ", 1)[1].split(b"\\r\\n", 1)[0].decode()
        if how == "raise":
            raise RuntimeError("plugin bug")
        if how == "hang":
            time.sleep(3600)
        if how == "spin":
            while True:
                pass
        if how == "allocate":
            hoard = []
            while True:
                hoard.append(bytearray(16 * 1024 * 1024))
        if how == "exit":
            os._exit(3)
        return Verdict(add_headers=[("X-Worker-Pid", str(os.getpid()))])


def factory(options):
    return Misbehaving()
"""


def install(directory: Path) -> Path:
    """Write the plugin and its dist-info (entry point ``misbehaving``) into ``directory``."""
    (directory / "elemta_misbehaving_plugin.py").write_text(MODULE)
    dist = directory / "elemta_misbehaving-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: elemta-misbehaving\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[elemta.policy.plugins]\nmisbehaving = elemta_misbehaving_plugin:factory\n"
    )
    return directory
