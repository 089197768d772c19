"""Generation with the tiny random-weight pipeline: videos decoded back, determinism, batching."""
from dataclasses import replace

import numpy as np
import torch
import pytest

from svd_contract import VIDEO_FORMATS
from svd_engine import GenerationCancelled, InvalidRequest
from tests.support.videos import decode_video, max_abs_diff


@pytest.mark.parametrize("video_format", sorted(VIDEO_FORMATS))
def test_each_format_decodes_to_the_requested_video(tiny_engine, sample_png, video_format):
    request = tiny_engine.parse(sample_png, video_format=video_format, num_frames=6, width=128, height=64, fps=10, seed=3)
    [result] = tiny_engine.generate([request])
    video = decode_video(result.video, video_format)
    assert video.num_frames == 6
    assert video.size == (128, 64)
    if video_format == "frames":
        assert video.frames.dtype == np.uint8 and np.array_equal(video.frames, result.frames)
    else:
        assert video.fps == pytest.approx(10, abs=0.3)
    # Lossy codecs on noise-like content: the decoded file stays close to the generated frames on average.
    assert np.abs(video.frames.astype(float) - result.frames).mean() < 20
    assert result.video_format == video_format and result.mime_type == VIDEO_FORMATS[video_format].mime_type


def test_frames_shape_dtype_and_timings(tiny_engine, sample_png):
    [result] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=1)])
    assert result.frames.shape == (8, 64, 64, 3) and result.frames.dtype == np.uint8
    assert result.frames.std() > 1  # a real, varying video
    assert set(result.timings) == {"image", "preparing", "denoising", "decoding", "encoding"}
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert result.timings["denoising"] > 0 and result.timings["decoding"] > 0


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tiny_engine, sample_png):
    [first], [second], [other] = (tiny_engine.generate([tiny_engine.parse(sample_png, seed=s)]) for s in (7, 7, 8))
    assert first.video == second.video
    assert other.video != first.video and max_abs_diff(other.frames, first.frames) > 0


def test_returned_random_seed_reproduces_the_run(tiny_engine, sample_png):
    [random_run] = tiny_engine.generate([tiny_engine.parse(sample_png)])
    [replay] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=random_run.seed)])
    assert np.array_equal(random_run.frames, replay.frames)


def test_a_request_alone_equals_it_inside_a_batch(tiny_engine, sample_png, sample_rgb):
    # decode_chunk_size 3 does not divide 8 frames: chunks must not straddle two videos of the batch.
    target = tiny_engine.parse(sample_png, seed=11, decode_chunk_size=3)
    others = [tiny_engine.parse(sample_rgb[::-1].copy(), seed=s, decode_chunk_size=3) for s in (12, 13)]
    [alone] = tiny_engine.generate([target])
    batched = tiny_engine.generate([others[0], target, others[1]])
    assert max_abs_diff(alone.frames, batched[1].frames) <= 1
    assert [r.seed for r in batched] == [12, 11, 13]


def test_per_sample_conditioning_shares_a_batch_without_changing_results(tiny_engine, sample_png):
    varied = tiny_engine.parse(sample_png, seed=5, fps=20, motion_bucket_id=10, noise_aug_strength=0.5)
    plain = tiny_engine.parse(sample_png, seed=5)
    calls = []
    batched = tiny_engine.generate([plain, varied], on_progress=lambda p: calls.append(p.batch) if p.phase == "denoising" else None)
    assert set(calls) == {(0, 1)}  # one pipeline call for both
    [alone] = tiny_engine.generate([varied])
    assert max_abs_diff(alone.frames, batched[1].frames) <= 1
    assert max_abs_diff(batched[0].frames, batched[1].frames) > 10  # the conditioning did change the video


def test_different_shapes_run_as_separate_calls_in_order(tiny_engine, sample_png):
    requests = [tiny_engine.parse(sample_png, seed=1, width=w, height=64) for w in (64, 128, 64)]
    calls = []
    results = tiny_engine.generate(requests, on_progress=lambda p: calls.append(p.batch) if p.phase == "denoising" else None)
    assert sorted(set(calls)) == [(0, 2), (1,)]
    assert [r.frames.shape[2] for r in results] == [64, 128, 64]


def test_progress_reports_phases_and_steps_in_order(tiny_engine, sample_png):
    request = tiny_engine.parse(sample_png, seed=1, num_inference_steps=3)
    events = []
    tiny_engine.generate([request], on_progress=events.append)
    assert [(e.phase, e.step, e.total) for e in events] == [
        ("preparing", 0, 3), ("denoising", 0, 3), ("denoising", 1, 3), ("denoising", 2, 3), ("denoising", 3, 3),
        ("decoding", 3, 3), ("encoding", 3, 3)]
    assert all(e.batch == (0,) for e in events)
    assert [e.elapsed for e in events] == sorted(e.elapsed for e in events)


def test_a_cancelled_batch_stops_within_one_step(tiny_engine, sample_png):
    request = tiny_engine.parse(sample_png, seed=1, num_inference_steps=20)
    steps = []
    results = tiny_engine.generate([request], on_progress=lambda p: steps.append(p.step),
                                   cancelled=lambda index: len(steps) > 0 and steps[-1] >= 2)
    assert isinstance(results[0], GenerationCancelled)
    # the client gave up after step 2 was reported; the next check, at the end of step 3, stops the loop
    assert max(steps) == 2 and "after step 3 of 20" in str(results[0])


def test_cancelling_one_request_leaves_the_others_of_its_batch_intact(tiny_engine, sample_png):
    requests = [tiny_engine.parse(sample_png, seed=s) for s in (21, 22, 23)]
    steps = []
    results = tiny_engine.generate(requests, on_progress=lambda p: steps.append(p.step),
                                   cancelled=lambda index: index == 1 and bool(steps) and steps[-1] >= 1)
    assert isinstance(results[1], GenerationCancelled)
    for index in (0, 2):
        [alone] = tiny_engine.generate([requests[index]])
        assert max_abs_diff(alone.frames, results[index].frames) <= 1
        assert decode_video(results[index].video, "mp4").num_frames == 8


def test_encoding_can_be_skipped(tiny_engine, sample_png):
    [result] = tiny_engine.generate([replace(tiny_engine.parse(sample_png, seed=1), encode=False)])
    assert result.video is None and result.frames.shape == (8, 64, 64, 3)


def test_video_quality_changes_the_file(tiny_engine, sample_png):
    best, worst = tiny_engine.generate([tiny_engine.parse(sample_png, seed=2, video_quality=q) for q in (5, 45)])
    assert len(best.video) > len(worst.video)


def test_the_smallest_guidance_above_1_in_the_model_s_precision_runs_and_one_below_it_is_refused(tiny_engine, sample_png):
    """The tiny engine computes in float32: 1 + 2**-24 is 1 there (diffusers would fail mid-run on it, its batch
    doubled for a guidance it then drops), 1 + 2**-22 is not."""
    with pytest.raises(InvalidRequest, match="is 1 in float32"):
        tiny_engine.parse(sample_png, max_guidance_scale=1 + 2.0**-24, num_frames=4, num_inference_steps=2)
    request = tiny_engine.parse(sample_png, max_guidance_scale=1 + 2.0**-22, num_frames=4, num_inference_steps=2)
    [result] = tiny_engine.generate([replace(request, encode=False)])
    assert len(result.frames) == 4


@pytest.mark.parametrize("video_format", ["mp4", "webm", "avi"])
def test_odd_frame_sizes_are_padded_to_even_for_yuv420(video_format):
    from svd_engine import encode_video

    frames = np.random.default_rng(0).integers(0, 255, (3, 15, 17, 3), dtype=np.uint8)
    video = decode_video(encode_video(frames, video_format, fps=5), video_format)
    assert (video.num_frames, video.size) == (3, (18, 16))


class _FailWhenBatchAtLeast:
    """A UNet forward pre-hook that raises a real torch.OutOfMemoryError for batches of `size` or more."""

    def __init__(self, size):
        self.size, self.raised = size, 0

    def __call__(self, module, args):
        if args[0].shape[0] >= self.size * 2:  # classifier-free guidance doubles the batch
            self.raised += 1
            raise torch.OutOfMemoryError("injected: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                         "total capacity of 79.11 GiB of which 1.20 GiB is free.")


def test_a_batch_that_runs_out_of_memory_is_retried_one_by_one(tiny_engine, sample_png):
    requests = [tiny_engine.parse(sample_png, seed=s) for s in (41, 42, 43)]
    fault = _FailWhenBatchAtLeast(2)
    handle = tiny_engine.pipeline.unet.register_forward_pre_hook(fault)
    try:
        results = tiny_engine.generate(requests)
    finally:
        handle.remove()
    assert fault.raised == 1
    for request, result in zip(requests, results):
        [alone] = tiny_engine.generate([request])
        assert max_abs_diff(alone.frames, result.frames) <= 1


def test_a_request_that_cannot_fit_gets_out_of_memory_and_the_next_one_runs(tiny_engine, sample_png):
    from svd_engine import OutOfMemory

    handle = tiny_engine.pipeline.unet.register_forward_pre_hook(_FailWhenBatchAtLeast(1))
    try:
        [result] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=1, num_frames=8)])
    finally:
        handle.remove()
    assert isinstance(result, OutOfMemory) and "8 frames (one allocation asked for 2.00 GiB more)" in str(result)
    [after] = tiny_engine.generate([tiny_engine.parse(sample_png, seed=1)])
    assert decode_video(after.video, "mp4").num_frames == 8
