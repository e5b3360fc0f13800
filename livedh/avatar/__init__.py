"""avatar."""
