"""The mock legacy hospital: a spyne SOAP EHR plus a JSON side door for tests.

Run it with ``bridge mock`` (or ``python -m bridge.mock``); drive it from
tests with the pytest fixtures ``mock_hospital`` / ``mock_hospital_server``
or with :class:`MockHospital` directly::

    from bridge.mock import MockHospital

    with MockHospital.start(patients=500, page_size=10) as hospital:
        ...  # SOAP at hospital.ehr_url, side door via hospital.stats() etc.

Nothing here imports spyne; the SOAP side lives in :mod:`bridge.mock.ehr`
and runs in the mock's own process.
"""

from bridge.mock.hospital import MockHospital, MockHospitalError

__all__ = ["MockHospital", "MockHospitalError"]
