"""`livedh avatar train`: the command line of the trainer."""

from __future__ import annotations

import argparse


def add_train_command(avatar_commands: argparse._SubParsersAction) -> None:
    """Registers ``train`` under ``livedh avatar``."""
    avatar_commands.add_parser("train", help="train an avatar's Ultralight lip-sync model")
