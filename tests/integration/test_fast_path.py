"""The fast path on CPU: same frames as stock diffusers, compiled once at load (in the engine and
inside tritonserver), FP8 refused loudly, video encoding overlapped with the next pipeline call, and
the benchmark harnesses end to end."""
import re
import subprocess
import sys
import threading

import pytest
import torch
from diffusers import StableVideoDiffusionPipeline
from torch._dynamo.utils import counters

from tests.support import ROOT, cpu_config_copy, on_free_ports
from svd_engine import EngineConfig, ModelLoadError, SVDEngine
from svd_engine.fast_path import SDPA_KERNELS, FastPath, PinnedKernelProcessor, attention_kind
from svd_engine.testing import build_tiny_pipeline
from svd_engine.pipeline import uint8_frames
from svd_triton.client import SVDClient
from svd_triton.launcher import TritonServer
from tests.support.videos import max_abs_diff

TINY = dict(model_source="tiny", device="cpu", default_width=64, default_height=64, default_num_frames=8,
            default_num_inference_steps=3, default_decode_chunk_size=4)


def test_fast_path_is_on_for_cuda_and_off_for_cpu_by_default():
    config = EngineConfig()
    assert not FastPath(config, torch.device("cpu")).enabled
    assert FastPath(config, torch.device("cuda")).compiles
    assert FastPath(EngineConfig(fast_path="on"), torch.device("cpu")).enabled
    assert not FastPath(EngineConfig(fast_path="on", compile="none"), torch.device("cuda")).compiles
    assert not FastPath(EngineConfig(fast_path="off"), torch.device("cuda")).enabled


def test_fast_path_parameters_parse_and_bad_values_name_the_parameter():
    config = EngineConfig.from_parameters({"fuse_qkv": "false", "fp8": "True", "compile_batch_size": "2",
                                           "temporal_attention": "efficient"})
    assert (config.fuse_qkv, config.fp8, config.compile_batch_size, config.temporal_attention) == (False, True, 2, "efficient")
    with pytest.raises(ValueError, match=r"compile='fastest' is not one of none, default, reduce-overhead"):
        EngineConfig.from_parameters({"compile": "fastest"})
    with pytest.raises(ValueError, match=r"channels_last='maybe' is not a valid bool"):
        EngineConfig.from_parameters({"channels_last": "maybe"})
    with pytest.raises(ValueError, match=r"spatial_attention='xformers' is not one of auto, flash"):
        EngineConfig(spatial_attention="xformers")


def test_fast_path_frames_match_stock_diffusers(tiny_engine, sample_png):
    # Every CPU-capable switch on (fused QKV, channels_last, pinned math/flash kernels), no compile.
    fast = SVDEngine.load(**TINY, fast_path="on", compile="none", spatial_attention="math", temporal_attention="flash")
    request = fast.parse(sample_png, seed=4)
    stock = StableVideoDiffusionPipeline(**build_tiny_pipeline().components)
    with torch.inference_mode():
        video = stock(request.image, height=64, width=64, num_frames=8, num_inference_steps=3, decode_chunk_size=4,
                      generator=torch.Generator("cpu").manual_seed(4), output_type="pt", return_dict=False)
    stock_frames = uint8_frames(video)[0]
    pinned = {name: processor.kernel for name, processor in fast.pipeline.unet.attn_processors.items()}
    assert {name: attention_kind(name) for name in pinned} == {
        name: "temporal" if kernel == SDPA_KERNELS["flash"] else "spatial" for name, kernel in pinned.items()}
    assert "temporal" in {attention_kind(name) for name in pinned} and "spatial" in {attention_kind(name) for name in pinned}
    # The VAE's one attention head is 512 wide, too wide for flash and cuDNN on a GPU: never pinned.
    assert not any(isinstance(p, PinnedKernelProcessor) for p in fast.pipeline.vae.attn_processors.values())
    [result] = fast.generate([request])
    assert max_abs_diff(result.frames, stock_frames) <= 1
    assert max_abs_diff(result.frames, tiny_engine.generate([tiny_engine.parse(sample_png, seed=4)])[0].frames) <= 1
    assert stock_frames.std() > 1  # a real video, not a constant one that anything would match


def test_compiled_once_at_load_and_never_again_per_request(sample_png, sample_rgb):
    before = counters["stats"]["unique_graphs"]
    # Feature caching off: its block-by-block graphs have their own test in test_feature_cache.py.
    engine = SVDEngine.load(**TINY, fast_path="on", compile_backend="eager", compile_batch_size=2, max_cache_interval=1)
    compiled = counters["stats"]["unique_graphs"] - before
    assert compiled == 4  # UNet for 1 and 2 requests guided (2 and 4 samples) and 1 conditional-only, VAE decoder
    eager = SVDEngine.load(**TINY)
    # Two different images back to back (diffusers issue 10317), a batch of three (split 2 + 1),
    # the fast preset's conditional-only steps for 1, 2 and 3 requests, and a size that was not compiled (runs
    # eagerly).
    first = engine.parse(sample_png, seed=1)
    second = engine.parse(sample_rgb[::-1].copy(), seed=2)
    results = [engine.generate([first])[0], engine.generate([second])[0], *engine.generate([second, first, second])]
    fast = engine.parse(sample_png, seed=1, preset="fast", num_inference_steps=3)
    presets = engine.generate([fast, fast, fast])
    other_size = engine.generate([engine.parse(sample_png, seed=1, width=96)])[0]
    assert counters["stats"]["unique_graphs"] - before == compiled
    assert max_abs_diff(presets[0].frames, eager.generate([fast])[0].frames) <= 1
    expected = eager.generate([first, second])
    assert max_abs_diff(results[0].frames, expected[0].frames) <= 1
    assert max_abs_diff(results[1].frames, expected[1].frames) <= 1
    assert max_abs_diff(results[3].frames, expected[0].frames) <= 1
    assert max_abs_diff(results[1].frames, results[0].frames) > 1
    assert other_size.frames.shape == (8, 64, 96, 3)


@pytest.mark.slow
def test_tritonserver_loads_the_inductor_compiled_fast_path_and_serves_two_images(tmp_path, monkeypatch, sample_png, sample_rgb):
    """The deployment path of a GPU server, on CPU: a minutes-long compile inside the model's
    initialize (the stub reads inductor's UTF-8 templates), then two different images back to back,
    then feature caching at two intervals and branches on the blocks compiled at load."""
    # Scalar C++ kernels: a GPU server's kernels are Triton's, never inductor's vectorized C++, whose
    # code generation and compile cost a fifth of this test's CPU time.
    monkeypatch.setenv("TORCHINDUCTOR_VEC_ISA_OK", "0")
    config = cpu_config_copy(tmp_path)
    shape = dict(default_width=64, default_height=64, default_num_frames=4, default_num_inference_steps=2)
    text = config.read_text()
    # Conditional-only shapes off: one more inductor compile, whose warm-up tests/integration/test_feature_cache.py
    # and the test above count with the eager backend.
    for key, value in {**shape, "fast_path": "on", "compile_vae": "false", "compile_conditional": "false"}.items():
        text, found = re.subn(rf'(key: "{key}", value: {{ string_value: )"[^"]*"', rf'\g<1>"{value}"', text)
        if not found:
            text = text.replace("parameters: [", f'parameters: [\n  {{ key: "{key}", value: {{ string_value: "{value}" }} }},', 1)
    config.write_text(text)
    images = [sample_png, sample_rgb[::-1].copy()]
    asked = [(images[0], dict(seed=0)), (images[1], dict(seed=1)),
             (images[0], dict(seed=0, num_inference_steps=6, cache_interval=2)),
             (images[1], dict(seed=1, num_inference_steps=6, cache_interval=3, cache_branch_id=1))]
    with TritonServer(on_free_ports(model_repository=tmp_path / "repo"), ready_timeout=900) as server, \
            SVDClient(server.http_url, timeout=300) as client:  # closed first: Triton waits for open connections
        served = [client.generate(image, frames=True, **params) for image, params in asked]
        log = server.log_path.read_text()
    assert "fast path: attention spatial=auto temporal=auto, fused QKV, channels_last, compiled (inductor, default, batch 1–1)" in log
    eager = SVDEngine.load(model_source="tiny", device="cpu", dtype="float32", default_decode_chunk_size=8, **shape)
    expected = [eager.generate([eager.parse(image, **params)])[0] for image, params in asked]
    for result, reference in zip(served, expected):
        assert result.frames.shape == (4, 64, 64, 3)
        assert max_abs_diff(result.frames, reference.frames) <= 1
    assert max_abs_diff(served[0].frames, served[1].frames) > 1
    uncached = eager.generate([eager.parse(images[0], seed=0, num_inference_steps=6)])[0]
    assert max_abs_diff(served[2].frames, uncached.frames) > 1  # caching ran: it changed the video


def test_fp8_without_a_hopper_gpu_fails_the_load_with_the_reason():
    with pytest.raises(ModelLoadError, match=r"fp8=true needs a CUDA GPU with compute capability 8.9 .*this device is cpu"):
        SVDEngine.load(**TINY, fast_path="on", compile="none", fp8=True)


def test_video_encoding_overlaps_the_next_pipeline_call(tiny_engine, sample_png):
    """The first call's video is encoded while the second call denoises (it waits for that, bounded)."""
    second_denoising = threading.Event()
    overlapped = []

    def on_progress(event):
        if event.phase == "denoising" and event.batch == (1,) and event.step >= 1:
            second_denoising.set()
        if event.phase == "encoding" and event.batch == (0,):
            overlapped.append(second_denoising.wait(timeout=20))

    requests = [tiny_engine.parse(sample_png, seed=1), tiny_engine.parse(sample_png, seed=1, width=96)]
    futures = tiny_engine.submit(requests, on_progress=on_progress)
    results = [future.result(timeout=60) for future in futures]
    assert overlapped == [True]
    assert [r.frames.shape for r in results] == [(8, 64, 64, 3), (8, 64, 96, 3)]
    assert results[0].video and results[1].video


def harness(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def table_rows(text: str, first_cells: tuple[str, ...]) -> dict[str, list[str]]:
    """Markdown table rows starting with one of `first_cells`, keyed by their first cell."""
    return {line.split(" | ")[0].strip("| "): [cell.strip(" |") for cell in line.split(" | ")]
            for line in text.splitlines() if line.startswith(tuple("| " + cell for cell in first_cells))}


def test_benchmark_harness_writes_its_table_and_goes_on_from_kept_rows(tmp_path):
    doc, kept = tmp_path / "benchmarks.md", tmp_path / "rows"
    common = ["-m", "benchmarks.fast_path", "--runs", "2", "--warmup", "0", "--width", "64", "--height", "64", "--frames", "4",
              "--steps", "2", "--set", "compile_backend=eager", "--set", "max_cache_interval=1",  # no block graphs to compile
              "--doc", str(doc), "--results", str(kept)]
    harness(*common)
    text = doc.read_text()
    assert "<!-- fast-path-cpu-tiny:start -->" in text and "Command: `python -m benchmarks.fast_path --runs 2" in text
    rows = table_rows(text, ("stock", "engine", "fast path"))
    assert set(rows) == {"stock diffusers, float32", "engine, fast path off", "engine, fast path on"}
    for cells in rows.values():
        assert float(cells[1]) > 0  # end-to-end p50, seconds
    assert int(rows["engine, fast path on"][9]) <= 1  # max abs diff vs stock, uint8 levels

    # The same command with one more row measures only that row; the others are kept as they were.
    second = harness(*common, "--vary", "default_decode_chunk_size=2")
    assert second.stdout.count(f"kept from {kept}") == 3
    again = table_rows(doc.read_text(), ("stock", "engine", "fast path"))
    assert {name: again[name] for name in rows} == rows
    assert float(again["fast path, default_decode_chunk_size=2"][1]) > 0
    assert int(again["fast path, default_decode_chunk_size=2"][9]) > 1  # a smaller decode chunk mixes fewer frames: other output


def test_attention_benchmark_times_each_kernel_at_the_unets_shapes(tmp_path):
    doc = tmp_path / "benchmarks.md"
    harness("-m", "benchmarks.attention", "--width", "64", "--height", "64", "--frames", "4", "--repeats", "1", "--doc", str(doc))
    text = doc.read_text()
    assert "<!-- attention-cpu-tiny:start -->" in text
    summary = table_rows(text.split("Per shape")[0], ("spatial", "temporal"))
    for kind in ("spatial", "temporal"):
        kind_row = summary[kind]
        assert int(kind_row[1]) > 0 and int(kind_row[2]) > 0  # SDPA calls, distinct shapes
        assert float(kind_row[3]) > 0 and float(kind_row[7]) > 0  # auto, math: milliseconds per UNet pass
        assert kind_row[6] == "unsupported"  # cuDNN attention needs CUDA
        assert kind_row[8] in ("auto", "flash", "math")
    shapes = [line.split(" | ") for line in text.split("Per shape")[1].splitlines() if line.startswith("| temporal")]
    assert shapes and all(cells[1].split("×")[2] == "4" for cells in shapes)  # temporal attention spans the 4 frames
