"""bridge/soap."""
