"""Training a per-avatar Ultralight lip-sync model (and the SyncNet that scores it)."""
