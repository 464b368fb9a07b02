"""Lab results as a patient portal reads them, through the lab's quirks.

The lab keeps local test codes (LOINC comes from a code table), flags
abnormal values with H/L/HH/LL/A, sends New York wall-clock times without an
offset, pages by page number, answers errors inside normal responses
(`<Status>ERR</Status>`), and holds its session in an ASP.NET cookie.
"""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import ROOT, Gateway
from tests.uscore import assert_us_core_diagnostic_report_lab, assert_us_core_lab_observation

pytestmark = pytest.mark.e2e

NEW_YORK = ZoneInfo("America/New_York")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SCOPES = "user/Observation.rs user/DiagnosticReport.rs"
STATUSES = {"F": "final", "P": "preliminary", "C": "corrected"}
# The UCUM codes of the units the lab sends. UCUM writes the international
# unit in brackets: the lab's "mIU/L" is "m[IU]/L".
UCUM_CODES = {
    "%": "%",
    "U/L": "U/L",
    "mg/dL": "mg/dL",
    "g/dL": "g/dL",
    "mmol/L": "mmol/L",
    "10*3/uL": "10*3/uL",
    "mIU/L": "m[IU]/L",
}


def _table() -> dict[str, str]:
    with (ROOT / "mappings" / "lab" / "tables" / "lab-tests.csv").open(newline="") as f:
        return {row["local"]: row["code"] for row in csv.DictReader(f)}


# -- the legacy side ---------------------------------------------------------------


@pytest.fixture(scope="module")
def legacy_results(mock_hospital_server: MockHospital) -> dict[str, list[dict[str, Any]]]:
    """Lab results of the first 200 patients, by MRN, as the lab holds them."""
    return {
        str(mrn): mock_hospital_server.get("/lab/results", mrn=str(mrn))
        for mrn in range(100001, 100201)
    }


def _patient_with(
    results: dict[str, list[dict[str, Any]]], test: Any, *, most: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    matching = [(mrn, rows) for mrn, rows in results.items() if rows and test(rows)]
    assert matching, "no patient in the sample has such lab results"
    if most:
        return max(matching, key=lambda item: len(item[1]))
    return matching[0]


def _new_york(local: str) -> set[str]:
    """The FHIR instant(s) for a legacy New York wall-clock time (two in the fall-back hour)."""
    naive = datetime.fromisoformat(local)
    return {naive.replace(tzinfo=NEW_YORK, fold=fold).isoformat() for fold in (0, 1)}


def _id(row: dict[str, Any]) -> str:
    return f"{row['AccessionNumber']}-{row['TestCode']}"


# -- the FHIR side -----------------------------------------------------------------


@pytest.fixture
def portal(gateway: Gateway) -> httpx.Client:
    return gateway.client(SCOPES)


def _next(bundle: dict[str, Any]) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)


def _pages(client: httpx.Client, fhir: Any, path: str, **params: Any) -> list[dict[str, Any]]:
    reply = client.get(path, params=params)
    assert reply.status_code == 200, reply.text
    bundles = [fhir(reply.json())]
    while (url := _next(bundles[-1])) is not None:
        reply = client.get(url)
        assert reply.status_code == 200, reply.text
        bundles.append(fhir(reply.json()))
        assert len(bundles) < 100
    for bundle in bundles:
        assert bundle["type"] == "searchset"
    return bundles


def _search(client: httpx.Client, fhir: Any, path: str, **params: Any) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for bundle in _pages(client, fhir, path, **params)
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "match"
    ]


def _labs(client: httpx.Client, fhir: Any, mrn: str, **params: Any) -> list[dict[str, Any]]:
    found = _search(client, fhir, "/Observation", patient=mrn, category="laboratory", **params)
    for obs in found:
        assert_us_core_lab_observation(obs)
        assert obs["subject"] == {"reference": f"Patient/{mrn}"}
    return found


# -- Observation ---------------------------------------------------------------------


def test_lab_results_match_the_legacy_results(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn, rows = _patient_with(legacy_results, lambda rows: True, most=True)
    found = {o["id"]: o for o in _labs(portal, fhir, mrn)}
    assert sorted(found) == sorted(_id(r) for r in rows)
    table = _table()
    for row in rows:
        obs = found[_id(row)]
        assert obs["status"] == STATUSES[row["ResultStatus"]]
        assert obs["code"]["coding"][0]["system"] == LOINC
        assert obs["code"]["coding"][0]["code"] == table[row["TestCode"]]
        assert obs["identifier"][0]["value"] == row["AccessionNumber"]
        assert obs["effectiveDateTime"] in _new_york(row["CollectedAt"])
        assert obs["issued"] in _new_york(row["ResultedAt"])
        if row["Units"]:
            quantity = obs["valueQuantity"]
            assert Decimal(str(quantity["value"])) == Decimal(row["Value"])
            assert quantity["system"] == UCUM
            assert quantity["unit"] == row["Units"]
            (reference,) = obs["referenceRange"]
            for bound, legacy in (("low", row["RefLow"]), ("high", row["RefHigh"])):
                if legacy:
                    assert Decimal(str(reference[bound]["value"])) == Decimal(legacy)
                    assert reference[bound]["system"] == UCUM
                else:
                    assert bound not in reference
        else:
            assert obs["valueString"] == row["Value"]


def test_lab_codes_are_loinc(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    # Independent of the mapping's table: the LOINC codes docs/mock.md gives.
    expected = {"GLU": "2345-7", "CREAT": "2160-0", "A1C": "4548-4", "HGB": "718-7"}
    seen: set[str] = set()
    for mrn, rows in legacy_results.items():
        if not {r["TestCode"] for r in rows} & (set(expected) - seen):
            continue
        local = {_id(r): r["TestCode"] for r in rows}
        for obs in _labs(portal, fhir, mrn):
            if local[obs["id"]] in expected:
                codings = [(c["system"], c["code"]) for c in obs["code"]["coding"]]
                assert codings == [(LOINC, expected[local[obs["id"]]])], obs["id"]
                seen.add(local[obs["id"]])
        if seen == set(expected):
            break
    assert seen == set(expected)


def test_lab_units_are_ucum_codes(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn, rows = _patient_with(
        legacy_results, lambda rows: any(r["TestCode"] == "TSH" for r in rows)
    )
    units = {_id(r): r["Units"] for r in rows}
    for obs in _labs(portal, fhir, mrn):
        if "valueQuantity" not in obs:
            continue
        legacy = units[obs["id"]]
        assert obs["valueQuantity"]["system"] == UCUM
        assert obs["valueQuantity"]["code"] == UCUM_CODES[legacy], obs["id"]
        for bound in obs["referenceRange"][0].values():
            assert bound["code"] == UCUM_CODES[legacy], obs["id"]


def test_lab_flags_become_interpretations(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    wanted = {"H", "L", "HH", "LL"}
    checked: set[str] = set()
    for mrn, rows in legacy_results.items():
        flags = {r["Flag"] for r in rows} & (wanted - checked)
        if not flags:
            continue
        by_id = {_id(r): r["Flag"] for r in rows}
        for obs in _labs(portal, fhir, mrn):
            flag = by_id[obs["id"]]
            if flag:
                (interpretation,) = obs["interpretation"]
                codings = [(c["system"], c["code"]) for c in interpretation["coding"]]
                assert codings == [(INTERPRETATION, flag)], obs["id"]
                checked.add(flag)
            else:
                assert (
                    "interpretation" not in obs
                    or obs["interpretation"][0]["coding"][0]["code"] == "N"
                )
        if checked == wanted:
            break
    assert checked == wanted


def test_lab_times_carry_new_yorks_offset_summer_and_winter(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    summer = _patient_with(
        legacy_results, lambda rows: rows[0]["CollectedAt"][5:7] in ("06", "07", "08")
    )
    winter = _patient_with(
        legacy_results, lambda rows: rows[0]["CollectedAt"][5:7] in ("12", "01", "02")
    )
    for (mrn, rows), offset in ((summer, "-04:00"), (winter, "-05:00")):
        newest = rows[0]
        obs = next(o for o in _labs(portal, fhir, mrn) if o["id"] == _id(newest))
        # A legacy 2026-07-01T10:00:00 is 2026-07-01T10:00:00-04:00; in January, -05:00.
        assert obs["effectiveDateTime"] == newest["CollectedAt"] + offset


def test_lab_search_by_loinc_code(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn, rows = _patient_with(
        legacy_results, lambda rows: 1 < sum(r["TestCode"] == "GLU" for r in rows) < len(rows)
    )
    glucose = sorted(_id(r) for r in rows if r["TestCode"] == "GLU")
    for code in ("http://loinc.org|2345-7", "2345-7"):
        found = _labs(portal, fhir, mrn, code=code)
        assert sorted(o["id"] for o in found) == glucose
        assert all(o["code"]["coding"][0]["code"] == "2345-7" for o in found)
    assert _labs(portal, fhir, mrn, code="http://snomed.info/sct|2345-7") == []


def test_lab_search_by_date(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn, rows = _patient_with(
        legacy_results, lambda rows: len({r["CollectedAt"][:10] for r in rows}) >= 4
    )
    days = sorted({r["CollectedAt"][:10] for r in rows})
    day = days[len(days) // 2]

    def ids(keep: Any) -> list[str]:
        return sorted(_id(r) for r in rows if keep(r["CollectedAt"][:10]))

    cases = {
        f"ge{day}": ids(lambda d: d >= day),
        f"gt{day}": ids(lambda d: d > day),
        f"lt{day}": ids(lambda d: d < day),
        f"le{day}": ids(lambda d: d <= day),
        day: ids(lambda d: d == day),
    }
    for value, expected in cases.items():
        assert sorted(o["id"] for o in _labs(portal, fhir, mrn, date=value)) == expected, value
    both = _labs(portal, fhir, mrn, date=[f"ge{days[1]}", f"le{days[-2]}"])
    assert sorted(o["id"] for o in both) == ids(lambda d: days[1] <= d <= days[-2])


def test_lab_search_by_instant_honours_new_york_time(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    # A result collected at 15:03 New York time (EDT) was collected at 19:03Z.
    mrn, rows = _patient_with(
        legacy_results, lambda rows: rows[0]["CollectedAt"][5:7] in ("06", "07", "08")
    )
    newest = rows[0]
    utc = (
        datetime.fromisoformat(newest["CollectedAt"])
        .replace(tzinfo=NEW_YORK)
        .astimezone(ZoneInfo("UTC"))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    same = sorted(_id(r) for r in rows if r["AccessionNumber"] == newest["AccessionNumber"])
    assert sorted(o["id"] for o in _labs(portal, fhir, mrn, date=f"ge{utc}")) == same
    assert _labs(portal, fhir, mrn, date=f"gt{utc}") == []


def test_lab_paging_visits_every_result_once(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn, rows = _patient_with(legacy_results, lambda rows: True, most=True)
    assert len(rows) > 20
    bundles = _pages(portal, fhir, "/Observation", patient=mrn, category="laboratory", _count=6)
    assert len(bundles) == -(-len(rows) // 6)
    assert all(len(b.get("entry", [])) <= 6 for b in bundles)
    ids = [e["resource"]["id"] for b in bundles for e in b.get("entry", [])]
    assert len(ids) == len(set(ids)) == len(rows)
    assert set(ids) == {_id(r) for r in rows}


def test_lab_unknown_patient_is_an_empty_bundle(
    portal: httpx.Client, mock_hospital: MockHospital, fhir: Any
) -> None:
    reply = portal.get("/Observation", params={"patient": "999999", "category": "laboratory"})
    assert reply.status_code == 200, reply.text
    bundle = fhir(reply.json())
    assert bundle["type"] == "searchset"
    assert bundle.get("entry", []) == []
    assert bundle.get("total", 0) == 0
    # The lab said so inside a normal answer (<Status>ERR</Status>), not with a fault.
    assert mock_hospital.stats()["lab"]["faults"]["LAB-PAT-404"] == 1


def test_lab_empty_date_range_is_400(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn = next(iter(legacy_results))
    reply = portal.get(
        "/Observation",
        params={"patient": mrn, "category": "laboratory", "date": ["ge2026-05-01", "le2026-01-01"]},
    )
    assert reply.status_code == 400
    assert fhir(reply.json())["issue"][0]["code"] == "invalid"


@pytest.mark.parametrize("path", ["/Observation", "/DiagnosticReport"])
def test_lab_search_with_an_empty_patient_id_is_400(
    portal: httpx.Client, mock_hospital: MockHospital, fhir: Any, path: str
) -> None:
    reply = portal.get(path, params={"patient": "Patient/"})
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == "application/fhir+json; charset=utf-8"
    issue = fhir(reply.json())["issue"][0]
    assert (issue["code"], issue["diagnostics"]) == (
        "invalid",
        "The laboratory rejected the request.",
    )
    # The lab's own answer (in the body, not a fault), mapped by its fault table.
    assert mock_hospital.stats()["lab"]["faults"]["LAB-BAD-REQUEST"] == 1


@pytest.mark.parametrize(
    "date", ["le9999-12-31T10:00:00Z", "ge0001-01-01T10:00:00Z", "lt9999-12-31T23:59:59+14:00"]
)
def test_lab_search_dates_at_the_calendars_ends_are_answered(
    portal: httpx.Client, fhir: Any, date: str
) -> None:
    # A dateTime widens the legacy day range a day each way, but not past the calendar.
    params = {"patient": "100001", "category": "laboratory", "date": date}
    reply = portal.get("/Observation", params=params)
    assert reply.status_code == 200, reply.text
    assert fhir(reply.json())["resourceType"] == "Bundle"


def test_lab_cookie_loss_costs_one_relogin(
    portal: httpx.Client,
    mock_hospital: MockHospital,
    legacy_results: dict[str, list[dict[str, Any]]],
    fhir: Any,
) -> None:
    mrn, rows = _patient_with(legacy_results, lambda rows: True)
    assert len(_labs(portal, fhir, mrn)) == len(rows)
    before = mock_hospital.stats()["lab"]
    mock_hospital.expire_sessions(system="lab")
    assert len(_labs(portal, fhir, mrn)) == len(rows)
    after = mock_hospital.stats()["lab"]
    assert after["logins"] == before["logins"] + 1
    assert after["faults"].get("LAB-SESSION", 0) == before["faults"].get("LAB-SESSION", 0) + 1
    assert after["calls"]["Logon"] == before["calls"]["Logon"] + 1


# -- DiagnosticReport ------------------------------------------------------------------


def _reports(legacy: list[dict[str, Any]]) -> dict[str, list[str]]:
    by_accession: dict[str, list[str]] = {}
    for row in legacy:
        by_accession.setdefault(row["AccessionNumber"], []).append(f"Observation/{_id(row)}")
    return by_accession


def test_reports_list_their_results(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn, rows = _patient_with(legacy_results, lambda rows: len(_reports(rows)) >= 3)
    expected = _reports(rows)
    reports = _search(portal, fhir, "/DiagnosticReport", patient=mrn)
    assert sorted(r["id"] for r in reports) == sorted(expected)
    for report in reports:
        assert_us_core_diagnostic_report_lab(report)
        assert report["subject"] == {"reference": f"Patient/{mrn}"}
        assert [r["reference"] for r in report["result"]] == expected[report["id"]]
        first = next(r for r in rows if r["AccessionNumber"] == report["id"])
        assert report["effectiveDateTime"] in _new_york(first["CollectedAt"])


def test_reports_include_their_observations(
    portal: httpx.Client, legacy_results: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn, rows = _patient_with(legacy_results, lambda rows: len(_reports(rows)) >= 3)
    bundles = _pages(
        portal, fhir, "/DiagnosticReport", patient=mrn, _include="DiagnosticReport:result"
    )
    matches, included = [], {}
    for bundle in bundles:
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            if entry["search"]["mode"] == "match":
                assert resource["resourceType"] == "DiagnosticReport"
                matches.append(resource)
            else:
                assert entry["search"]["mode"] == "include"
                assert resource["resourceType"] == "Observation"
                assert entry["fullUrl"].endswith(f"/Observation/{resource['id']}")
                assert_us_core_lab_observation(resource)
                included[f"Observation/{resource['id']}"] = resource
    references = {r["reference"] for report in matches for r in report["result"]}
    assert set(included) == references == {f"Observation/{_id(r)}" for r in rows}
    # The included copies are the same resources the Observation search gives.
    plain = {o["id"]: o for o in _labs(portal, fhir, mrn)}
    for ref, obs in included.items():
        assert obs == plain[ref.split("/", 1)[1]]


def test_report_read_by_accession(
    portal: httpx.Client, mock_hospital: MockHospital, fhir: Any
) -> None:
    rows = mock_hospital.get("/lab/results", mrn="100002")
    accession = rows[0]["AccessionNumber"]
    legacy = mock_hospital.get(f"/lab/reports/{accession}")
    reply = portal.get(f"/DiagnosticReport/{accession}")
    assert reply.status_code == 200, reply.text
    report = fhir(reply.json())
    assert_us_core_diagnostic_report_lab(report)
    assert report["id"] == accession
    assert report["subject"] == {"reference": f"Patient/{legacy['MRN']}"}
    assert (
        report["status"] == {"F": "final", "P": "preliminary", "C": "corrected"}[legacy["Status"]]
    )
    assert report["effectiveDateTime"] in _new_york(legacy["CollectedAt"])
    assert report["issued"] in _new_york(legacy["ReportedAt"])
    assert [r["reference"] for r in report["result"]] == [
        f"Observation/{_id(r)}" for r in legacy["Results"]
    ]


@pytest.mark.parametrize("accession", ["A99-9999999", "not-an-accession"])
def test_report_read_unknown_accession_is_404(
    portal: httpx.Client, fhir: Any, accession: str
) -> None:
    reply = portal.get(f"/DiagnosticReport/{accession}")
    assert reply.status_code == 404
    assert fhir(reply.json())["issue"][0]["code"] == "not-found"


def test_reports_of_an_unknown_patient_are_an_empty_bundle(portal: httpx.Client, fhir: Any) -> None:
    assert _search(portal, fhir, "/DiagnosticReport", patient="999999") == []
