"""A session drives a video avatar's body: footage picks in every lip-sync request, actions from the
API, from LiveTalking's /set_audiotype and from tags in the spoken text, and barge-in replanning."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from livedh.avatar.actions import audiotype_action, match_actions, split_action_tags
from livedh.avatar.motion import ActionClip, FootagePick, MotionLibrary
from livedh.avatar.motion_graph import MotionGraphConfig, build_motion_graph
from livedh.avatar.planner import ACTION
from livedh.config import SessionConfig
from livedh.errors import InvalidInputError
from livedh.lipsync.base import LipSyncRequest
from livedh.lipsync.engine import LipSyncEngine
from livedh.media.clock import MediaClock
from livedh.server.app import create_app
from livedh.server.services import Services
from livedh.session.manager import SessionManager
from livedh.session.motion import BodyMotion, push_held
from livedh.session.playout import PlayoutBuffer
from livedh.session.session import Session
from tests.fakes import LoudnessModel, ManualClock, make_fake_tts, make_inline_lipsync, tone
from tests.test_server import FakeRegistry, _config, _error, _open, offer_sdp  # noqa: F401
from tests.test_session import ScriptedLLM, _consume, _run_clock

FRAMES = 120
ACTIONS = (ActionClip("wave", 40, 60), ActionClip("bye", 70, 90))


def _library(actions: tuple[ActionClip, ...] = ACTIONS) -> MotionLibrary:
    """A real motion graph of synthetic footage that repeats its pose every 30 frames."""
    rng = np.random.default_rng(0)
    t = np.arange(FRAMES)
    base = rng.uniform(100, 400, (10, 2))
    dirs = rng.uniform(5, 20, (10, 2))
    kp = base[None] + np.sin(2 * np.pi * t / 30)[:, None, None] * dirs[None]
    boxes = np.tile([200.0, 100.0, 300.0, 220.0], (FRAMES, 1))
    graph = build_motion_graph(kp, np.ones((FRAMES, 10), bool), boxes, np.zeros(0, np.int64),
                               MotionGraphConfig())
    assert graph.nodes.size > 0
    return MotionLibrary(graph=graph, speech=np.zeros(FRAMES, bool), actions=actions)


class MotionModel(LoudnessModel):
    """LoudnessModel with a motion library: records the footage each request asks for."""

    def __init__(self, library: MotionLibrary | None = None) -> None:
        super().__init__()
        self.motion = library if library is not None else _library()
        self.picks: list[FootagePick | None] = []

    def infer(self, batch: Sequence[LipSyncRequest]) -> list[np.ndarray]:
        self.picks.extend(r.footage for r in batch)
        return super().infer(batch)


class SpyPlanner:
    """Wraps the session's planner: what it was asked, and at which output frame."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.levels: list[np.ndarray] = []
        self.requested: list[tuple[str, int]] = []  # (name, frame it was asked at)
        self.interrupts = 0
        self.interrupted_at: list[int] = []  # frames
        self.threads: set[str] = set()  # the threads next() ran in

    @property
    def actions(self) -> list[str]:
        return self.inner.actions

    def next(self, levels: np.ndarray) -> FootagePick:
        self.threads.add(threading.current_thread().name)
        self.levels.append(np.array(levels))
        return self.inner.next(levels)

    def request_action(self, name: str) -> None:
        self.inner.request_action(name)
        self.requested.append((name, len(self.levels)))

    def interrupt(self) -> None:
        self.interrupts += 1
        self.interrupted_at.append(len(self.levels))
        self.inner.interrupt()


class InlineExecutor(Executor):
    """Runs each call at once, in the caller's thread: with a ManualClock, a planner step then
    takes a fixed number of event-loop turns, as rendering does with make_inline_lipsync."""

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[override]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _spy(session: Session) -> SpyPlanner:
    body = session._renderer.body
    assert body is not None
    spy = SpyPlanner(body.planner if body.planner is not None else body._built.result())
    body.planner = spy  # type: ignore[assignment]
    return spy


class BodyCalls:
    """What a session's body was handed on the event loop (actions, barge-ins), before any step
    applies it: for API tests, whose sessions stream nothing."""

    def __init__(self, session: Session) -> None:
        body = session._renderer.body
        assert body is not None
        self.played: list[str] = []
        self.interrupts = 0
        play, interrupt = body.play, body.interrupt

        def played(name: str) -> None:
            play(name)
            self.played.append(name)

        def interrupted() -> None:
            interrupt()
            self.interrupts += 1

        body.play, body.interrupt = played, interrupted  # type: ignore[method-assign]


def _session(model: MotionModel, clock: ManualClock, *, threads: bool = False, **kwargs) -> Session:
    """A session rendering on the loop; its planner steps run inline too unless ``threads`` (the
    engine's own livedh-motion pool)."""
    engine = make_inline_lipsync(model)
    if not threads:
        engine.motion_executor = InlineExecutor()
    return Session(7, SessionConfig(), engine, kwargs.pop("tts", make_fake_tts()),
                   clock=MediaClock(clock, clock.sleep), **kwargs)


def _first_loud(spy: SpyPlanner) -> int:
    return next(i for i, levels in enumerate(spy.levels) if levels[0] > 0)


# -- pure parts -------------------------------------------------------------------------------------
def test_split_action_tags() -> None:
    assert split_action_tags("[wave] Hello  there [bye]!") == ("Hello there !", ["wave", "bye"])
    assert split_action_tags("[wave]") == ("", ["wave"])
    # Not tags: a citation, words with a space, an empty pair; text without tags is left as is.
    assert split_action_tags("See [1] and [see above] or []") == ("See [1] and [see above] or []", [])
    assert split_action_tags("a  b") == ("a  b", [])


def test_match_actions_and_audiotype() -> None:
    assert match_actions(["Wave", "dance", "bye"], ["wave", "bye"]) == (["wave", "bye"], ["dance"])
    names = ["wave", "bye"]
    assert [audiotype_action(k, names) for k in (0, 1, 2, 3)] == [None, None, "wave", "bye"]
    with pytest.raises(InvalidInputError, match="2=wave, 3=bye"):
        audiotype_action(4, names)
    with pytest.raises(InvalidInputError, match="has no actions"):
        audiotype_action(2, [])
    assert audiotype_action(1, []) is None


def test_playout_upcoming_and_cues() -> None:
    playout = PlayoutBuffer(640)
    start = playout.push(tone(0.1))  # 1600 samples
    assert start == 0 and playout.end == 1600
    playout.cue(("wave",), at=700)
    ahead = playout.upcoming(1000)
    assert len(ahead) == 1000 and len(playout) == 1600  # not consumed
    assert np.array_equal(ahead, playout.upcoming(5000)[:1000]) and len(playout.upcoming(5000)) == 1600
    playout.take(640)
    assert playout.due_cues() == []  # sample 700 is not played yet
    playout.take(640)
    assert playout.due_cues() == ["wave"] and playout.due_cues() == []
    playout.cue(("bye",))
    playout.clear()  # barge-in drops the cues with the speech
    playout.take(640)
    assert playout.due_cues() == []


def test_push_held_cues_each_chunk_where_it_starts() -> None:
    playout = PlayoutBuffer(640)
    push_held(playout, [tone(0.05), tone(0.05)], [(1, ("wave",)), (2, ("bye",))], at=1000)
    assert playout.end == 1000 + 1600
    playout.take(1000 + 800)  # up to the sample before chunk 1
    assert playout.due_cues() == []
    playout.take(1)
    assert playout.due_cues() == ["wave"]
    playout.take(799)
    assert playout.due_cues() == []
    playout.take(1)  # "bye" was cued after all the chunks
    assert playout.due_cues() == ["bye"]


# -- a session --------------------------------------------------------------------------------------
async def test_requests_carry_footage_picks_planned_on_buffered_speech() -> None:
    clock = ManualClock()
    model = MotionModel()
    session = _session(model, clock)
    spy = _spy(session)
    assert session.state().actions == ["wave", "bye"]
    consumer = asyncio.create_task(_consume(session, 40))
    await _run_clock(clock, seconds=0.2)
    session.say("hello there, this is a test")
    await _run_clock(clock, until=consumer)
    await consumer
    assert model.picks and all(p is not None for p in model.picks)
    nodes = set(model.motion.graph.nodes.tolist())
    assert {p.index for p in model.picks if p is not None} <= nodes
    loud = _first_loud(spy)
    assert loud > 0 and not any(levels.any() for levels in spy.levels[:loud])
    # The planner sees the speech buffered after this frame, not only this frame's.
    assert len(spy.levels[loud]) > 1 and spy.levels[loud][1:].max() > 0
    await session.aclose()


async def test_a_tag_is_not_spoken_and_starts_its_action_when_its_sentence_plays() -> None:
    clock = ManualClock()
    tts = make_fake_tts()
    session = _session(MotionModel(), clock, tts=tts)
    spy = _spy(session)
    events: list[dict] = []
    session.emit = events.append
    consumer = asyncio.create_task(_consume(session, 50))
    await _run_clock(clock, seconds=0.2)
    session.say("hello there, this is a test")  # 27 chars: 8640 samples, 13.5 frames
    session.say("[wave] And [dance] now!")
    await _run_clock(clock, until=consumer)
    await consumer
    assert tts.calls == ["hello there, this is a test", "And now!"]
    assert [e["text"] for e in events if e["type"] == "subtitle"] == tts.calls
    # "wave" starts with the frame that plays the second sentence's first sample; "dance" is
    # no action of this avatar: dropped.
    assert spy.requested == [("wave", _first_loud(spy) + 13)]
    await session.aclose()


async def test_a_sentence_of_tags_only_speaks_nothing_and_still_acts() -> None:
    clock = ManualClock()
    tts = make_fake_tts()
    session = _session(MotionModel(), clock, tts=tts)
    spy = _spy(session)
    consumer = asyncio.create_task(_consume(session, 20))
    await _run_clock(clock, seconds=0.2)
    session.say("[bye]")
    session.say("[nothing]")  # unknown only: nothing to do
    await _run_clock(clock, until=consumer)
    await consumer
    assert tts.calls == []
    assert [name for name, _ in spy.requested] == ["bye"]
    await session.aclose()


async def test_chat_answers_carry_tags_too() -> None:
    from livedh.llm.base import ChatLLM
    from livedh.llm.history import ChatHistory

    ChatLLM.register(ScriptedLLM)
    clock = ManualClock()
    tts = make_fake_tts()
    llm = ScriptedLLM("[wave] Hello to you. Nice to meet you! [bye]", sleep=clock.sleep)
    session = _session(MotionModel(), clock, tts=tts, llm=llm, history=ChatHistory("hi", 10))
    spy = _spy(session)
    consumer = asyncio.create_task(_consume(session, 60))
    await session.chat("hi")
    await _run_clock(clock, until=consumer)
    await consumer
    assert tts.calls == ["Hello to you.", "Nice to meet you!"]
    assert [name for name, _ in spy.requested] == ["wave", "bye"]
    await session.aclose()


async def test_interrupt_replans_and_drops_the_actions_of_dropped_speech() -> None:
    clock = ManualClock()
    session = _session(MotionModel(), clock)
    spy = _spy(session)
    consumer = asyncio.create_task(_consume(session, 40))
    await _run_clock(clock, seconds=0.1)
    session.say("a sentence long enough to be interrupted before it ends")
    session.say("[wave] never heard")
    await _run_clock(clock, seconds=0.2)
    frame = len(spy.levels)
    session.interrupt()
    assert spy.interrupts == 0  # handed over to the next step, not done on the event loop
    assert session.playout.due_cues() == [] and len(session.playout) == 0
    await _run_clock(clock, until=consumer)
    await consumer
    assert spy.interrupted_at == [frame]  # applied before the very next frame was planned
    assert spy.requested == []
    await session.aclose()


async def test_planner_is_built_and_stepped_off_the_event_loop(monkeypatch) -> None:
    import livedh.session.motion as motion_module

    built_in: list[str] = []

    class Recording(motion_module.MotionPlanner):
        def __init__(self, *args, **kwargs) -> None:
            built_in.append(threading.current_thread().name)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(motion_module, "MotionPlanner", Recording)
    clock = ManualClock()
    session = _session(MotionModel(), clock, threads=True)
    engine = session._renderer._lipsync
    spy = _spy(session)
    consumer = asyncio.create_task(_consume(session, 10))
    session.say("hello there")
    while not consumer.done():
        await _run_clock(clock, seconds=0.04)
        await asyncio.sleep(0.005)  # the step's thread reports back (nothing asserted on time)
    await consumer
    loop_thread = threading.current_thread().name
    assert built_in and all(name.startswith("livedh-motion") for name in built_in)
    assert len(spy.levels) >= 10
    assert spy.threads and all(name.startswith("livedh-motion") for name in spy.threads), spy.threads
    assert loop_thread not in spy.threads
    await session.aclose()
    await engine.aclose()
    assert not any(t.name.startswith("livedh-motion") for t in threading.enumerate())


def test_actions_and_barge_in_are_handed_to_the_next_step() -> None:
    body = BodyMotion(1, _library(), 640, seed=0, executor=InlineExecutor())
    spy = SpyPlanner(body._built.result())
    body.planner = spy  # type: ignore[assignment]
    body.step(np.zeros(1, np.float32))
    body.play("wave")
    assert spy.requested == []  # checked where it arrives, applied by the step
    with pytest.raises(InvalidInputError, match="wave, bye"):
        body.play("dance")  # an unknown name is refused at once (the API's 400)
    body.step(np.zeros(1, np.float32))
    assert spy.requested == [("wave", 1)] and ACTION in spy.inner.plan_modes
    body.play("bye")
    body.interrupt()  # a barge-in drops what was asked before it ...
    body.step(np.zeros(1, np.float32))
    assert spy.requested == [("wave", 1)] and spy.interrupted_at == [2]
    assert ACTION not in spy.inner.plan_modes
    body.interrupt()
    body.play("bye")  # ... not what is asked after it
    body.play("wave")  # and the last request wins, as it would on the planner itself
    body.step(np.zeros(1, np.float32))
    assert spy.interrupted_at == [2, 3] and spy.requested == [("wave", 1), ("wave", 3)]
    body.step(np.zeros(1, np.float32))
    assert spy.interrupted_at == [2, 3] and len(spy.requested) == 2  # each hand-off applies once


async def test_play_action_without_motion_is_refused() -> None:
    clock = ManualClock()
    session = Session(8, SessionConfig(), make_inline_lipsync(LoudnessModel()), make_fake_tts(),
                      clock=MediaClock(clock, clock.sleep))
    assert session.actions == [] and session.state().actions == []
    with pytest.raises(InvalidInputError, match="has no actions"):
        session.play_action("wave")
    session.say("[wave] hello")  # a tag naming nothing is dropped: the text is still spoken
    assert session._speaker.queued == 1
    await session.aclose()


# -- the HTTP API ----------------------------------------------------------------------------------
def _services_factory(model):
    async def make(config) -> Services:
        engine = LipSyncEngine(model)
        tts = FakeRegistry()
        return Services(config, tts, engine, SessionManager(config, engine, tts))  # type: ignore[arg-type]

    return make


async def test_actions_api_and_set_audiotype(offer_sdp) -> None:  # noqa: F811
    app = create_app(_config(max_sessions=2), _services_factory(MotionModel()))
    async with TestClient(TestServer(app)) as client:
        sid = await _open(client, offer_sdp)
        session = app[_services_key()].sessions.get(sid)
        spy = BodyCalls(session)
        state = await (await client.get(f"/api/v1/sessions/{sid}")).json()
        assert state["actions"] == ["wave", "bye"]
        assert (await (await client.get("/api/v1/avatar")).json())["actions"] == ["wave", "bye"]
        resp = await client.post(f"/api/v1/sessions/{sid}/action", json={"name": "wave"})
        assert resp.status == 200, await resp.text()
        msg = await _error(await client.post(f"/api/v1/sessions/{sid}/action", json={"name": "dance"}), 400)
        assert "wave, bye" in msg
        await _error(await client.post(f"/api/v1/sessions/{sid}/action", json={"name": 3}), 400)
        await _error(await client.post(f"/api/v1/sessions/{sid}/action", json={"name": "wave", "x": 1}), 400)
        await _error(await client.post(f"/api/v1/sessions/{sid}/action", data="name=wave"), 415)
        for audiotype in (3, "2", 1):
            resp = await client.post("/set_audiotype",
                                     json={"sessionid": sid, "audiotype": audiotype, "reinit": True})
            assert resp.status == 200, await resp.text()
        assert spy.played == ["wave", "bye", "wave"]
        assert spy.interrupts == 1  # audiotype 1: back to the plain motion
        msg = await _error(await client.post("/set_audiotype", json={"sessionid": sid, "audiotype": 4}), 400)
        assert "2=wave, 3=bye" in msg
        for bad in (-1, "x", True, None, 2.5):
            await _error(await client.post("/set_audiotype", json={"sessionid": sid, "audiotype": bad}), 400)
        await _error(await client.post("/set_audiotype", json={"sessionid": 1, "audiotype": 2}), 404)
        assert (await client.post("/record", json={"sessionid": sid})).status == 501


async def test_actions_api_on_an_avatar_without_motion(offer_sdp) -> None:  # noqa: F811
    app = create_app(_config(max_sessions=2), _services_factory(LoudnessModel()))
    async with TestClient(TestServer(app)) as client:
        sid = await _open(client, offer_sdp)
        assert (await (await client.get(f"/api/v1/sessions/{sid}")).json())["actions"] == []
        assert (await (await client.get("/api/v1/avatar")).json())["actions"] == []
        msg = await _error(await client.post(f"/api/v1/sessions/{sid}/action", json={"name": "wave"}), 400)
        assert msg == "this avatar has no actions"
        msg = await _error(await client.post("/set_audiotype", json={"sessionid": sid, "audiotype": 2}), 400)
        assert msg == "this avatar has no actions"
        resp = await client.post("/set_audiotype", json={"sessionid": sid, "audiotype": 0})
        assert resp.status == 200


def _services_key():
    from livedh.server.services import SERVICES

    return SERVICES


# -- the page ---------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no playwright")
@pytest.mark.timeout(120)
async def test_the_page_shows_a_button_per_action_that_plays_it() -> None:
    from playwright.async_api import async_playwright

    app = create_app(_config(max_sessions=2), _services_factory(MotionModel()))
    async with TestServer(app, host="127.0.0.1") as server, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=shutil.which("chromium"),
                                          args=["--use-fake-ui-for-media-stream", "--no-sandbox"])
        page = await browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(str(server.make_url("/")))
        assert await page.eval_on_selector("#actions-box", "e => e.hidden")
        await page.select_option("#mic", "off")
        await page.click("#start")
        await page.wait_for_selector("#actions button[data-action=bye]", timeout=20_000)
        names = await page.eval_on_selector_all("#actions button", "bs => bs.map(b => b.textContent)")
        assert names == ["wave", "bye"]
        spy = BodyCalls(app[_services_key()].sessions.get(await page.evaluate("window.livedh.sessionid")))
        await page.click("#actions button[data-action=bye]")
        for _ in range(100):
            if spy.played:
                break
            await asyncio.sleep(0.05)
        assert spy.played == ["bye"]
        await page.click("#stop")
        await page.wait_for_function("document.getElementById('actions-box').hidden")
        assert errors == []
        await browser.close()
