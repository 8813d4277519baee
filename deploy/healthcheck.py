"""Container health check: exit 0 when the service in this container answers GET /healthz with 200.

The image runs one of three services, each on its own port (CHURNSIGNAL_INGEST_PORT, _SCORING_PORT,
_ALERTS_PORT; defaults 8080-8082), so the check asks each configured port on loopback in turn and
succeeds on the first that answers. Standard library only: it runs in the slim runtime image.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORTS = {"CHURNSIGNAL_INGEST_PORT": 8080, "CHURNSIGNAL_SCORING_PORT": 8081,
                 "CHURNSIGNAL_ALERTS_PORT": 8082}
TIMEOUT_S = 2.0


def candidate_ports(environ: dict[str, str]) -> list[int]:
    ports = []
    for name, default in DEFAULT_PORTS.items():
        raw = environ.get(name, "").strip()
        ports.append(int(raw) if raw else default)
    return ports


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        # Nothing listens on that port (another service's) or it did not answer in time.
        return False


def main() -> int:
    ports = candidate_ports(dict(os.environ))
    if any(healthy(port) for port in ports):
        return 0
    print("no churnsignal service answered /healthz on port " + ", ".join(map(str, ports)), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
