"""Benchmarks: scripts that print figures (no assertions; tests never time things)."""
