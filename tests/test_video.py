"""Tests for framefusion.video: sampling helpers, both decoders, rotation, VFR and every error."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from framefusion.video import (
    DEFAULT_NUM_FRAMES,
    VideoClip,
    VideoError,
    check_sampling,
    load_video,
    probe_video,
    rotate_upright,
    sample_indices,
    span_seconds,
    write_video,
)

DECODERS = ["av", "decord"]
COUNT, HEIGHT, WIDTH, FPS = 30, 64, 96, 10.0
LEVEL0, LEVEL_STEP = 16, 7  # frame i is flat grey LEVEL0 + LEVEL_STEP * i, so it can be identified


def numbered_frames(count: int = COUNT, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Flat grey frames [T, H, W, 3] whose brightness encodes their index."""
    levels = (LEVEL0 + LEVEL_STEP * np.arange(count)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def frame_ids(frames: np.ndarray) -> np.ndarray:
    """Recover the index of each numbered frame [T, H, W, 3] after compression."""
    brightness = frames.reshape(len(frames), -1).mean(axis=1)  # [T]
    return np.round((brightness - LEVEL0) / LEVEL_STEP).astype(int)


# ---------------------------------------------------------------- pure helpers


def test_sample_indices_num_frames_takes_slot_centres():
    times = np.arange(100) / 10.0
    assert sample_indices(times, 10.0, num_frames=10).tolist() == list(range(5, 100, 10))


def test_sample_indices_fps_one_frame_per_period():
    times = np.arange(100) / 10.0
    assert sample_indices(times, 10.0, fps=2).tolist() == list(range(2, 100, 5))
    assert len(sample_indices(times, 10.0, fps=0.5)) == 5


def test_sample_indices_default_count():
    assert len(sample_indices(np.arange(100) / 10.0, 10.0)) == DEFAULT_NUM_FRAMES


def test_sample_indices_never_repeats_a_frame():
    assert sample_indices(np.arange(5) / 10.0, 0.5, num_frames=16).tolist() == [0, 1, 2, 3, 4]


def test_sample_indices_caps_uniformly_at_max_frames():
    picked = sample_indices(np.arange(100) / 10.0, 10.0, fps=10, max_frames=8)
    assert len(picked) == 8
    assert np.all(np.diff(picked) > 0)
    assert picked[0] < 13 and picked[-1] > 87


def test_sample_indices_follows_timestamps_not_frame_count():
    times = [0.0, 0.1, 0.15, 1.0, 1.05, 2.0]  # variable frame rate
    # targets 0.35, 1.05, 1.75 s: frames on screen then are 2 (from 0.15), 4 (from 1.05), 4
    assert sample_indices(times, 2.1, num_frames=3).tolist() == [2, 4]


def test_span_seconds():
    assert span_seconds(np.arange(30) / 10.0) == pytest.approx(3.0)
    assert span_seconds([0.0, 0.1, 0.2, 0.5]) == pytest.approx(0.6)
    assert span_seconds([0.0], nominal_fps=25) == pytest.approx(0.04)
    assert span_seconds([0.0]) == 0.0


@pytest.mark.parametrize(
    "rotation, corner",
    [(90, (-1, 0)), (180, (-1, -1)), (-90, (0, -1)), (270, (0, -1)), (-180, (-1, -1))],
)
def test_rotate_upright_turns_counter_clockwise(rotation, corner):
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[0, 0] = 255  # mark the top-left corner
    turned = rotate_upright(frame[None], rotation)[0]
    assert turned.shape == ((6, 4, 3) if rotation % 180 else (4, 6, 3))
    assert turned[corner].tolist() == [255, 255, 255]
    assert turned.sum() == 3 * 255


def test_rotate_upright_zero_is_a_no_op():
    frames = np.zeros((2, 4, 6, 3), np.uint8)
    assert rotate_upright(frames, 0) is frames


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_frames": 0}, "num_frames must be positive"),
        ({"num_frames": -3}, "num_frames must be positive"),
        ({"fps": 0}, "fps must be positive"),
        ({"fps": -1.5}, "fps must be positive"),
        ({"max_frames": 0}, "max_frames must be positive"),
        ({"num_frames": 4, "fps": 2}, "not both"),
    ],
)
def test_check_sampling_rejects(kwargs, message):
    args = {"num_frames": None, "fps": None, "max_frames": 128, **kwargs}
    with pytest.raises(VideoError, match=message):
        check_sampling(**args)


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A set of small test videos written once for the module."""
    folder = tmp_path_factory.mktemp("videos")
    frames = numbered_frames()
    rng = np.random.default_rng(0)
    vfr_times = np.cumsum(np.r_[0.0, rng.uniform(0.02, 0.4, COUNT - 1)]).round(3)
    upright = np.zeros((6, HEIGHT, WIDTH, 3), np.uint8)
    upright[:, : HEIGHT // 2, : WIDTH // 3] = (220, 30, 30)  # red block top-left when upright
    return {
        "cfr": write_video(folder / "cfr.mp4", frames, FPS),
        "mpeg4": write_video(folder / "mpeg4.mp4", frames, FPS, codec="mpeg4"),
        "vfr": write_video(folder / "vfr.mp4", frames, FPS, timestamps=vfr_times),
        "vfr_times": vfr_times,
        # Stored sideways; the display matrix turns it 90 degrees counter-clockwise to upright.
        "rotated": write_video(
            folder / "rotated.mp4", rotate_upright(upright, -90), FPS, rotation=90
        ),
        "upright": upright,
        "folder": folder,
    }


def test_write_video_makes_h264_and_mpeg4(videos):
    assert probe_video(videos["cfr"]).codec == "h264"
    assert probe_video(videos["mpeg4"]).codec == "mpeg4"


def test_probe_video(videos):
    info = probe_video(videos["cfr"])
    assert (info.width, info.height, info.num_frames, info.rotation) == (WIDTH, HEIGHT, COUNT, 0)
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(COUNT / FPS)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", ["cfr", "mpeg4"])
def test_decoders_read_every_frame(videos, decoder, name):
    clip = load_video(videos[name], num_frames=COUNT, decoder=decoder)
    assert isinstance(clip, VideoClip)
    assert clip.frames.shape == (COUNT, HEIGHT, WIDTH, 3) and clip.frames.dtype == np.uint8
    assert frame_ids(clip.frames).tolist() == list(range(COUNT))
    np.testing.assert_allclose(clip.timestamps, np.arange(COUNT) / FPS, atol=1e-4)
    assert np.all(np.diff(clip.timestamps) > 0)
    assert clip.fps == pytest.approx(FPS, rel=1e-4)
    assert clip.duration == pytest.approx(COUNT / FPS, rel=1e-4)
    assert clip.source == str(videos[name])


@pytest.mark.decord
@pytest.mark.parametrize("name", ["cfr", "mpeg4", "vfr", "rotated"])
@pytest.mark.parametrize(
    "sampling", [{}, {"num_frames": 7}, {"fps": 3.0}, {"fps": 50.0, "max_frames": 5}]
)
def test_decoders_agree(videos, name, sampling):
    by_av = load_video(videos[name], decoder="av", **sampling)
    by_decord = load_video(videos[name], decoder="decord", **sampling)
    assert by_av.frames.shape == by_decord.frames.shape
    np.testing.assert_allclose(by_av.timestamps, by_decord.timestamps, atol=1e-4)
    difference = np.abs(by_av.frames.astype(np.int16) - by_decord.frames.astype(np.int16))
    assert difference.mean() < 2.0
    assert by_av.duration == pytest.approx(by_decord.duration, rel=1e-4)


@pytest.mark.parametrize("decoder", DECODERS)
def test_num_frames_and_fps_sampling(videos, decoder):
    eight = load_video(videos["cfr"], num_frames=8, decoder=decoder)
    # 3 s in 8 slots of 0.375 s; centres 0.1875, 0.5625, ... land on frames 1, 5, 9, ...
    assert frame_ids(eight.frames).tolist() == [1, 5, 9, 13, 16, 20, 24, 28]
    per_second = load_video(videos["cfr"], fps=2, decoder=decoder)
    assert frame_ids(per_second.frames).tolist() == [2, 7, 12, 17, 22, 27]
    np.testing.assert_allclose(per_second.timestamps, [0.2, 0.7, 1.2, 1.7, 2.2, 2.7], atol=1e-4)
    default = load_video(videos["cfr"], decoder=decoder)
    assert default.num_frames == DEFAULT_NUM_FRAMES


@pytest.mark.parametrize("decoder", DECODERS)
def test_max_frames_caps_the_clip(videos, decoder):
    clip = load_video(videos["cfr"], fps=100, max_frames=6, decoder=decoder)
    ids = frame_ids(clip.frames)
    assert clip.num_frames == 6
    assert np.all(np.diff(ids) > 0) and ids[0] <= 3 and ids[-1] >= COUNT - 4


@pytest.mark.parametrize("decoder", DECODERS)
def test_rotation_metadata_gives_upright_frames(videos, decoder):
    clip = load_video(videos["rotated"], num_frames=6, decoder=decoder)
    upright = videos["upright"]
    assert clip.frames.shape == upright.shape
    assert np.abs(clip.frames.astype(np.int16) - upright.astype(np.int16)).mean() < 4
    assert clip.frames[0, 4, 4].tolist() == pytest.approx([220, 30, 30], abs=20)


def test_probe_reports_rotation_and_upright_size(videos):
    info = probe_video(videos["rotated"])
    assert (info.rotation, info.width, info.height) == (90, WIDTH, HEIGHT)


@pytest.mark.parametrize("decoder", DECODERS)
def test_variable_frame_rate_samples_by_timestamp(videos, decoder):
    written = videos["vfr_times"]
    everything = load_video(videos["vfr"], fps=1000, decoder=decoder)  # every frame
    assert frame_ids(everything.frames).tolist() == list(range(COUNT))
    np.testing.assert_allclose(everything.timestamps, written - written[0], atol=1e-3)
    duration = span_seconds(written)
    assert everything.duration == pytest.approx(duration, abs=1e-3)
    clip = load_video(videos["vfr"], num_frames=9, decoder=decoder)
    expected = sample_indices(written, duration, num_frames=9)
    assert frame_ids(clip.frames).tolist() == expected.tolist()
    np.testing.assert_allclose(clip.timestamps, written[expected], atol=1e-3)


# ---------------------------------------------------------------- errors


def write_audio_only(path):
    """An AAC file: readable media without a video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        silence = np.zeros((1, 1024), np.float32)  # [channels, samples]
        frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_frameless(path):
    """An AVI with a video stream header and no frames."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    container.close()


def write_undecodable(path, source):
    """A copy of an mp4 whose compressed frames are zeroed: it demuxes but never decodes."""
    data = bytearray(source.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    assert 0 < start < end
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def broken(videos):
    """Files that are not loadable videos, each with the message expected."""
    folder = videos["folder"]
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is a text file, not a video\n")
    (folder / "adir.mp4").mkdir()
    write_audio_only(folder / "audio.m4a")
    write_frameless(folder / "frameless.avi")
    write_undecodable(folder / "zeroed.mp4", videos["cfr"])
    return folder


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.mp4", "video not found"),
        ("adir.mp4", "got a directory"),
        ("empty.mp4", "empty \\(0 bytes\\)"),
        ("text.mp4", "not a readable video"),
        ("audio.m4a", "no video stream"),
        ("frameless.avi", "no video frames"),
        ("zeroed.mp4", "no frame could be decoded"),
    ],
)
def test_bad_files_raise_video_error(broken, decoder, name, message):
    with pytest.raises(VideoError, match=message) as caught:
        load_video(broken / name, decoder=decoder)
    assert "\n" not in str(caught.value)
    error = caught.value  # no av or decord exception shown underneath
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.mark.parametrize(
    "name", ["missing.mp4", "empty.mp4", "text.mp4", "audio.m4a", "frameless.avi"]
)
def test_probe_bad_files_raise_video_error(broken, name):
    with pytest.raises(VideoError):
        probe_video(broken / name)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_frames": 0}, "num_frames must be positive"),
        ({"fps": 0.0}, "fps must be positive"),
        ({"fps": -2}, "fps must be positive"),
        ({"decoder": "opencv"}, "unknown decoder 'opencv'"),
    ],
)
def test_bad_requests_raise_video_error(videos, kwargs, message):
    with pytest.raises(VideoError, match=message):
        load_video(videos["cfr"], **kwargs)


def test_video_error_is_a_value_error():
    assert issubclass(VideoError, ValueError)


@pytest.mark.parametrize(
    "frames, kwargs, message",
    [
        (np.zeros((2, 63, 64, 3), np.uint8), {}, "must be even"),
        (np.zeros((2, 64, 64, 3), np.float32), {}, "uint8"),
        (np.zeros((2, 64, 64), np.uint8), {}, "uint8"),
        (np.zeros((0, 64, 64, 3), np.uint8), {}, "no frames"),
        (np.zeros((2, 64, 64, 3), np.uint8), {"fps": 0}, "fps must be positive"),
        (np.zeros((2, 64, 64, 3), np.uint8), {"timestamps": [0.5, 0.5]}, "timestamps"),
        (np.zeros((2, 64, 64, 3), np.uint8), {"timestamps": [0.0]}, "timestamps"),
    ],
)
def test_write_video_rejects(tmp_path, frames, kwargs, message):
    args = {"fps": 10, **kwargs}
    with pytest.raises(VideoError, match=message):
        write_video(tmp_path / "out.mp4", frames, **args)


def test_write_video_falls_back_to_mpeg4(tmp_path):
    path = write_video(tmp_path / "out.mp4", numbered_frames(4), 5, codec="no-such-codec")
    assert probe_video(path).codec == "mpeg4"
    assert Fraction(probe_video(path).fps).limit_denominator(100) == 5


def test_decord_missing_is_a_clear_error_naming_the_default(videos, monkeypatch):
    from framefusion.video import decord_reader

    monkeypatch.setattr(decord_reader, "decord_available", lambda: False)
    with pytest.raises(VideoError, match="decord.*not installed.*'av'"):
        load_video(videos["cfr"], decoder="decord")
    assert load_video(videos["cfr"], num_frames=2).num_frames == 2  # PyAV still works


@pytest.mark.parametrize("url", ["https://example.com/v.mp4", "http://127.0.0.1:8000/clip.mkv", "s3://bucket/a.mp4"])
def test_urls_are_refused_with_advice_to_download(url):
    with pytest.raises(VideoError, match="local video files only.*download the video first") as caught:
        load_video(url)
    assert url in str(caught.value)


DECODE_LOOP = """
import sys
import av
from framefusion.video import load_video, set_decoder_logging
set_decoder_logging(sys.argv.pop(1) == "verbose")
av.logging.set_level(av.logging.ERROR)  # what importing torchvision.io does (transformers may import it)
samplings = [{}, {"num_frames": 7}, {"fps": 3.0}, {"fps": 50.0, "max_frames": 5}]
for _ in range(50):
    for path in sys.argv[1:]:
        for sampling in samplings:
            load_video(path, decoder="av", **sampling)
print("done")
"""


@pytest.mark.parametrize("logging", ["quiet", "verbose"])
def test_threaded_decoding_never_deadlocks_on_ffmpeg_logging(videos, logging):
    """Decoding with frame threads and freeing the decoder must not hang, quiet or verbose, even after another
    library switched PyAV's Python log callback on. That callback takes the GIL inside FFmpeg's threads; with
    it, this loop deadlocked within a few hundred loads (and hung CI twice)."""
    import subprocess
    import sys

    paths = [str(videos[name]) for name in ("cfr", "mpeg4", "vfr", "rotated")]
    try:
        done = subprocess.run([sys.executable, "-c", DECODE_LOOP, logging, *paths], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"decoding ({logging}) hung: a deadlock between FFmpeg's threads and the GIL")
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]
