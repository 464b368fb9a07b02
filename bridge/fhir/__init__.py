"""bridge/fhir."""
