"""TLS to legacy systems: certificates verified by default, own CAs, client certificates."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

__all__ = ["ClientTls", "client_context"]


@dataclass(frozen=True)
class ClientTls:
    """How the gateway connects to one legacy system over HTTPS.

    `ca_file`: trust these CAs (PEM) instead of the system's store, e.g. a
    hospital's internal CA. `cert_file` and `key_file`: present this client
    certificate (mutual TLS). Verification of the legacy system's certificate
    and host name is always on.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def client_context(tls: ClientTls) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context
