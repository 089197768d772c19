"""Longer, smoother and looping videos: chained segments, frame interpolation and loops.

Engine tests use the tiny random-weight pipeline; the contract tests go through a real tritonserver
with plain tritonclient (the hostile-input matrix in hostile.py covers each new input's refusals).
"""
from dataclasses import replace

import numpy as np
import pytest

from tests.support.kserve import image_bytes, infer, scalar, small, text, video_bytes
from svd_engine import GenerationCancelled, SVDEngine
from svd_engine import postprocess
from svd_engine.engine import segment_seed
from svd_engine.pipeline import EnginePipeline, uint8_frames
from tests.support.videos import decode_video, max_abs_diff

FAST = {"num_frames": 4, "num_inference_steps": 2, "width": 64, "height": 64}


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.fixture
def pipeline_calls(monkeypatch):
    """Every pipeline call's conditioning images and generated frames, recorded around the real call."""
    calls = []
    real_call = EnginePipeline.__call__

    def recording(self, image, *args, **kwargs):
        video = real_call(self, image, *args, **kwargs)
        calls.append(([np.asarray(picture) for picture in image], uint8_frames(video[0] if isinstance(video, tuple) else video)))
        return video

    monkeypatch.setattr(EnginePipeline, "__call__", recording)
    return calls


def with_color_matching(engine: SVDEngine) -> SVDEngine:
    return SVDEngine(engine.pipeline, replace(engine.config, match_segment_colors=True), engine.fast_path)


@pytest.mark.parametrize("segments", [1, 3])
@pytest.mark.parametrize("interpolate", [1, 3])
@pytest.mark.parametrize("loop", ["none", "pingpong", "crossfade"])
def test_frame_count_and_fps_of_each_combination(tiny_engine, sample_png, segments, interpolate, loop):
    request = tiny_engine.parse(sample_png, seed=4, fps=5, segments=segments, interpolate=interpolate, loop=loop, **FAST)
    [result] = tiny_engine.generate([request])
    joined = 4 + (segments - 1) * 3
    interpolated = (joined - 1) * interpolate + 1
    expected = {"none": interpolated, "pingpong": 2 * interpolated - 2, "crossfade": interpolated - interpolated // 4}[loop]
    assert result.frames.shape == (expected, 64, 64, 3) and result.fps == 5 * interpolate
    video = decode_video(result.video, "mp4")
    assert video.num_frames == expected and video.fps == pytest.approx(5 * interpolate, abs=0.3)


def test_each_segment_is_conditioned_on_the_last_frame_before_it(tiny_engine, sample_png, pipeline_calls):
    engine = tiny_engine
    [result] = engine.generate([engine.parse(sample_png, seed=9, segments=3, **FAST)])
    assert len(pipeline_calls) == 3
    frames = result.frames
    assert len(frames) == 4 + 2 * 3
    assert np.array_equal(pipeline_calls[0][0][0], np.asarray(engine.parse(sample_png, **FAST).image))
    for k in (1, 2):
        seam = k * 3  # the last frame of segment k in the joined video
        conditioning, clip = pipeline_calls[k][0][0], pipeline_calls[k][1][0]
        assert np.array_equal(conditioning, frames[seam])
        # segment k+1 joins without its first frame (its rendering of the conditioning frame)
        assert np.array_equal(frames[seam + 1:seam + 4], clip[1:])
        assert not np.array_equal(frames[seam], frames[seam + 1])


def test_color_matching_conditions_on_the_matched_frame(tiny_engine, sample_png, pipeline_calls):
    engine = with_color_matching(tiny_engine)
    [result] = engine.generate([engine.parse(sample_png, seed=9, segments=2, **FAST)])
    conditioning, clip = pipeline_calls[1][0][0], pipeline_calls[1][1][0]
    assert np.array_equal(conditioning, result.frames[3])
    matched = postprocess.match_colors(clip, result.frames[:4])
    assert np.array_equal(result.frames[4:], matched[1:])
    assert np.abs(matched.mean((0, 1, 2)) - result.frames[:4].mean((0, 1, 2))).max() < 1


def test_one_seed_reproduces_every_segment_and_the_first_segment_is_the_single_clip(tiny_engine, sample_png):
    [first], [again], [other] = (tiny_engine.generate([tiny_engine.parse(sample_png, seed=s, segments=3, **FAST)])
                                 for s in (17, 17, 18))
    assert np.array_equal(first.frames, again.frames) and first.video == again.video
    assert max_abs_diff(first.frames, other.frames) > 0
    [single] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=17, **FAST)])
    assert np.array_equal(single.frames, first.frames[:4])
    assert len({segment_seed(17, k) for k in (1, 2, 3)}) == 3 and segment_seed(17, 1) == 17


def test_progress_reports_segment_k_of_n(tiny_engine, sample_png):
    events = []
    tiny_engine.generate([tiny_engine.parse(sample_png, seed=1, segments=2, **FAST)], on_progress=events.append)
    assert [(e.segment, e.phase, e.step) for e in events] == [
        (1, "preparing", 0), (1, "denoising", 0), (1, "denoising", 1), (1, "denoising", 2), (1, "decoding", 2),
        (2, "preparing", 0), (2, "denoising", 0), (2, "denoising", 1), (2, "denoising", 2), (2, "decoding", 2),
        (2, "encoding", 2)]
    assert {e.segments for e in events} == {2}


def test_cancellation_between_and_within_segments(tiny_engine, sample_png):
    request = tiny_engine.parse(sample_png, seed=1, segments=3, **FAST)
    events = []
    [between] = tiny_engine.generate([request], on_progress=events.append,
                                     cancelled=lambda index: bool(events) and events[-1].phase == "decoding")
    assert isinstance(between, GenerationCancelled) and "segment 2" in str(between)
    assert max(e.segment for e in events) == 1
    events.clear()
    [within] = tiny_engine.generate([request], on_progress=events.append,
                                    cancelled=lambda index: bool(events) and events[-1].segment == 2 and events[-1].step >= 1)
    assert isinstance(within, GenerationCancelled) and "segment 2, after step 2" in str(within)
    assert max(e.segment for e in events) == 2


def test_segments_share_a_batch_without_changing_results(tiny_engine, sample_png, sample_rgb):
    long = tiny_engine.parse(sample_png, seed=31, segments=3, **FAST)
    short = tiny_engine.parse(sample_rgb[::-1].copy(), seed=32, **FAST)
    cancelled_one = tiny_engine.parse(sample_png, seed=33, segments=2, **FAST)
    events = []
    batched = tiny_engine.generate([short, long, cancelled_one], on_progress=events.append,
                                   cancelled=lambda index: index == 2 and bool(events) and events[-1].segment == 2)
    assert isinstance(batched[2], GenerationCancelled)
    [short_alone], [long_alone] = tiny_engine.generate([short]), tiny_engine.generate([long])
    assert max_abs_diff(short_alone.frames, batched[0].frames) <= 1
    # The first segment is as exact as any batched clip; later ones are conditioned on a frame that may
    # differ by a level, which the next segment carries on: close, not bit-equal.
    assert len(batched[1].frames) == len(long_alone.frames) == 10
    assert max_abs_diff(long_alone.frames[:4], batched[1].frames[:4]) <= 1
    assert distance(long_alone.frames, batched[1].frames) < 0.5


# --- post-processing on frames whose motion is known ---------------------------------------------


def moving_square(count: int = 6, size: int = 64) -> np.ndarray:
    frames = np.full((count, size, size, 3), 30, np.uint8)
    for i in range(count):
        frames[i, 20:36, 4 + 6 * i:20 + 6 * i] = (240, 200, 60)
    return frames


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_interpolation_keeps_originals_and_puts_new_frames_between_them(factor):
    frames = moving_square()
    smooth = postprocess.interpolate(frames, factor, fps=7)
    assert len(smooth) == (len(frames) - 1) * factor + 1
    assert all(np.array_equal(smooth[i * factor], frames[i]) for i in range(len(frames)))
    for i in range(len(frames) - 1):
        before, after = frames[i].astype(np.float32), frames[i + 1].astype(np.float32)
        for middle in smooth[i * factor + 1:(i + 1) * factor]:
            assert distance(middle, (before + after) / 2) < distance(before, after)
            assert not np.array_equal(middle, frames[i]) and not np.array_equal(middle, frames[i + 1])


def test_interpolated_generated_frames_lie_between_their_neighbours(tiny_engine, sample_png):
    [result] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=5, interpolate=2, video_format="frames", **FAST)])
    frames = result.frames.astype(np.float32)
    for i in range(1, len(frames) - 1, 2):
        assert distance(frames[i], (frames[i - 1] + frames[i + 1]) / 2) < distance(frames[i - 1], frames[i + 1])


def test_pingpong_plays_back_without_repeating_the_ends(tiny_engine, sample_png):
    [plain] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=6, **FAST)])
    [looped] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=6, loop="pingpong", **FAST)])
    assert len(looped.frames) == 2 * 4 - 2
    assert np.array_equal(looped.frames, plain.frames[[0, 1, 2, 3, 2, 1]])


def test_crossfade_leads_the_last_frame_into_the_first():
    frames = moving_square(8)
    looped = postprocess.loop(frames, "crossfade")
    assert len(looped) == 8 - 2
    assert np.array_equal(looped[-1], frames[5]) and np.array_equal(looped[2:], frames[2:6])
    # the loop's seam (last → first) is now a step of the clip itself, not the jump from frame 7 to 0
    assert distance(looped[-1], looped[0]) < distance(frames[-1], frames[0])
    assert distance(looped[0], frames[6]) < distance(looped[0], frames[0])


def test_crossfade_on_generated_frames(tiny_engine, sample_png):
    [plain] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=8, num_frames=8, num_inference_steps=2)])
    [looped] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=8, num_frames=8, num_inference_steps=2,
                                                       loop="crossfade")])
    assert len(looped.frames) == 6 and np.array_equal(looped.frames[2:], plain.frames[2:6])
    assert distance(looped.frames[0], plain.frames[6]) < distance(looped.frames[0], plain.frames[0])


# --- over a real tritonserver, plain tritonclient -------------------------------------------------

COMBINATIONS = [  # (segments, interpolate, loop, video_format) → frames
    (1, 1, "none", "mp4", 4),
    (3, 2, "pingpong", "mp4", 2 * 19 - 2),  # 4 + 2×3 = 10 joined, 19 interpolated
    (2, 3, "crossfade", "webm", 19 - 4),  # 7 joined, 19 interpolated, 4 blended in
    (2, 1, "none", "gif", 7),
]


@pytest.mark.parametrize("segments,interpolate,loop,video_format,frames", COMBINATIONS)
def test_frame_count_and_container_fps_over_triton(triton, sample_png, segments, interpolate, loop, video_format, frames):
    tensors = small(IMAGE_BYTES=image_bytes(sample_png), SEGMENTS=scalar(segments, np.int32), INTERPOLATE=scalar(interpolate, np.int32), LOOP=text(loop),
                    FPS=scalar(6, np.int32), SEED=scalar(3, np.int64), VIDEO_FORMAT=text(video_format))
    response = infer(triton, "grpc", tensors, outputs=("VIDEO", "SEED_USED", "FRAMES"))
    assert response.as_numpy("FRAMES").shape == (1, frames, 64, 64, 3)
    video = decode_video(video_bytes(response), video_format)
    assert video.num_frames == frames
    assert video.fps == pytest.approx(6 * interpolate, rel=0.05)


def test_cli_makes_a_longer_smoother_looping_video(triton, tmp_path, sample_png):
    import subprocess
    import sys

    from tests.support import TOKEN

    image = tmp_path / "photo.png"
    image.write_bytes(sample_png)
    output = tmp_path / "loop.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "svd_triton", "generate", str(image), "-o", str(output), "--url", triton.grpc_url,
         "--grpc", "--token", TOKEN, "--segments", "3", "--interpolate", "2", "--loop", "pingpong",
         "--num-frames", "4", "--width", "64", "--height", "64", "--num-inference-steps", "2", "--fps", "5"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    video = decode_video(output.read_bytes(), "mp4")
    assert video.num_frames == 2 * 19 - 2 and video.fps == pytest.approx(10, rel=0.05)
    frames = video.frames.astype(np.float32)
    # played forth and back: frame 18 is the turning point, frame 18 + i mirrors frame 18 − i (up to the codec)
    assert distance(frames[17], frames[19]) < distance(frames[17], frames[25])
