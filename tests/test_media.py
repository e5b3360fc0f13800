import asyncio

import numpy as np
import pytest

from livedh.errors import InvalidInputError, UnsupportedMediaError
from livedh.media.channel import AVChannel, AVFrame, ChannelClosed
from livedh.media.clock import MediaClock
from livedh.media.pcm import PcmChunk, StreamResampler, decode_audio_bytes
from livedh.session.playout import PlayoutBuffer
from tests.fakes import tone


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_clock_deadlines_are_absolute():
    fake = FakeTime()
    clock = MediaClock(now=fake)
    assert not clock.started
    assert clock.start() == 100.0
    fake.now = 105.0
    assert clock.start() == 100.0  # starting again keeps the first start
    assert clock.deadline(0.04 * 10) == pytest.approx(100.4)
    # Already past the deadline: no sleep, lateness reported.
    assert await clock.wait_until(0.4) == pytest.approx(4.6)


async def test_clock_waits_for_pts():
    clock = MediaClock()
    clock.start()
    late = await clock.wait_until(0.05)
    assert clock.elapsed() >= 0.05
    assert late >= 0


def _frame(i: int, level: int) -> AVFrame:
    return AVFrame(i, np.zeros((4, 4, 3), np.uint8), np.full(640, level, np.int16), level > 0)


async def test_channel_splits_audio_into_20ms_blocks_with_frame_aligned_indices():
    channel = AVChannel(MediaClock(), fps=25, sample_rate=16000)
    channel.put(_frame(0, 0))
    channel.put(_frame(1, 7))
    video = await channel.next_video()
    assert video.index == 0
    blocks = [await channel.next_audio() for _ in range(4)]
    assert [i for i, _ in blocks] == [0, 1, 2, 3]
    # Blocks 2 and 3 (40-80 ms) are frame 1's audio: same time span as video frame 1.
    assert all(len(b) == 320 for _, b in blocks)
    assert not blocks[1][1].any() and (blocks[2][1] == 7).all()


async def test_channel_barge_in_silences_pending_audio():
    channel = AVChannel(MediaClock(), fps=25, sample_rate=16000)
    for i in range(3):
        channel.put(_frame(i, 1000))
    assert channel.pending_speech()
    assert channel.silence_pending_audio() == 6
    assert not channel.pending_speech()
    _, block = await channel.next_audio()
    assert not block.any()


async def test_channel_is_bounded_and_closes():
    channel = AVChannel(MediaClock(), fps=25, sample_rate=16000, max_frames=5)
    for i in range(20):
        channel.put(_frame(i, 0))
    assert (await channel.next_video()).index == 15
    index, _ = await channel.next_audio()
    assert index == 30  # dropped audio keeps its place on the clock
    waiter = asyncio.create_task(channel.next_video())
    for _ in range(4):
        await channel.next_video()
    await asyncio.sleep(0)
    channel.close()
    with pytest.raises(ChannelClosed):
        await waiter


def test_channel_rejects_fps_that_splits_a_block():
    with pytest.raises(ValueError):
        AVChannel(MediaClock(), fps=20, sample_rate=16000)


def test_playout_take_and_window():
    buf = PlayoutBuffer(history_samples=1000)
    buf.push(np.arange(1, 501, dtype=np.int16))
    buf.push(np.arange(501, 1001, dtype=np.int16))
    block, had = buf.take(640)
    assert had and block[0] == 1 and block[-1] == 640
    assert len(buf) == 360
    window = buf.window(800, lookahead=100)
    assert window[-1] == 740 and window[-101] == 640
    block, had = buf.take(640)
    assert had and block[359] == 1000 and not block[360:].any()
    block, had = buf.take(640)
    assert not had and not block.any()
    buf.push(tone(0.1))
    buf.clear()
    assert len(buf) == 0


def test_playout_starts_speech_at_a_given_stream_sample():
    """push(at=n): silence until stream sample n, then the speech, sample-exact; the blocks
    before it are not speech. Without a queue to follow, an ``at`` already past plays next."""
    buf = PlayoutBuffer(history_samples=1000)
    buf.take(640)
    assert buf.position == 640
    buf.push(np.full(100, 7, np.int16), at=2000)
    buf.push(np.full(100, 9, np.int16), at=5000)  # something is queued: it follows at once
    block, had = buf.take(640)  # samples 640-1279
    assert not had and not block.any()
    block, had = buf.take(640)  # 1280-1919
    assert not had and not block.any()
    block, had = buf.take(640)  # 1920-2559: the speech starts 80 samples in
    assert had and not block[:80].any()
    assert (block[80:180] == 7).all() and (block[180:280] == 9).all() and not block[280:].any()
    assert len(buf) == 0 and buf.position == 2560
    buf.push(np.full(100, 5, np.int16), at=1000)  # already past: next
    block, had = buf.take(640)
    assert had and (block[:100] == 5).all()
    buf.push(np.full(100, 5, np.int16), at=10000)
    assert len(buf) > 100
    buf.clear()  # the timed start goes with the speech
    assert len(buf) == 0
    block, had = buf.take(640)
    assert not had and not block.any()


def test_resampler_keeps_duration_across_chunks():
    resampler = StreamResampler(16000)
    src = tone(1.0, rate=22050)
    out = [resampler.push(PcmChunk(part, 22050)) for part in np.array_split(src, 7)]
    out.append(resampler.flush())
    total = sum(len(o) for o in out)
    assert abs(total - 16000) < 50


def _wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def test_decode_wav_upload_resamples_to_16k():
    samples = decode_audio_bytes(_wav_bytes(tone(0.5, rate=8000), 8000))
    assert abs(len(samples) - 8000) < 50
    assert np.abs(samples).max() > 1000


@pytest.mark.parametrize("data", [b"", b"not audio at all" * 10, b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_decode_rejects_bad_uploads(data):
    with pytest.raises((InvalidInputError, UnsupportedMediaError)):
        decode_audio_bytes(data)


def test_trim_leading_silence_keeps_a_short_lead_in():
    from livedh.media.pcm import trim_leading_silence

    samples = np.concatenate([np.zeros(1600, np.int16), tone(0.1)[100:]])
    trimmed = trim_leading_silence(samples, keep=160)
    assert len(trimmed) == len(samples) - 1600 + 160
    assert len(trim_leading_silence(np.zeros(500, np.int16))) == 0


async def test_microphone_packets_are_decoded_as_they_arrive():
    """aiortc's audio receiver decodes a packet only once 4 more have arrived (80 ms); the
    server's microphone receiver hands on each packet at once, in order, dropping duplicates
    and packets that come after a later one."""
    from aiortc import RTCPeerConnection
    from aiortc.rtp import RtpPacket

    from livedh.transport.webrtc import PacketJitterBuffer, WebRTCPeer, use_packet_jitter_buffer

    def packet(seq: int) -> RtpPacket:
        p = RtpPacket(payload_type=111, sequence_number=seq % 65536, timestamp=seq * 960)
        p._data = f"opus{seq}".encode()  # the receiver's depayloaded payload
        return p

    def packets_until_first_frame(buffer) -> int:
        for seq in range(10):
            _, frame = buffer.add(packet(seq))
            if frame is not None:
                return seq
        return -1

    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio").receiver
        assert packets_until_first_frame(receiver._RTCRtpReceiver__jitter_buffer) == 4
        assert use_packet_jitter_buffer(receiver)
        assert packets_until_first_frame(receiver._RTCRtpReceiver__jitter_buffer) == 0
        assert not use_packet_jitter_buffer(object())  # not an aiortc receiver: untouched
    finally:
        await pc.close()

    buffer = PacketJitterBuffer()
    handed = []
    for seq in [65534, 65535, 0, 0, 65535, 2, 1, 3]:  # wraps; a duplicate; late ones
        _, frame = buffer.add(packet(seq))
        if frame is not None:
            handed.append((frame.data, frame.timestamp))
    assert handed == [(f"opus{s}".encode(), s * 960) for s in [65534, 65535, 0, 2, 3]]

    # The peer applies it to the transceiver that receives the microphone.
    from livedh.media.channel import AVChannel
    from livedh.media.clock import MediaClock

    peer = WebRTCPeer(AVChannel(MediaClock(), 25, 16000))
    offer_pc = RTCPeerConnection()
    try:
        offer_pc.addTransceiver("video", direction="recvonly")
        offer_pc.addTransceiver("audio", direction="sendrecv")
        await offer_pc.setLocalDescription(await offer_pc.createOffer())
        await peer.accept(offer_pc.localDescription.sdp, "offer")
        audio = next(t for t in peer._pc.getTransceivers() if t.kind == "audio")
        assert isinstance(audio.receiver._RTCRtpReceiver__jitter_buffer, PacketJitterBuffer)
    finally:
        await offer_pc.close()
        await peer.aclose()


def test_opus_encoder_one_packet_per_block_timed_by_index():
    """Our Opus encoder: a 16 kHz tone in 20 ms blocks -> one packet each, RTP time from the
    block index; aiortc's decoder (what a client runs) gets the tone back."""
    from aiortc.codecs.opus import OpusDecoder
    from aiortc.jitterbuffer import JitterFrame

    from livedh.transport.encoding import OpusEncoder

    encoder = OpusEncoder(16000, 320)
    audio = tone(1.0, 16000, freq=440.0, amp=0.3)
    blocks = [audio[i : i + 320] for i in range(0, len(audio), 320)]
    packets = []
    for first in range(0, len(blocks), 2):
        packets += encoder.encode(100 + first, blocks[first : first + 2])
    assert len(packets) == len(blocks)
    assert [p.pts for p in packets] == [(100 + i) * 960 for i in range(len(blocks))]
    assert all(p.size < 200 for p in packets)  # ~32 kbit/s, not aiortc's 96 kbit/s stereo
    decoder = OpusDecoder()
    decoded = np.concatenate([
        frame.to_ndarray().reshape(-1, 2)[:, 0]
        for p in packets for frame in decoder.decode(JitterFrame(bytes(p), 0))
    ]).astype(np.float64)
    # 48 kHz out: the 440 Hz tone dominates the spectrum of the decoded audio.
    spectrum = np.abs(np.fft.rfft(decoded[9600:]))
    peak_hz = np.argmax(spectrum) * 48000 / len(decoded[9600:])
    assert abs(peak_hz - 440) < 5, peak_hz


async def test_channel_hands_out_ready_audio_blocks_in_order():
    channel = AVChannel(MediaClock(), 25, 16000)
    for i in range(2):
        channel.put(AVFrame(i, np.zeros((4, 4, 3), np.uint8), np.full(640, i + 1, np.int16), False))
    first, blocks = await channel.next_audio_blocks(3)
    assert first == 0 and [int(b[0]) for b in blocks] == [1, 1, 2]
    assert all(len(b) == 320 for b in blocks)
    index, block = await channel.next_audio()
    assert index == 3 and int(block[0]) == 2
