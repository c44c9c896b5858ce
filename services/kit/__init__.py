"""Shared runtime of every service: settings, server bootstrap, interceptors,
database and migrations, Redis, security, telemetry and the embedded
PostgreSQL/Redis used when no external ones are configured."""
