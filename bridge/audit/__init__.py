"""bridge/audit."""
