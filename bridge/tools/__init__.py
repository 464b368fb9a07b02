"""The integration engineer's tools: explain, golden tests, the mapping JSON Schema."""
