"""FHIR R4 gateway over legacy SOAP hospital systems."""

__version__ = "0.1.0"
