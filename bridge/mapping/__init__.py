"""bridge/mapping."""
