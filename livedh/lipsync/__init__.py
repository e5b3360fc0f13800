"""Lip-sync renderers: audio window in, avatar frame out, in batches."""

from livedh.lipsync.base import LipSyncModel, LipSyncRequest

__all__ = ["LipSyncModel", "LipSyncRequest"]
