"""Round trips through fields declared once: FHIR -> legacy -> FHIR gives back the same."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bridge.mapping.compiler import compile_system
from bridge.mapping.runner import build_resource
from bridge.mapping.writer import legacy_record

ROOT = Path(__file__).resolve().parents[2]
HOSPITAL = ROOT / "mappings" / "hospital"
NS = "urn:hospital:ehr"


def _element(tag: str, tree: dict[str, Any]) -> etree._Element:
    """A legacy record element built from a written tree (as the legacy system would store it)."""
    el = etree.Element(f"{{{NS}}}{tag}")
    for key, value in tree.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                el.append(_element(key, item))
            else:
                etree.SubElement(el, f"{{{NS}}}{key}").text = item
    return el


@pytest.fixture(scope="module")
def hospital() -> Any:
    return compile_system(HOSPITAL, {})


CASES = ["patient_middle_name", "patient_deceased_date", "patient_non_ascii"]


@pytest.mark.parametrize("case", CASES)
def test_patient_round_trips_through_the_legacy_record(hospital: Any, case: str) -> None:
    patient = hospital.resources["Patient"]
    original = json.loads((HOSPITAL / "tests" / f"{case}.expected.json").read_text())
    tree = legacy_record(patient, original)
    record = _element("Patient", tree)
    assert build_resource(patient, record) == original


def test_patient_written_record_keeps_legacy_forms(hospital: Any) -> None:
    patient = hospital.resources["Patient"]
    original = json.loads((HOSPITAL / "tests" / "patient_middle_name.expected.json").read_text())
    tree = legacy_record(patient, original)
    assert tree["Name"].count("^") == 2  # LAST^FIRST^MIDDLE joined back
    assert tree["DOB"][2] == "/"  # MM/DD/YYYY
    assert tree["Sex"] in ("M", "F", "U")


@pytest.mark.parametrize(
    ("value", "code", "legacy"),
    [(70, "kg", "154.32"), (154.32, "[lb_av]", "154.32"), (70000, "g", "154.32")],
)
def test_device_reading_round_trips_with_units_and_time_zones(
    hospital: Any, value: float, code: str, legacy: str
) -> None:
    observation = hospital.resources["Observation"]
    sent = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/100002"},
        "effectiveDateTime": "2026-07-01T14:30:00Z",
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": code},
    }
    tree = legacy_record(observation, sent)
    reading = tree["Readings"]["Reading"]
    assert reading["Value"] == legacy
    assert reading["Unit"] == "LB"
    assert reading["TakenAt"] == "07/01/2026 10:30:00"  # New York, summer time, no offset
    back = build_resource(observation, _element("RecordVitals", tree))
    assert back["subject"] == sent["subject"]
    assert back["code"]["coding"][0]["code"] == "29463-7"
    assert back["valueQuantity"]["code"] == "kg"
    assert back["valueQuantity"]["value"] == pytest.approx(70, abs=0.01)
    assert datetime.fromisoformat(back["effectiveDateTime"]) == datetime.fromisoformat(
        "2026-07-01T14:30:00+00:00"
    )
    assert back["effectiveDateTime"].endswith("-04:00")
