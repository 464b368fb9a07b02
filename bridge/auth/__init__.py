"""bridge/auth."""
