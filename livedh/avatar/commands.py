"""`livedh avatar build` and `livedh avatar graph`: the command line of livedh/avatar/build.py and
livedh/avatar/motion_build.py.

Imports stay light (no av, mediapipe or torch at import): livedh/cli.py imports this module for
every command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_build_command(avatar_commands: argparse._SubParsersAction) -> None:
    """Registers ``build`` under ``livedh avatar``."""
    parser = avatar_commands.add_parser(
        "build",
        help="build an avatar from a video of a person",
        description="Build a video avatar from a video of the person (at least --min-seconds long, "
        "one face, facing the camera). Re-running after an interruption reuses finished steps.",
    )
    parser.add_argument("video", type=Path, help="the video file (MP4, MOV, MKV, WebM, ...)")
    parser.add_argument("--name", required=True, help="avatar name (folder under --avatars-dir)")
    parser.add_argument("--avatars-dir", type=Path, default=Path("avatars"))
    parser.add_argument("--fps", type=int, default=25, help="frame rate of the avatar (default 25)")
    parser.add_argument(
        "--max-side", type=int, default=1280, help="long side of the stored frames in pixels (default 1280)"
    )
    parser.add_argument(
        "--min-seconds", type=float, default=10.0, help="shortest video accepted (default 10 s)"
    )
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="longest video accepted (default: no limit)")
    parser.add_argument("--max-input-pixels", type=int, default=None,
                        help="largest source frame, width x height (default: no limit)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="most source frames decoded (default: no limit)")
    parser.add_argument(
        "--model",
        choices=("ultralight", "wav2lip"),
        default="ultralight",
        help="lip-sync model whose face crop the avatar uses (default ultralight)",
    )
    parser.add_argument("--source", default=None,
                        help="where the footage comes from, for the manifest (default: the file name)")
    parser.add_argument("--restart", action="store_true", help="ignore the work of an unfinished build")
    parser.add_argument("--no-motion", dest="motion", action="store_false",
                        help="skip the motion graph (body poses, idle/gesture loops): the footage is looped")
    _add_motion_arguments(parser)
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar: progress bars on stderr; json: one JSON object per line on stdout "
        '({"step", "done", "total"}, then {"done": true, "summary"} or {"error", "code"})',
    )
    parser.set_defaults(func=run_build)


def _add_motion_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--action", action="append", default=None, metavar="NAME=START-END|NAME=FILE",
        help="a named action clip of the motion graph: seconds of the same video (wave=12.0-14.5) or a "
        "separate video of the person (bye=bye.mp4); repeatable",
    )  # fmt: skip
    parser.add_argument("--pose-stride", type=int, default=2,
                        help="pose model on every k-th frame; poses between are interpolated (default 2)")


def add_graph_command(avatar_commands: argparse._SubParsersAction) -> None:
    """Registers ``graph`` under ``livedh avatar``: the motion graph of an avatar built before."""
    parser = avatar_commands.add_parser(
        "graph",
        help="(re)build the motion graph of a video avatar",
        description="Build the motion graph (body poses, idle/gesture loops, action clips) of a video "
        "avatar built before, e.g. without one. The avatar folder is rewritten atomically. Without "
        "--action the avatar keeps its action clips; with --action they replace them.",
    )
    parser.add_argument("name", help="avatar name (folder under --avatars-dir)")
    parser.add_argument("--avatars-dir", type=Path, default=Path("avatars"))
    _add_motion_arguments(parser)
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="as for `livedh avatar build`")
    parser.set_defaults(func=run_graph)


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def _failed(command: str, error: Exception, *, as_json: bool) -> int:
    """Reports a failed ``livedh avatar COMMAND``: exit code 2 for bad input (message on stderr,
    or a JSON error line), 1 for anything else (logged with its traceback)."""
    from livedh.errors import InvalidInputError, LiveDHError, NotFoundError

    if not isinstance(error, LiveDHError):
        if as_json:
            _emit({"error": f"{type(error).__name__}: {error}", "code": "internal_error"})
        log.exception("livedh avatar %s failed", command)
        return 1
    if as_json:
        _emit({"error": error.message, "code": error.code})
    else:
        print(f"livedh avatar {command}: {error.message}", file=sys.stderr)
    return 2 if isinstance(error, InvalidInputError | NotFoundError) else 1


def run_build(args: argparse.Namespace) -> int:
    """Exit codes: 0 built, 2 bad input (message on stderr, or a JSON error line), 1 anything
    else."""
    from livedh.avatar.build import BuildParams, build_avatar

    as_json = args.progress == "json"
    progress: Any = _emit_progress if as_json else args.progress == "bar"
    try:
        from livedh.avatar.motion_actions import parse_actions

        params = BuildParams(
            fps=args.fps, max_side=args.max_side, min_seconds=args.min_seconds, model=args.model,
            max_seconds=args.max_seconds, max_input_pixels=args.max_input_pixels,
            max_frames=args.max_frames, motion=args.motion, pose_stride=args.pose_stride,
        )
        result = build_avatar(
            args.video, args.name, args.avatars_dir, params, progress=progress, restart=args.restart,
            source=args.source, actions=parse_actions(args.action or ()),
        )
    except Exception as e:
        return _failed("build", e, as_json=as_json)
    summary = result.summary
    if as_json:
        _emit({"done": True, "path": str(result.path), "summary": summary})
        return 0
    face = summary["face"]
    print(f"built avatar {args.name!r} in {result.path}")
    print(
        f"  {summary['frames']} frames {summary['width']}x{summary['height']} at {summary['fps']} fps, "
        f"face in {100 * face['fraction']:.0f}% of frames ({face['height_px_median']:.0f} px tall), "
        f"audio: {'yes' if summary['audio'] else 'no (can be streamed, not trained)'}, "
        f"{summary['seconds']['total']:.1f} s"
    )
    motion = summary.get("motion")
    if motion is not None:
        print(
            f"  motion graph: {motion['nodes']} of {motion['frames']} frames, {motion['transitions']} "
            f"transitions, actions: {', '.join(motion['actions']) or 'none'}"
            + (f" ({motion['note']})" if "note" in motion else "")
        )
    return 0


def run_graph(args: argparse.Namespace) -> int:
    """Exit codes as ``run_build``'s."""
    from livedh.avatar.motion_actions import parse_actions
    from livedh.avatar.motion_build import rebuild_motion

    as_json = args.progress == "json"
    progress: Any = _emit_progress if as_json else args.progress == "bar"
    try:
        actions = None if args.action is None else parse_actions(args.action)
        result = rebuild_motion(
            args.avatars_dir, args.name, actions=actions, pose_stride=args.pose_stride, progress=progress
        )
    except Exception as e:
        return _failed("graph", e, as_json=as_json)
    summary = result.summary
    if as_json:
        _emit({"done": True, "motion": result.entry, "summary": summary})
        return 0
    if result.entry is None:
        print(f"avatar {args.name!r}: {summary.get('note', 'no motion graph')}")
        return 0
    actions_text = ", ".join(f"{k} {v[0]}-{v[1]}" for k, v in summary["actions"].items()) or "none"
    print(
        f"motion graph of {args.name!r}: {summary['nodes']} of {summary['frames']} frames, "
        f"{summary['transitions']} transitions, gestures in {100 * summary['gesture_share']:.0f}%, "
        f"{len(summary['cuts'])} cuts, actions: {actions_text}"
    )
    return 0


def _emit_progress(step: str, done: int, total: int) -> None:
    _emit({"step": step, "done": done, "total": total})
