"""Zenzefi's domain library: wallet and ledger rules, use cases and the ports they run behind.

Import it on its own to embed Zenzefi's rules in another service; it pulls in no web or queue
framework. The HTTP API (`zenzefi_api`) and the worker (`zenzefi_worker`) are thin layers over it.
"""

__version__ = "0.1.0"

from zenzefi_core.webhooks import verify_webhook

__all__ = ["__version__", "verify_webhook"]
