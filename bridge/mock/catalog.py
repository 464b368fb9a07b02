"""The legacy systems of the mock hospital: names, paths, WSDL files, protocols.

Spyne-free, so the CLI, the pytest plugin and :class:`MockHospital` can
list the systems without importing the SOAP side.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CHECKED_IN_HOST", "SYSTEMS", "SystemSpec", "system_spec"]

# Where the checked-in WSDLs say the services live: the documented dev port.
CHECKED_IN_HOST = "http://127.0.0.1:8081"


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """One legacy system as the outside world sees it."""

    name: str  # its key in /_mock/stats, /_mock/faults, ...
    path: str  # URL path of the SOAP endpoint; the WSDL is at <path>?wsdl
    wsdl_file: str  # where the checked-in WSDL lives, under wsdl/
    namespace: str
    soap_version: str  # "1.1" or "1.2"
    session_style: str

    @property
    def checked_in_location(self) -> str:
        return CHECKED_IN_HOST + self.path


SYSTEMS: tuple[SystemSpec, ...] = (
    SystemSpec("ehr", "/ehr", "hospital/ehr.wsdl", "urn:hospital:ehr", "1.1", "SOAP header token"),
    SystemSpec(
        "lab",
        "/lab",
        "lab/lab.wsdl",
        "http://labvendor.example/LabService/2009",
        "1.1",
        "HTTP cookie ASP.NET_SessionId",
    ),
    SystemSpec(
        "scheduling",
        "/scheduling",
        "scheduling/scheduling.wsdl",
        "urn:sched-systems:scheduling:v3",
        "1.2",
        "WS-Security UsernameToken (PasswordDigest) on every call",
    ),
    SystemSpec(
        "pharmacy",
        "/pharmacy",
        "pharmacy/pharmacy.wsdl",
        "urn:rxvendor:pharmacy",
        "1.1",
        "Ticket as the first body element",
    ),
    SystemSpec(
        "billing",
        "/billing",
        "billing/billing.wsdl",
        "urn:billing-sys:claims:2011",
        "1.1",
        "UserId and Password in every body",
    ),
)


def system_spec(name: str) -> SystemSpec:
    for spec in SYSTEMS:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in SYSTEMS)
    raise KeyError(f"unknown system {name!r}; known: {known}")
