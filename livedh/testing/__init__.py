"""Helpers for testing and benchmarking a running server (shared by tests/ and bench/)."""
