"""A WebRTC session streams a video avatar with a motion graph end to end: the renderer shows the
footage frames its planner picks (not the ping-pong loop), and an action asked for over the API
plays. The avatar is synthetic footage with exact poses (livedh/testing/motion_footage.py); the
lip-sync model is Wav2Lip-96 with random weights (no speech here, so the footage shows as is)."""

from __future__ import annotations

import json
import textwrap

import cv2
import numpy as np
import pytest
import torch

from livedh.lipsync.nets import calibrate_batchnorm
from livedh.lipsync.nets.wav2lip import build_wav2lip
from livedh.testing.live import live_server
from livedh.testing.motion_footage import make_motion_footage, write_motion_avatar
from livedh.testing.netns import netns_available

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
]

#: an idle stretch late in the footage (frames 300-339, 12.0-13.6 s): the plain loop starting at
#: frame 0 cannot show it in the first 12 s of a session
ACTION = (300, 340)
ACTION_AT, SECONDS, THUMB = 3.0, 8.0, 96

# Runs inside the namespace: receives the video, asks for the action (and an unknown one) at
# ACTION_AT, and saves small thumbnails of every frame with their arrival times.
CLIENT = textwrap.dedent("""
    import asyncio, json, sys, time
    import aiohttp, cv2, numpy as np
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    async def main(url, out, seconds, action_at, thumb):
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        frames, times, tasks, result = [], [], [], {}
        t0 = time.monotonic()

        async def record(track, video):
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if video:
                    rgb = frame.to_ndarray(format="rgb24")
                    result["size"] = [frame.width, frame.height]
                    frames.append(cv2.resize(rgb, (thumb, thumb), interpolation=cv2.INTER_AREA))
                    times.append(time.monotonic() - t0)

        @pc.on("track")
        def on_track(track):
            tasks.append(asyncio.ensure_future(record(track, track.kind == "video")))

        async with aiohttp.ClientSession(url) as http:
            await pc.setLocalDescription(await pc.createOffer())
            offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
            async with http.post("/offer", json=offer) as resp:
                answer = await resp.json()
            sid = answer["sessionid"]
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
            t0 = time.monotonic()
            await asyncio.sleep(action_at)
            route = f"/api/v1/sessions/{sid}/action"
            async with http.post(route, json={"name": "wave"}) as resp:
                result["action"] = [resp.status, await resp.json(), time.monotonic() - t0]
            async with http.post(route, json={"name": "moonwalk"}) as resp:
                result["unknown"] = [resp.status, await resp.json()]
            async with http.get(f"/api/v1/sessions/{sid}") as resp:
                result["state"] = await resp.json()
            await asyncio.sleep(seconds - action_at)
            for task in tasks:
                task.cancel()
            await pc.close()
        np.savez(out, frames=np.stack(frames), times=np.array(times))
        print(json.dumps(result))

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])))
""")


def _nearest_footage(received: np.ndarray, footage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each received thumbnail: the footage frame it is closest to, and that distance (RMS)."""
    a = received.reshape(len(received), -1).astype(np.float32)
    b = footage.reshape(len(footage), -1).astype(np.float32)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    rms = np.sqrt(np.maximum(d2, 0) / a.shape[1])
    return rms.argmin(axis=1), rms.min(axis=1)


def test_graph_avatar_streams_planned_footage_and_plays_an_action(tmp_path):
    avatars, models = tmp_path / "avatars", tmp_path / "models"
    models.mkdir()
    footage = make_motion_footage(16.0, size=256, seed=3)
    write_motion_avatar(avatars / "mover", footage, name="mover", actions={"wave": list(ACTION)})
    torch.manual_seed(0)
    network = build_wav2lip("96")
    calibrate_batchnorm(network, 96, (1, 80, 16))
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}},
               models / "wav2lip.pth")
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    out = tmp_path / "received.npz"

    with live_server(tmp_path, "--model", "wav2lip", "--avatar", "mover", "--avatars-dir", str(avatars),
                     "--models-dir", str(models), "--asr", "off") as server:
        status, avatar = server.get("/api/v1/avatar")
        assert status == 200 and avatar["actions"] == ["wave"], avatar
        done = server.run_python([str(client), server.url, str(out), str(SECONDS), str(ACTION_AT),
                                  str(THUMB)], timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        log = server.log()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["size"] == [256, 256]
    assert result["action"][0] == 200, result
    status, body = result["unknown"]
    assert status == 400 and "wave" in body["msg"], body
    assert result["state"]["actions"] == ["wave"], result["state"]
    assert "event=action" in log and "name=wave" in log

    received = np.load(out)
    times, thumbs = received["times"], received["frames"]
    assert len(thumbs) >= 0.8 * 25 * SECONDS, len(thumbs)  # frames arrive at the stream's pace
    small = np.stack([cv2.resize(f, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for f in footage.frames])
    index, distance = _nearest_footage(thumbs, small)
    # every picture is footage (blends sit between two close frames): nothing else is drawn
    assert np.median(distance) < 6.0, np.percentile(distance, [50, 90, 99])
    # The action's frames play after it is asked for, long before the loop could reach them.
    asked = result["action"][2]
    after = index[(times >= asked) & (times < asked + 4.0)]
    in_clip = np.unique(after[(after >= ACTION[0]) & (after < ACTION[1])])
    assert len(in_clip) >= 20, (in_clip, after)
    # ... and in order: the clip plays forward (a blend into it may cost its first frames)
    played = after[(after >= ACTION[0]) & (after < ACTION[1])]
    assert (np.diff(played) >= 0).mean() > 0.9, played
