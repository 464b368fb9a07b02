"""The mock legacy hospital: five spyne SOAP systems plus a JSON side door for tests.

The EHR (``/ehr``), lab (``/lab``), scheduling (``/scheduling``, SOAP 1.2),
pharmacy (``/pharmacy``) and billing (``/billing``) share one seeded
hospital. Run it with ``bridge mock`` (or ``python -m bridge.mock``); drive
it from tests with the pytest fixtures ``mock_hospital`` /
``mock_hospital_server`` or with :class:`MockHospital` directly::

    from bridge.mock import MockHospital

    with MockHospital.start(patients=500, today="2026-11-24") as hospital:
        ...  # SOAP at hospital.system_url("lab"), views via hospital.get(...)

Nothing here imports spyne; the SOAP side lives in the system modules
(:mod:`bridge.mock.ehr`, :mod:`bridge.mock.lab`, ...) and runs in the
mock's own process.
"""

from bridge.mock.hospital import MockHospital, MockHospitalError

__all__ = ["MockHospital", "MockHospitalError"]
