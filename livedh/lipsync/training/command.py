"""`livedh avatar train`: the command line of the trainer.

Imports nothing heavy at module level: cli.py imports this module for every command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_train_command(avatar_commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``train`` under ``livedh avatar``."""
    parser: argparse.ArgumentParser = avatar_commands.add_parser(
        "train",
        help="train an avatar's Ultralight lip-sync model",
        description=(
            "Train the Ultralight lip-sync model (and the SyncNet that scores it) on a video "
            "avatar's own frames and audio, export avatars/NAME/weights/ultralight.pth and report "
            "on the held-out end of the clip. Re-running resumes from avatars/NAME/training/."
        ),
    )
    parser.add_argument("name", help="avatar folder name under --avatars-dir")
    parser.add_argument("--avatars-dir", type=Path, default=Path("avatars"))
    parser.add_argument("--steps", type=int, default=None,
                        help="generator steps (default 6000; --quick: 4)")
    parser.add_argument("--syncnet-steps", type=int, default=None,
                        help="SyncNet steps, run first (default 3000; --quick: 4)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="5-frame windows per generator step (default 16 on CUDA, 2 on CPU)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="fraction at the end of the clip held out for the report")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="a few steps with a tiny batch: checks the pipeline, not a usable model")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    parser.set_defaults(func=train_command)
    return parser


def train_command(args: argparse.Namespace) -> int:
    from livedh.errors import LiveDHError

    avatar_dir = Path(args.avatars_dir) / args.name
    try:
        from livedh.lipsync.training.report import format_report
        from livedh.lipsync.training.trainer import REPORT, TrainConfig, train_avatar, with_defaults

        config = with_defaults(
            TrainConfig(device=args.device, holdout=args.holdout, quick=args.quick),
            steps=args.steps,
            syncnet_steps=args.syncnet_steps,
            batch_size=args.batch_size,
            checkpoint_every=args.checkpoint_every,
            seed=args.seed,
        )
        result = train_avatar(avatar_dir, config, restart=args.restart)
    except LiveDHError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    print(format_report(result.report))
    print(f"weights: {result.weights}")
    print(f"report: {avatar_dir / REPORT}")
    # --model auto (the default) picks the avatar's ultralight weights
    where = "" if Path(args.avatars_dir) == Path("avatars") else f" --avatars-dir {args.avatars_dir}"
    print(f"serve it: livedh serve --avatar {args.name}{where}")
    return 0
