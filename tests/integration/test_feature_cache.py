"""Feature caching (DeepCache-style) in the engine: off changes nothing, interval k runs the deep
branch on exactly ceil(steps/k) steps, batches of mixed settings each get their own video, segments,
progress, and the compiled path without a compile per request."""
from __future__ import annotations

import math

import numpy as np
import pytest
from torch._dynamo.utils import counters

from svd_engine import SVDEngine
from tests.support.videos import max_abs_diff

TINY = dict(model_source="tiny", device="cpu", default_width=64, default_height=64, default_num_frames=4,
            default_num_inference_steps=3, default_decode_chunk_size=4)


@pytest.fixture(scope="module")
def engine():
    return SVDEngine.load(**TINY)


def block_calls(engine, run) -> dict[str, int]:
    """Calls of the UNet's input convolution (every step), deepest down block and mid block during `run()`."""
    unet = engine.feature_cache.unet
    counted = {"conv_in": unet.conv_in, "deepest down block": unet.down_blocks[-1], "mid block": unet.mid_block}
    calls = dict.fromkeys(counted, 0)
    hooks = [module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
             for name, module in counted.items()]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def test_caching_off_runs_the_pipelines_own_unet_and_any_branch_gives_the_same_frames(engine, sample_png):
    seen = []
    off = engine.generate([engine.parse(sample_png, seed=3)], on_progress=lambda _: seen.append(engine.pipeline.unet))
    assert {id(unet) for unet in seen} == {id(engine.feature_cache.unet)}  # no stand-in while caching is off
    other_branch = engine.generate([engine.parse(sample_png, seed=3, cache_branch_id=1)])
    assert np.array_equal(off[0].frames, other_branch[0].frames)
    assert off[0].frames.std() > 1


@pytest.mark.parametrize("width", [64, 88])  # 88: a latent side the UNet's upsamplers do not divide
def test_a_whole_step_of_the_split_unet_is_bit_identical_to_the_pipelines_unet(engine, sample_png, width):
    """One step at interval 2 is one whole step of the split pass: exactly the uncached video."""
    plain, cached = engine.generate([engine.parse(sample_png, seed=4, width=width, num_inference_steps=1),
                                     engine.parse(sample_png, seed=4, width=width, num_inference_steps=1, cache_interval=2)])
    assert np.array_equal(plain.frames, cached.frames)


@pytest.mark.parametrize("steps,interval,branch", [(5, 2, 0), (5, 3, 1), (6, 3, 0), (4, 5, 1), (7, 1, 0)])
def test_interval_k_runs_the_deep_branch_on_exactly_ceil_steps_over_k_steps(engine, sample_png, steps, interval, branch):
    request = engine.parse(sample_png, seed=1, num_inference_steps=steps, cache_interval=interval, cache_branch_id=branch)
    events = []
    calls = block_calls(engine, lambda: engine.generate([request], on_progress=events.append))
    whole = math.ceil(steps / interval)
    assert calls == {"conv_in": steps, "mid block": whole,
                     # the tiny UNet has two down blocks: branch 1 is the deepest, run on every step
                     "deepest down block": steps if branch == 1 else whole}
    assert request.whole_steps == whole
    assert [e.step for e in events if e.phase == "denoising"][-steps:] == list(range(1, steps + 1))  # every step reported


def test_caching_changes_the_video_by_interval_and_branch(engine, sample_png):
    videos = {(k, b): engine.generate([engine.parse(sample_png, seed=2, cache_interval=k, cache_branch_id=b)])[0].frames
              for k, b in [(1, 0), (2, 0), (2, 1), (3, 0)]}
    assert len({video.tobytes() for video in videos.values()}) == 4
    assert all(video.std() > 1 for video in videos.values())


def test_a_batch_of_mixed_settings_gives_each_request_its_own_video(engine, sample_png):
    settings = [dict(seed=1), dict(seed=1, cache_interval=2), dict(seed=1, cache_interval=3, cache_branch_id=1),
                dict(seed=2, cache_interval=2), dict(seed=1, cache_interval=2, cache_branch_id=1)]
    requests = [engine.parse(sample_png, num_inference_steps=6, **params) for params in settings]
    calls = []
    batched = engine.generate(requests, on_progress=lambda e: calls.append(e.batch) if e.phase == "denoising" else None)
    assert sorted(set(calls)) == [(0,), (1, 3), (2,), (4,)]  # equal settings share a pipeline call
    alone = [engine.generate([request])[0].frames for request in requests]
    for together, by_itself in zip(batched, alone):
        assert max_abs_diff(together.frames, by_itself) <= 1
    same_seed = [alone[i] for i in (0, 1, 2, 4)]
    assert min(max_abs_diff(a, b) for i, a in enumerate(same_seed) for b in same_seed[i + 1:]) > 1


def test_each_segment_starts_with_a_whole_step(engine, sample_png):
    request = engine.parse(sample_png, seed=6, num_inference_steps=5, segments=3, cache_interval=2)
    events = []
    calls = block_calls(engine, lambda: engine.generate([request], on_progress=events.append))
    assert calls["mid block"] == 3 * 3 and calls["conv_in"] == 3 * 5
    denoising = [(e.segment, e.step) for e in events if e.phase == "denoising" and e.step > 0]
    assert denoising == [(segment, step) for segment in (1, 2, 3) for step in range(1, 6)]
    [result] = engine.generate([request])
    assert result.frames.shape == (4 + 2 * 3, 64, 64, 3)


@pytest.mark.slow
def test_compiled_blocks_serve_every_interval_and_branch_without_compiling_per_request(sample_png):
    """The fast path compiles the UNet whole (caching off) and block by block (caching on) at load, at
    batch sizes 1 and 2, guided and (one request) conditional-only; no interval, branch, guidance window or
    batch of them compiles anything afterwards."""
    before = counters["stats"]["unique_graphs"]
    compiled = SVDEngine.load(**TINY, fast_path="on", compile_backend="eager", compile_vae=False, compile_batch_size=2)
    at_load = counters["stats"]["unique_graphs"] - before
    blocks = 2 + 1 + 2  # the tiny UNet's down blocks, mid block, up blocks
    assert at_load == 3 * (1 + blocks)  # 2 and 4 samples (1 and 2 requests, guided), 1 (conditional-only)
    eager = SVDEngine.load(**TINY, fast_path="on", compile="none")
    requests = [compiled.parse(sample_png, seed=seed, cache_interval=k, cache_branch_id=b, conditional_final_steps=c)
                for seed, (k, b, c) in enumerate([(2, 0, 0), (3, 1, 0), (5, 0, 0), (1, 0, 0), (2, 0, 2)])]
    results = [*compiled.generate(requests), *compiled.generate(requests[:1] * 2)]
    assert counters["stats"]["unique_graphs"] - before == at_load
    for result, expected in zip(results, eager.generate(requests + requests[:1] * 2)):
        assert max_abs_diff(result.frames, expected.frames) <= 1
