"""Credentials: the user store and the check of one login.

DESCRIPTION
    One store abstraction (:class:`~.store.UserStore`) with an SQL implementation
    (SQLite, the embedded default; PostgreSQL; MariaDB/MySQL — one schema, managed by
    Alembic migrations) and a read-only LDAP one (bind or search-and-bind, with TLS).
    :class:`~.authenticator.Authenticator` checks a login and password, counting
    failures per client address and per login in JetStream KV so that every policy
    replica (and so every ingress replica asking it) sees the same lockout.

    Ingress and the api ask over gRPC (``PolicyService/Authenticate``); only the
    policy service holds the store's credentials.

SECURITY
    Passwords are hashed with Argon2id by default; bcrypt (``{BLF-CRYPT}``),
    SHA512-CRYPT and Argon2 hashes imported from Dovecot or Postfix setups verify
    (libpass, the maintained fork of passlib). Passwords and hashes are never logged.

DIAGNOSTICS
    Each failed login is one log line a fail2ban filter can match::

        authentication failed: service=smtp client=192.0.2.1 login=alice@example.org reason=invalid

CONFIGURATION PARAMETERS
    The ``[users]`` section (``elemta.example.toml``).
"""
