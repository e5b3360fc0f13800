"""`livedh avatar build`: the command line of livedh/avatar/build.py."""

from __future__ import annotations

import argparse


def add_build_command(avatar_commands: argparse._SubParsersAction) -> None:
    """Registers ``build`` under ``livedh avatar``."""
    avatar_commands.add_parser("build", help="build an avatar from a video of a person")
