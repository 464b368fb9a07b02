"""Container health check: exit 0 when GET http://127.0.0.1:PORT/PATH answers 2xx.

    python /usr/local/bin/bridge-healthcheck /healthz      (the gateway, liveness)
    python /usr/local/bin/bridge-healthcheck /readyz       (the gateway, readiness)
    python /usr/local/bin/bridge-healthcheck /_mock/info   (the mock hospital)

The port is BRIDGE_PORT (8080 by default; HEALTH_PORT overrides). When the gateway
serves HTTPS itself (BRIDGE_TLS__CERT is set, or HEALTH_SCHEME=https when the
certificate comes from the config file), the check speaks HTTPS to loopback without
verifying the certificate: it asks whether the process answers, not who it is.
Standard library only, so it runs in any image with Python.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    port = os.environ.get("HEALTH_PORT") or os.environ.get("BRIDGE_PORT") or "8080"
    scheme = os.environ.get("HEALTH_SCHEME") or (
        "https" if os.environ.get("BRIDGE_TLS__CERT") else "http"
    )
    tls = scheme == "https"
    url = f"{scheme}://127.0.0.1:{port}{path}"
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # loopback liveness, not identity
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as answer:  # noqa: S310
            ok = 200 <= answer.status < 300
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: {url}: HTTP {answer.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
