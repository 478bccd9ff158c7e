"""The ``elemta`` command: one program for every service, the local system and
administration, in the manner of Postfix's ``postfix``, ``postconf`` and ``postqueue``.

Subcommands are entry points, so a package adds its own without editing this one:

``elemta.commands``
    Top-level subcommands; each entry point is a :class:`click.Command` (or group).
    Built in: ``serve``, ``run``, ``config``.
``elemta.services``
    ``elemta serve <name>``; each entry point is a :class:`click.Command` that runs
    one service in the foreground (:func:`elemta.common.runtime.service_command`
    builds one). Built in: ingress, policy, queue, delivery, api.

A new subcommand is a module with a click group, and one line in the package's
``pyproject.toml``::

    [project.entry-points."elemta.commands"]
    queue = "elemta.api.queuecli:queue"

Entry points are read from the installed metadata: after adding one, reinstall
(``make install`` does when ``pyproject.toml`` changed).
"""
