"""Issue 12's figures for the motion graph of video avatars, side by side in one run. Prints
figures and ratios; asserts nothing. Pictures and the cached avatars go under ``--out``.

    .venv/bin/python -m bench.bench_motion [--footage PATH] [--minutes 10] [--seed 0] [--out DIR]

Sources: the shared gesture footage (built into a video avatar at 512 px, with its motion graph,
cached under --out) and synthetic footage with exact poses (livedh/testing/motion_footage.py).
An offline stream: the planner picks a footage frame per output frame under a speech schedule
(turns of real speech, pauses, long idle stretches); base frames come from FootageFrames.

- smoothness: around every transition (a blend, or a jump not blended), the largest
  frame-to-frame change of the output: keypoint displacement (mean over the keypoints visible in
  both frames; blended frames take the stored keypoints interpolated by alpha) and the mean DIS
  optical-flow magnitude (gray, 256 px long side), against the 99th percentile of the same
  measure over the source's own consecutive frames (never across a cut);
- variety: a 10-minute idle stream from the first 20 s: 5 s runs (125 frames) of footage indices
  that occur twice, and frames played backwards (the footage index shown falls by exactly 1 from
  one output frame to the next; during blends both the frame blended towards and the frame left
  are checked), next to the plain ping-pong loop;
- speech drives the body: mean keypoint speed of the output while a turn is spoken vs listened;
- lips unharmed, cost: see bench/motion_render.py.
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from livedh.avatar.motion import POSES_FILE, FootagePick, MotionLibrary
from livedh.avatar.motion_graph import MotionGraph, MotionGraphConfig, build_motion_graph
from livedh.avatar.motion_labels import Appearance
from livedh.avatar.video import VideoAvatar
from livedh.lipsync.neural import ping_pong

FPS = 25
SR = 16000
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "media"
DEFAULT_FOOTAGE = SHARED / "skyreels_a1_driving2_gestures.mp4"
DEFAULT_VOICE = SHARED / "en_radio_8s.wav"
FLOW_SIDE = 256


@dataclass
class Source:
    label: str
    avatar: VideoAvatar
    library: MotionLibrary
    keypoints: np.ndarray  # (N, 23, 2)
    visible: np.ndarray  # (N, 23)
    appearance: Appearance | None  # the build's descriptors (motion/poses.npz), None if absent


# --- sources ----------------------------------------------------------------------------------


def _load_source(label: str, folder: Path) -> Source:
    avatar = VideoAvatar.load(folder)
    if avatar.motion is None:
        raise RuntimeError(f"{label}: the avatar has no motion graph")
    with np.load(folder / POSES_FILE) as z:
        kp, vis = z["keypoints"].astype(np.float32), z["visible"].astype(bool)
        looks = None
        if "appearance" in z.files:
            looks = Appearance(z["appearance"].astype(np.float32), z["appearance_present"].astype(bool))
    return Source(label, avatar, avatar.motion, kp, vis, looks)


def real_source(footage: Path, out: Path) -> Source | None:
    """The footage built into a graph avatar (cached under ``out``); None when it is absent."""
    if not footage.is_file():
        print(f"(footage {footage} not found: synthetic footage only)")
        return None
    from livedh.avatar.build import BuildParams, build_avatar
    from livedh.avatar.motion_build import build_motion

    avatars, name = out / "avatars", f"gestures-{footage.stem[:40]}"
    folder = avatars / name
    if not (folder / "avatar.json").is_file():
        t0 = time.perf_counter()
        build_avatar(footage, name, avatars, BuildParams(max_side=512, model="wav2lip", min_seconds=2.0),
                     progress=False)
        print(f"built avatar from {footage.name} in {time.perf_counter() - t0:.0f} s")
    if VideoAvatar.load(folder, preload=False).motion is None:
        t0 = time.perf_counter()
        build_motion(folder, progress=False)
        print(f"built its motion graph in {time.perf_counter() - t0:.0f} s")
    return _load_source("gesture footage", folder)


def synthetic_source(out: Path, seconds: float = 40.0) -> Source:
    from livedh.testing.motion_footage import make_motion_footage, write_motion_avatar

    folder = out / "avatars" / f"synthetic-{seconds:.0f}s"
    if not (folder / "avatar.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        write_motion_avatar(folder, make_motion_footage(seconds, size=256), name=folder.name,
                            actions={"wave": [50, 110]})
    return _load_source("synthetic", folder)


def clip_library(src: Source, frames: int) -> MotionLibrary:
    """The motion library of the source's first ``frames`` frames (its own graph by the build's
    rule, appearance included, no actions)."""
    n = min(frames, src.avatar.frame_count)
    g = src.library.graph
    cuts = g.cuts[g.cuts < n]
    a = src.appearance
    looks = None if a is None else Appearance(a.features[:n], a.present[:n])
    graph = build_motion_graph(src.keypoints[:n], src.visible[:n], src.avatar.boxes[:n], cuts,
                               MotionGraphConfig(), appearance=looks)
    if graph.n_frames != src.avatar.frame_count:  # the planner indexes the whole footage
        graph = _pad_graph(graph, src.avatar.frame_count)
    return MotionLibrary(graph=graph, speech=src.library.speech, actions=(), keypoints=src.keypoints,
                         visible=src.visible)


def _pad_graph(graph: MotionGraph, total: int) -> MotionGraph:
    from dataclasses import replace

    extra = total - graph.n_frames
    return replace(
        graph, n_frames=total,
        indptr=np.r_[graph.indptr, np.full(extra, graph.indptr[-1])],
        gesture=np.r_[graph.gesture, np.zeros(extra, bool)],
        energy=np.r_[graph.energy, np.zeros(extra, np.float32)],
        dropped=np.r_[graph.dropped, np.arange(graph.n_frames, total)],
    )  # fmt: skip


# --- the stream -------------------------------------------------------------------------------


def load_voice(path: Path) -> np.ndarray:
    """16 kHz mono float32 speech: the shared radio clip, or synthetic syllables without it."""
    if path.is_file():
        from livedh.media.pcm import decode_audio_bytes

        pcm = decode_audio_bytes(path.read_bytes(), SR)
        return (np.asarray(pcm, np.float32) / 32768.0) if pcm.dtype == np.int16 else pcm.astype(np.float32)
    from livedh.testing.talking_video import speech_like_audio

    return speech_like_audio(8.0, seed=1)


def speech_schedule(minutes: float, voice: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio float32 at 16 kHz, turn (frames,) bool: a spoken turn is under way). Turns of 3-12 s
    of the voice (from a random point, looped) with 1-3 s replies to listen to between them, and a
    20-40 s idle stretch about every two minutes."""
    rng = np.random.default_rng(seed)
    total = round(minutes * 60 * FPS)
    hop = SR // FPS
    audio = np.zeros(total * hop, np.float32)
    turn = np.zeros(total, bool)
    t, next_idle = round(rng.uniform(2, 5) * FPS), round(rng.uniform(90, 150) * FPS)
    while t < total:
        if t >= next_idle:
            t += round(rng.uniform(20, 40) * FPS)
            next_idle = t + round(rng.uniform(90, 150) * FPS)
            continue
        n = min(round(rng.uniform(3, 12) * FPS), total - t)
        start = int(rng.integers(0, len(voice)))
        audio[t * hop : (t + n) * hop] = np.resize(np.roll(voice, -start), n * hop)
        turn[t : t + n] = True
        t += n + round(rng.uniform(1, 3) * FPS)
    return audio, turn


def plan(
    library: MotionLibrary, levels: np.ndarray, seed: int, *, actions_every: float = 0.0
) -> list[FootagePick]:
    """The planner's pick for every output frame; it sees each frame's level and the buffered ones
    after it (the whole lookahead, as speech is synthesized ahead)."""
    from livedh.avatar.planner import MotionPlanner

    planner = MotionPlanner(library, seed=seed)
    ahead = planner.config.lookahead_frames
    padded = np.r_[levels, np.zeros(ahead, np.float32)].astype(np.float32)
    every = round(actions_every * FPS)
    names = library.action_names
    picks = []
    for i in range(len(levels)):
        if every and names and i and i % every == 0:
            planner.request_action(names[(i // every) % len(names)])
        picks.append(planner.next(padded[i : i + ahead]))
    return picks


def ping_pong_picks(frames: int, count: int) -> list[FootagePick]:
    return [FootagePick(ping_pong(i, count)) for i in range(frames)]


# --- measures ---------------------------------------------------------------------------------


def pick_arrays(picks: list[FootagePick]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.array([p.index for p in picks], np.int64)
    frm = np.array([-1 if p.blend_from is None else p.blend_from for p in picks], np.int64)
    alpha = np.array([p.alpha for p in picks], np.float64)
    return idx, frm, alpha


def output_keypoints(
    picks: list[FootagePick], kp: np.ndarray, vis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of each output frame: a blended frame's are the two frames' interpolated by alpha,
    visible where both are."""
    idx, frm, alpha = pick_arrays(picks)
    blended = frm >= 0
    src = np.where(blended, frm, idx)
    a = alpha[:, None, None]
    out = np.where(blended[:, None, None], a * kp[idx] + (1 - a) * kp[src], kp[idx])
    return out, vis[idx] & vis[src]


def keypoint_steps(kp: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """(T,) mean displacement (px) from the previous frame over keypoints visible in both; step 0
    and steps with no common keypoint are NaN."""
    both = vis[1:] & vis[:-1]
    d = np.linalg.norm(kp[1:] - kp[:-1], axis=2)
    count = both.sum(axis=1)
    steps = np.where(count > 0, (d * both).sum(axis=1) / np.maximum(count, 1), np.nan)
    return np.r_[np.nan, steps]


class FlowMeter:
    """Mean DIS optical-flow magnitude between two RGB frames, on gray images FLOW_SIDE px long."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def gray(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale = FLOW_SIDE / max(h, w)
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        flow = self._dis.calc(a, b, None)  # type: ignore[call-overload]
        return float(np.linalg.norm(flow, axis=2).mean())


def source_steps(src: Source, flow: FlowMeter) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint and flow steps over the source's consecutive frames within shots."""
    n = src.avatar.frame_count
    cut = np.zeros(n, bool)
    cut[src.library.graph.cuts[src.library.graph.cuts < n]] = True
    kp = keypoint_steps(src.keypoints, src.visible)[1:][~cut[1:]]
    grays = [flow.gray(src.avatar.frame(i)) for i in range(n)]
    fl = np.array([flow(grays[i - 1], grays[i]) for i in range(1, n) if not cut[i]])
    return kp[np.isfinite(kp)], fl


def transitions(picks: list[FootagePick]) -> list[tuple[int, int]]:
    """[first, last] output frames of each transition: consecutive frames that are blends or that
    do not simply play on from the frame before."""
    idx, frm, _ = pick_arrays(picks)
    odd = frm >= 0
    odd[1:] |= idx[1:] != idx[:-1] + 1
    odd[0] = False
    spans, t = [], 1
    while t < len(picks):
        if odd[t]:
            s = t
            while t + 1 < len(picks) and odd[t + 1]:
                t += 1
            spans.append((s, t))
        t += 1
    return spans


@dataclass
class Smoothness:
    spans: list[tuple[int, int]]
    kp_worst: np.ndarray  # per transition, px
    flow_worst: np.ndarray  # per transition, px
    kp_p99: float  # the source's own
    flow_p99: float


def smoothness(src: Source, picks: list[FootagePick], flow: FlowMeter) -> Smoothness:
    """The largest step into, across and out of each transition (steps first..last+1)."""
    from livedh.avatar.footage import FootageFrames

    src_kp, src_flow = source_steps(src, flow)
    kp, vis = output_keypoints(picks, src.keypoints, src.visible)
    kp_steps = keypoint_steps(kp, vis)
    frames = FootageFrames(src.avatar)
    spans = transitions(picks)
    kp_worst, flow_worst = [], []
    for first, last in spans:
        stop = min(last + 1, len(picks) - 1)
        window = kp_steps[first : stop + 1]
        kp_worst.append(float(np.nanmax(window)) if np.isfinite(window).any() else 0.0)
        grays = [flow.gray(frames.base(picks[t]).image) for t in range(first - 1, stop + 1)]
        flow_worst.append(max(flow(a, b) for a, b in itertools.pairwise(grays)))
    return Smoothness(spans, np.array(kp_worst), np.array(flow_worst),
                      float(np.percentile(src_kp, 99)), float(np.percentile(src_flow, 99)))


def print_smoothness(label: str, s: Smoothness, picks: list[FootagePick]) -> None:
    blended = sum(1 for a, b in s.spans if any(picks[t].blend_from is not None for t in range(a, b + 1)))
    minutes = len(picks) / FPS / 60
    print(f"\n## smoothness, {label}: {len(s.spans)} transitions in {minutes:.1f} min "
          f"({blended} blended, {len(s.spans) - blended} hard jumps)")
    if not s.spans:
        return
    for name, worst, ref, unit in (("keypoint displacement", s.kp_worst, s.kp_p99, "px"),
                                   ("mean optical flow", s.flow_worst, s.flow_p99, "px")):
        p99 = float(np.percentile(worst, 99))
        within = int((worst <= ref).sum())
        print(f"{name:<22} source p99 {ref:6.2f} {unit} | transitions: worst {worst.max():6.2f} "
              f"({worst.max() / ref:4.2f}x), p99 {p99:6.2f} ({p99 / ref:4.2f}x), median "
              f"{np.median(worst):6.2f}; within the source p99: {within}/{len(worst)} "
              f"({100 * within / len(worst):.1f}%)")


# --- variety and body motion ---------------------------------------------------------------------


def repeated_runs(idx: np.ndarray, run: int = 5 * FPS) -> int:
    """Output frames where a run of ``run`` footage indices starts that already started earlier."""
    seen: set[bytes] = set()
    repeats = 0
    data = idx.astype(np.int32)
    for s in range(len(idx) - run + 1):
        key = data[s : s + run].tobytes()
        repeats += key in seen
        seen.add(key)
    return repeats


def backwards(picks: list[FootagePick]) -> tuple[int, int]:
    """(steps where the index shown falls by exactly 1, steps where it falls by 1-4): the frame
    blended towards, and the frame left when both output frames blend."""
    idx, frm, _ = pick_arrays(picks)
    d = np.diff(idx)
    both = (frm[1:] >= 0) & (frm[:-1] >= 0)
    e = np.diff(frm)[both]
    short = int(((d < 0) & (d >= -4)).sum() + ((e < 0) & (e >= -4)).sum())
    return int((d == -1).sum() + (e == -1).sum()), short


def print_variety(label: str, src: Source, minutes: float, seed: int) -> None:
    clip = min(20 * FPS, src.avatar.frame_count)
    library = clip_library(src, clip)
    frames = round(minutes * 60 * FPS)
    picks = plan(library, np.zeros(frames, np.float32), seed)
    loop = ping_pong_picks(frames, clip)
    idx = pick_arrays(picks)[0]
    print(f"\n## variety, {label}: {minutes:g} min idle from its first {clip / FPS:.0f} s "
          f"({library.graph.nodes.size} frames in the graph, {library.graph.n_transitions} transitions)")
    print(f"{'':<16} {'repeated 5 s runs':>18} {'backwards (-1)':>15} {'backwards (-1..-4)':>19} "
          f"{'frames shown':>13}")
    for name, p in (("motion graph", picks), ("ping-pong loop", loop)):
        i = pick_arrays(p)[0]
        b1, b4 = backwards(p)
        print(f"{name:<16} {repeated_runs(i):>18} {b1:>15} {b4:>19} {len(np.unique(i)):>9}/{clip}")
    outside = int((idx >= clip).sum())
    if outside:
        print(f"(!) {outside} frames outside the clip")


def body_energy(src: Source, picks: list[FootagePick]) -> np.ndarray:
    kp, vis = output_keypoints(picks, src.keypoints, src.visible)
    return keypoint_steps(kp, vis)


def print_body(label: str, src: Source, picks: list[FootagePick], turn: np.ndarray) -> None:
    print(f"\n## speech drives the body, {label}: mean keypoint speed (px/frame) of the output")
    print(f"{'':<16} {'speaking':>9} {'listening':>10} {'ratio':>6}   (target >= 1.5x)")
    loop = ping_pong_picks(len(picks), src.avatar.frame_count)
    for name, p in (("motion graph", picks), ("ping-pong loop", loop)):
        e = body_energy(src, p)
        speak, listen = float(np.nanmean(e[turn])), float(np.nanmean(e[~turn]))
        print(f"{name:<16} {speak:>9.3f} {listen:>10.3f} {speak / max(listen, 1e-9):>5.2f}x")
    idx = pick_arrays(picks)[0]
    g = src.library.graph.gesture
    print(f"gesture-span frames shown: speaking {100 * g[idx[turn]].mean():.0f}%, listening "
          f"{100 * g[idx[~turn]].mean():.0f}% (footage: {100 * g.mean():.0f}%)")


# --- pictures ------------------------------------------------------------------------------------


def contact_sheet(src: Source, picks: list[FootagePick], s: Smoothness, path: Path) -> None:
    """The output frames from 3 before to 3 after the worst transition (by optical flow), labelled."""
    from livedh.avatar.footage import FootageFrames

    if not s.spans:
        return
    first, last = s.spans[int(np.argmax(s.flow_worst))]
    frames = FootageFrames(src.avatar)
    tiles = []
    for t in range(max(0, first - 3), min(len(picks), last + 4)):
        p = picks[t]
        image = np.ascontiguousarray(frames.base(p).image)
        h, w = image.shape[:2]
        scale = 256 / max(h, w)
        tile = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        text = f"t={t} {p.index}"
        if p.blend_from is not None:
            text = f"t={t} {p.blend_from}>{p.index} a={p.alpha:.2f}"
        cv2.putText(tile, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    cols = 6
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % cols)
    sheet = np.concatenate([np.concatenate(tiles[r : r + cols], axis=1) for r in range(0, len(tiles), cols)])
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"contact sheet of the worst transition (output frames {first}-{last}): {path}")


def energy_plot(src: Source, picks: list[FootagePick], levels: np.ndarray, turn: np.ndarray, path: Path,
                seconds: float = 120.0) -> None:
    """Body motion energy of the output (0.5 s average) against the speech over the first minutes."""
    n = min(len(picks), round(seconds * FPS))
    energy = np.nan_to_num(body_energy(src, picks[:n]))
    smooth = np.convolve(energy, np.ones(FPS // 2) / (FPS // 2), mode="same")
    t = np.arange(n) / FPS
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _energy_plot_cv2(t, smooth, levels[:n], turn[:n], path)
        return
    fig, ax = plt.subplots(figsize=(14, 4))
    ax.fill_between(t, 0, turn[:n] * smooth.max(), color="tab:orange", alpha=0.15, label="speaking turn")
    ax.plot(t, levels[:n] * smooth.max(), color="tab:orange", lw=0.5, alpha=0.6,
            label="speech level (scaled)")
    ax.plot(t, smooth, color="tab:blue", lw=1.2, label="body motion (px/frame, 0.5 s mean)")
    ax.set_xlabel("seconds")
    ax.set_title(f"{src.label}: body motion vs speech")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot of body motion vs speech: {path}")


def _energy_plot_cv2(
    t: np.ndarray, energy: np.ndarray, levels: np.ndarray, turn: np.ndarray, path: Path
) -> None:
    w, h = 1400, 300
    img = np.full((h, w, 3), 255, np.uint8)
    x = (t / max(t[-1], 1e-9) * (w - 1)).astype(np.int32)
    top = max(float(energy.max()), 1e-9)
    for xi, on in zip(x, turn, strict=True):
        if on:
            img[:, xi] = (230, 240, 255)
    for series, colour in ((levels * top, (0, 140, 255)), (energy, (200, 80, 0))):
        y = (h - 1 - series / top * (h - 20)).astype(np.int32)
        cv2.polylines(img, [np.stack([x, y], axis=1)], False, colour, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)
    print(f"plot of body motion vs speech: {path}")


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    faulthandler.enable()  # an intermittent OpenCV segfault was seen once: print where it happens
    from bench import motion_render

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--footage", type=Path, default=DEFAULT_FOOTAGE)
    ap.add_argument("--voice", type=Path, default=DEFAULT_VOICE)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/livedh-bench-motion"))
    ap.add_argument("--lips-seconds", type=float, default=24.0)
    ap.add_argument("--cost-seconds", type=float, default=3.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(1)  # the budget is one core per session's stage
    started = time.perf_counter()
    sources = [s for s in (real_source(args.footage, args.out), synthetic_source(args.out)) if s is not None]
    voice = load_voice(args.voice)
    audio, turn = speech_schedule(args.minutes, voice, args.seed)
    from livedh.avatar.planner import speech_levels

    levels = speech_levels(audio, SR // FPS)[: len(turn)]
    flow = FlowMeter()
    for src in sources:
        print(f"\n#### {src.label}: {src.avatar.frame_count} frames {src.avatar.width}x{src.avatar.height}, "
              f"graph {src.library.graph.nodes.size} nodes, {src.library.graph.n_transitions} transitions, "
              f"gesture {100 * src.library.graph.gesture.mean():.0f}%, actions {src.library.action_names}, "
              f"appearance {'compared' if src.appearance is not None else 'absent (poses only)'}")
        t0 = time.perf_counter()
        picks = plan(src.library, levels, args.seed, actions_every=90.0)
        per_frame = (time.perf_counter() - t0) / len(picks) * 1000
        print(f"planner: {per_frame:.3f} ms per frame ({len(picks)} frames, {args.minutes:g} min, speaking "
              f"{100 * turn.mean():.0f}% of the time)")
        s = smoothness(src, picks, flow)
        print_smoothness(src.label, s, picks)
        print_variety(src.label, src, args.minutes, args.seed)
        print_body(src.label, src, picks, turn)
        tag = src.label.split()[0]
        contact_sheet(src, picks, s, args.out / f"worst_transition_{tag}.png")
        energy_plot(src, picks, levels, turn, args.out / f"motion_vs_speech_{tag}.png")
    motion_render.lips(sources[0], voice, args.lips_seconds, args.seed)
    motion_render.cost(sources[0], voice, args.cost_seconds, args.seed)
    print(f"\n(total {time.perf_counter() - started:.0f} s; pictures under {args.out})")


if __name__ == "__main__":
    main()
