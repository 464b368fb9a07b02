"""A `bridge serve` process the soak test can kill with SIGKILL and start again.

`tests.support.start_gateway` runs one gateway for the life of a `with`
block. The soak test needs the same gateway twice: killed mid-load, then
restarted on the same port with the same config, store and paging key, as an
orchestrator would restart a crashed pod. Every start appends to one log
file, so the log tells the whole story.

`replica_set` makes several such gateways sharing one store, one paging key
and one public base URL (the address apps know: a load balancer's). The apps'
tokens are for that base and the links the gateways write point there; the
apps send each request to the replica they choose.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bridge.auth.devissuer import DevIssuer
from tests.support import ADMIN_TOKEN, ROOT, free_port

__all__ = ["RestartableGateway", "replica_set"]

PUBLIC_BASE = "http://bridge.soak.invalid/fhir"  # .invalid: never resolves, by design


class RestartableGateway:
    """One gateway config (port, store, keys); `start`, `kill`, `start` again, `stop`.

    >>> gw = RestartableGateway(run_dir, mock.url)
    >>> gw.start()
    >>> gw.kill()      # SIGKILL: no shutdown, sessions and jobs left as they were
    >>> gw.start()     # same port, same store
    >>> gw.stop()
    """

    def __init__(
        self,
        run_dir: Path,
        mock_origin: str,
        *,
        extra: dict[str, Any] | None = None,
        name: str = "gateway",
        store_url: str | None = None,
        paging_key: str | None = None,
        issuer: DevIssuer | None = None,
        public_base: str | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.origin}/fhir"  # where requests go
        self.public_base = public_base or self.base  # what tokens and links name
        self.issuer = issuer or DevIssuer(issuer="https://issuer.test", audience=self.public_base)
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.store_url = store_url or f"sqlite:///{run_dir / 'store.db'}"
        self.log_path = run_dir / f"{name}.log"
        folders = sorted(p.parent for p in (ROOT / "mappings").glob("*/system.yaml"))
        config: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "base_url": self.public_base,
            "systems": [{"path": str(folder), "origin": mock_origin} for folder in folders],
            "paging_key": paging_key or secrets.token_urlsafe(24),
            "auth": {"mode": "jwt", "issuer": self.issuer.issuer, "jwks": self.issuer.jwks()},
            "store": {"url": self.store_url},
            "admin": {"token": ADMIN_TOKEN},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}  # e.g. store: keep the url
            else:
                config[key] = value
        self.config_path = run_dir / f"{name}.json.yaml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def token(self, scope: str, client_id: str) -> str:
        return self.issuer.mint(scope=scope, client_id=client_id)

    def logs(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 60) -> None:
        """Start the process and return once /healthz answers."""
        assert self.process is None or self.process.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited at start:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(f"{self.origin}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the gateway did not start:\n{self.logs()[-4000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to log out, drain or hand jobs back."""
        assert self.process is not None and self.process.poll() is None, "not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL after 20 s; idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def replica_set(
    run_dir: Path,
    mock_origin: str,
    count: int,
    *,
    extra: dict[str, Any] | None = None,
    store_url: str | None = None,
) -> list[RestartableGateway]:
    """`count` gateways on one store (`store_url`, else a SQLite file in `run_dir`).

    One gateway is named "gateway" and answers at its own address, as before;
    several are "replica-0", "replica-1", ... behind the public base PUBLIC_BASE,
    with one paging key and one token issuer."""
    if count == 1:
        return [RestartableGateway(run_dir, mock_origin, extra=extra, store_url=store_url)]
    issuer = DevIssuer(issuer="https://issuer.test", audience=PUBLIC_BASE)
    key = secrets.token_urlsafe(24)
    store_url = store_url or f"sqlite:///{run_dir / 'store.db'}"
    return [
        RestartableGateway(
            run_dir,
            mock_origin,
            extra=extra,
            name=f"replica-{i}",
            store_url=store_url,
            paging_key=key,
            issuer=issuer,
            public_base=PUBLIC_BASE,
        )
        for i in range(count)
    ]
