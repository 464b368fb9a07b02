"""Hot reload of mappings while requests are being served."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import copy_mappings, start_gateway

pytestmark = pytest.mark.e2e

EXTRA = """  - fhir: identifier[1]
    fields:
      - {fhir: system, value: "urn:example:zip"}
      - {fhir: value, from: Zip}
"""


def _wait_for(check: Any, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_reload_swaps_clean_edits_and_survives_broken_ones(
    mock_hospital: MockHospital, tmp_path: Path
) -> None:
    folder = copy_mappings(tmp_path)
    mapping = folder / "Patient.yaml"
    original = mapping.read_text()
    with start_gateway(
        tmp_path, mock_hospital.ehr_url, mappings=folder, extra={"reload_mappings": True}
    ) as gw:
        headers = {"Authorization": f"Bearer {gw.token()}"}
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=gw.base, headers=headers, timeout=30) as client:
                while not stop.is_set():
                    statuses.append(client.get("/Patient/100007").status_code)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        client = gw.client()

        def ready() -> dict[str, Any]:
            answer = httpx.get(gw.base.removesuffix("/fhir") + "/readyz", timeout=5)
            return answer.json()  # type: ignore[no-any-return]

        try:
            mapping.write_text(original + EXTRA)

            def has_zip() -> bool:
                ids = client.get("/Patient/100007").json().get("identifier", [])
                return len(ids) == 2

            assert _wait_for(has_zip), gw.logs()
            assert ready()["mappings"]["reload"] == "current"
            mapping.write_text(original.replace("from: DOB\n", "from: DOB_TYPO\n") + EXTRA)
            assert _wait_for(lambda: "DOB_TYPO" in gw.logs()), gw.logs()
            time.sleep(0.5)
            assert has_zip()  # the previous mapping keeps serving
            # Still ready, and saying that the files on disk are not what serves.
            refused = httpx.get(gw.base.removesuffix("/fhir") + "/readyz", timeout=5)
            assert refused.status_code == 200
            state = refused.json()["mappings"]
            assert state["reload"] == "refused"
            assert state["problems"] >= 1
            assert state["refused_since"].endswith("Z")
            assert "DOB_TYPO" not in refused.text  # the log has the problem, not readiness
            mapping.write_text(original)
            assert _wait_for(lambda: ready()["mappings"]["reload"] == "current"), gw.logs()
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert statuses
    assert set(statuses) == {200}
    problem = next(line for line in gw.logs().splitlines() if "DOB_TYPO" in line)
    assert "Patient.yaml:" in problem
    assert "element 'DOB_TYPO' is not in Patient" in problem
