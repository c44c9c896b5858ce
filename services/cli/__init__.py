"""The `bmc` command: run the platform, mint dev tokens, run the demo."""

from services.cli.app import app

__all__ = ["app"]
