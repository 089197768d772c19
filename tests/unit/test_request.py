"""The request spec: defaults, boundaries, rejections (each naming the field), image decoding."""
import base64
import json
import math
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from tests.support import SUPPORT, encode_image
from svd_engine import EngineConfig, InvalidRequest
from svd_engine.postprocess import output_frame_count
from svd_contract import MAX_SEED, PARAMETERS
from svd_engine.request import CONDITIONAL_STEP_COST, SHALLOW_STEP_COST, parse_request

CONFIG = EngineConfig(model_source="tiny", default_width=64, default_height=64)


def parse(image, config=CONFIG, **params):
    return parse_request(image, params, config, model_num_frames=25)


def rejected(image, field, config=CONFIG, **params) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse(image, config, **params)
    assert caught.value.field == field
    assert field in str(caught.value)
    return str(caught.value)


def test_defaults_come_from_the_spec_and_the_deployment(sample_png):
    request = parse(sample_png)
    assert (request.width, request.height) == (64, 64)
    assert request.num_frames == 25  # the model's own count when the deployment sets none
    assert request.num_inference_steps == 25
    assert request.fps == 7
    assert request.motion_bucket_id == 127
    assert request.noise_aug_strength == pytest.approx(0.02)
    assert (request.min_guidance_scale, request.max_guidance_scale) == (1.0, 3.0)
    assert request.decode_chunk_size == 8
    assert request.resize_mode == "crop"
    assert request.video_format == "mp4"
    assert request.video_quality is None
    assert (request.segments, request.interpolate, request.loop) == (1, 1, "none")  # today's single clip
    assert (request.output_frames, request.output_fps) == (25, 7)
    assert 0 <= request.seed <= MAX_SEED
    assert request.image.mode == "RGB" and request.image.size == (64, 64)


def test_production_defaults_are_svd_xt_sizes(sample_png):
    request = parse_request(sample_png, {}, EngineConfig(), model_num_frames=25)
    assert (request.width, request.height, request.num_frames) == (1024, 576, 25)


def test_deployment_defaults_apply(sample_png):
    config = EngineConfig(default_width=128, default_height=64, default_num_frames=8,
                          default_num_inference_steps=4, default_fps=10, default_video_format="gif")
    request = parse(sample_png, config)
    assert (request.width, request.height, request.num_frames, request.num_inference_steps,
            request.fps, request.video_format) == (128, 64, 8, 4, 10, "gif")
    assert request.decode_chunk_size == 8


def test_random_seeds_differ_and_are_in_range(sample_png):
    seeds = {parse(sample_png).seed for _ in range(5)}
    assert len(seeds) == 5 and all(0 <= s <= MAX_SEED for s in seeds)


BOUNDARIES = [
    ("width", 64), ("width", 1024), ("height", 64), ("height", 1024),
    ("num_frames", 2), ("num_frames", 25), ("num_inference_steps", 1), ("num_inference_steps", 100),
    ("fps", 1), ("fps", 60), ("motion_bucket_id", 0), ("motion_bucket_id", 255),
    ("noise_aug_strength", 0.0), ("noise_aug_strength", 1.0),
    ("min_guidance_scale", 0.0), ("max_guidance_scale", 20.0), ("decode_chunk_size", 1),
    ("seed", 0), ("seed", MAX_SEED), ("segments", 1), ("segments", 4), ("interpolate", 1), ("interpolate", 4),
    ("cache_interval", 1), ("cache_interval", 10), ("cache_branch_id", 0), ("cache_branch_id", 3),
]


@pytest.mark.parametrize("field,value", BOUNDARIES)
def test_boundaries_are_accepted(sample_png, field, value):
    assert getattr(parse(sample_png, **{field: value}), field) == value


def test_width_2048_accepted_within_a_larger_pixel_budget(sample_png):
    request = parse(sample_png, EngineConfig(max_pixels=2048 * 64), width=2048, height=64)
    assert (request.width, request.height) == (2048, 64)


OUT_OF_RANGE = [
    ("width", 56), ("width", 2056), ("width", 100), ("height", 63), ("height", 2049),
    ("num_frames", 1), ("num_frames", 26), ("num_inference_steps", 0), ("num_inference_steps", 101),
    ("fps", 0), ("fps", 61), ("motion_bucket_id", -1), ("motion_bucket_id", 256),
    ("noise_aug_strength", -0.1), ("noise_aug_strength", 1.5), ("min_guidance_scale", -1.0),
    ("max_guidance_scale", 20.5), ("decode_chunk_size", 0), ("decode_chunk_size", 26),
    ("seed", -1), ("seed", MAX_SEED + 1), ("video_quality", 52), ("segments", 0), ("segments", 5),
    ("interpolate", 0), ("interpolate", 5), ("cache_interval", 0), ("cache_interval", 11), ("cache_branch_id", -1),
    ("cache_branch_id", 4),
]


@pytest.mark.parametrize("field,value", OUT_OF_RANGE)
def test_out_of_range_values_name_field_value_and_range(sample_png, field, value):
    message = rejected(sample_png, field, **{field: value})
    assert str(value) in message
    assert "accepted" in message or "greater" in message


WRONG_TYPES = [
    ("width", "64"), ("width", 64.5), ("width", True), ("num_frames", [8]), ("fps", None.__class__),
    ("noise_aug_strength", "0.1"), ("noise_aug_strength", float("nan")), ("max_guidance_scale", float("inf")),
    ("seed", 1.5), ("video_format", 3), ("resize_mode", b"\xff\xfe"), ("video_format", "mkv"),
    ("resize_mode", "zoom"), ("segments", 2.5), ("segments", "2"), ("interpolate", "2"), ("interpolate", 1.5),
    ("loop", "bounce"), ("loop", 1),
]


@pytest.mark.parametrize("field,value", WRONG_TYPES)
def test_wrong_types_are_rejected_naming_the_field(sample_png, field, value):
    rejected(sample_png, field, **{field: value})


def test_both_width_and_height_not_multiple_of_8(sample_png):
    assert "multiple of 8" in rejected(sample_png, "width", width=100, height=70)
    assert "multiple of 8" in rejected(sample_png, "height", width=64, height=70)


def test_numpy_scalars_and_integral_floats_are_accepted(sample_png):
    request = parse(sample_png, width=np.int32(128), fps=np.array([9]), noise_aug_strength=np.float32(0.5), num_frames=8.0)
    assert (request.width, request.fps, request.num_frames) == (128, 9, 8)
    assert request.noise_aug_strength == pytest.approx(0.5)


def test_strings_accept_bytes_and_any_case(sample_png):
    request = parse(sample_png, video_format=b"WebM", resize_mode=" Pad ")
    assert (request.video_format, request.resize_mode) == ("webm", "pad")


def test_cross_field_rules(sample_png):
    assert "greater than" in rejected(sample_png, "min_guidance_scale", min_guidance_scale=4.0, max_guidance_scale=3.0)
    assert "1–8" in rejected(sample_png, "decode_chunk_size", num_frames=8, decode_chunk_size=9)
    assert "2–16" in rejected(sample_png, "num_frames", EngineConfig(max_num_frames=16), num_frames=1)
    assert "limit of" in rejected(sample_png, "width", width=1024, height=1024 + 64)
    assert "leave width and height unset" in rejected(sample_png, "width", resize_mode="keep", width=64)
    assert "no quality setting" in rejected(sample_png, "video_quality", video_format="gif", video_quality=5)
    assert "0–100" in rejected(sample_png, "video_quality", video_format="webp", video_quality=101)


def test_segments_interpolation_and_loops_count_frames_and_budget(sample_png):
    request = parse(sample_png, num_frames=8, segments=3, interpolate=2, loop="pingpong", fps=6)
    # 8 + 2×7 = 22 joined, (22 − 1)×2 + 1 = 43 interpolated, 2×43 − 2 = 84 looped, at 6×2 fps
    assert (request.output_frames, request.output_fps) == (84, 12)
    crossfade = parse(sample_png, num_frames=8, loop="crossfade")
    assert crossfade.output_frames == 8 - 2  # the last quarter blended into the head
    budget = EngineConfig(default_width=64, default_height=64, max_work=64 * 64 * 8 * 4 * 2)
    assert parse(sample_png, budget, num_frames=8, num_inference_steps=4, segments=2).segments == 2
    message = rejected(sample_png, "segments", budget, num_frames=8, num_inference_steps=4, segments=3)
    assert "segments" in message and "max_work" in message
    assert "max_output_frames" in rejected(sample_png, "interpolate", EngineConfig(max_output_frames=50),
                                           num_frames=25, interpolate=3)
    assert "max_output_frames" in rejected(sample_png, "segments", EngineConfig(max_output_frames=30), segments=2)
    assert "max_output_frames" in rejected(sample_png, "loop", EngineConfig(max_output_frames=30), loop="pingpong")
    assert "1–2" in rejected(sample_png, "segments", EngineConfig(max_segments=2), segments=3)
    assert "at least 4 frames" in rejected(sample_png, "loop", num_frames=3, loop="crossfade")


def test_feature_caching_counts_whole_steps_in_full_and_cached_steps_by_their_branch(sample_png):
    off = parse(sample_png, num_frames=8, num_inference_steps=10)
    assert (off.cache_interval, off.whole_steps, off.unet_steps, off.work) == (1, 10, 10, 64 * 64 * 8 * 10)
    cached = parse(sample_png, num_frames=8, num_inference_steps=10, segments=2, cache_interval=3, cache_branch_id=1)
    assert cached.whole_steps == 4  # steps 0, 3, 6, 9
    assert cached.work == math.ceil(64 * 64 * 8 * 2 * (4 + 6 * SHALLOW_STEP_COST[1]))
    assert all(0 < share < 1 for share in SHALLOW_STEP_COST) and list(SHALLOW_STEP_COST) == sorted(SHALLOW_STEP_COST)
    # A budget that refuses the uncached request admits it cached; the refusal explains the count.
    budget = EngineConfig(default_width=64, default_height=64, max_work=64 * 64 * 8 * 7)
    message = rejected(sample_png, "num_frames", budget, num_frames=8, num_inference_steps=10, cache_interval=2)
    assert "5 whole UNet steps, 5 cached at 0.42 of one" in message and "max_work" in message
    assert parse(sample_png, budget, num_frames=8, num_inference_steps=10, cache_interval=3).work <= budget.max_work


def test_feature_caching_is_part_of_the_batch_key_and_the_branch_only_counts_when_caching(sample_png):
    keys = {name: parse(sample_png, seed=1, **params).batch_key() for name, params in {
        "off": {}, "off, other branch": {"cache_branch_id": 2}, "k2": {"cache_interval": 2},
        "k2 b1": {"cache_interval": 2, "cache_branch_id": 1}, "k3": {"cache_interval": 3}}.items()}
    assert keys["off"] == keys["off, other branch"]
    assert len({keys[name] for name in ("off", "k2", "k2 b1", "k3")}) == 4


def test_the_models_block_count_bounds_the_branch(sample_png):
    assert parse_request(sample_png, {"cache_branch_id": 1}, CONFIG, model_num_frames=25, model_branches=2).cache_branch_id == 1
    with pytest.raises(InvalidRequest, match=r"cache_branch_id=2 is out of range; accepted: an integer in 0–1"):
        parse_request(sample_png, {"cache_branch_id": 2}, CONFIG, model_num_frames=25, model_branches=2)


def test_the_deployment_bounds_the_cache_interval(sample_png):
    config = replace(CONFIG, max_cache_interval=3)
    assert parse_request(sample_png, {"cache_interval": 3}, config, model_num_frames=25).cache_interval == 3
    with pytest.raises(InvalidRequest, match=r"cache_interval=4 is out of range; accepted: an integer in 1–3"):
        parse_request(sample_png, {"cache_interval": 4}, config, model_num_frames=25)
    with pytest.raises(ValueError, match="max_cache_interval=11 must be 1–10"):
        replace(CONFIG, max_cache_interval=11)


def test_unknown_parameter_is_rejected(sample_png):
    assert "accepted" in rejected(sample_png, "guidance", guidance=3.0)


def test_every_parameter_has_a_described_range():
    for parameter in PARAMETERS.values():
        assert parameter.describe()


# --- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_image_modes_are_converted_to_rgb(sample_rgb, mode):
    source = Image.fromarray(sample_rgb)
    if mode == "I;16":
        converted = Image.fromarray(sample_rgb[..., 0].astype(np.uint16) * 257)
        assert converted.mode == "I;16"
    else:
        converted = source.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    request = parse(encode_image(converted, fmt), resize_mode="stretch", width=128, height=96)
    assert request.image.mode == "RGB"
    pixels = np.asarray(request.image)
    assert pixels.std() > 10  # still a picture, not a blank frame
    if mode == "I;16":  # 16-bit values are scaled into 8 bits, not clipped to white
        assert abs(int(pixels[..., 0].mean()) - int(sample_rgb[..., 0].mean())) <= 2


def test_transparency_is_composited_over_white(sample_rgb):
    rgba = np.dstack([sample_rgb, np.zeros(sample_rgb.shape[:2], np.uint8)])
    request = parse(encode_image(Image.fromarray(rgba)), resize_mode="stretch", width=128, height=96)
    assert np.asarray(request.image).min() == 255


def test_exif_orientation_is_applied():
    portrait = np.zeros((128, 64, 3), np.uint8)
    portrait[:64] = 255  # top half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer must turn it 90° clockwise
    stored = Image.fromarray(portrait).transpose(Image.Transpose.ROTATE_90)
    request = parse(encode_image(stored, "JPEG", exif=exif, quality=95), resize_mode="keep")
    assert (request.width, request.height) == (64, 128)
    pixels = np.asarray(request.image).astype(int)
    assert pixels[:64].mean() > 200 and pixels[64:].mean() < 50


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_accepted_encodings(sample_rgb, fmt):
    request = parse(encode_image(Image.fromarray(sample_rgb), fmt))
    assert request.image.size == (64, 64)


def test_gif_first_frame_is_used(sample_rgb):
    first, second = Image.fromarray(sample_rgb), Image.fromarray(255 - sample_rgb)
    data = encode_image(first, "GIF", save_all=True, append_images=[second])
    request = parse(data, resize_mode="stretch", width=128, height=96)
    assert abs(np.asarray(request.image).astype(int).mean() - sample_rgb.astype(int).mean()) < 8


def test_array_input(sample_rgb):
    assert parse(sample_rgb).image.size == (64, 64)
    assert "H×W×3 uint8" in rejected(sample_rgb.astype(np.float32), "image")
    assert "H×W×3 uint8" in rejected(sample_rgb[..., :2], "image")


@pytest.mark.parametrize("data,expected", [
    (b"", "empty"),
    (b"this is not an image at all", "not a readable"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable"),
])
def test_garbage_and_empty_bytes(data, expected):
    assert expected in rejected(data, "image")


def test_truncated_image(sample_png):
    assert "truncated or corrupt" in rejected(sample_png[: len(sample_png) // 2], "image")


def test_decompression_bomb_is_refused_from_its_header():
    # A valid 30000×30000 PNG header with a tiny body: decoding it would need 2.7 GB.
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
    assert "limit" in rejected(bomb, "image")


def test_oversized_upload_is_refused_before_decoding(sample_png):
    assert "limit is 100 bytes" in rejected(sample_png, "image", EngineConfig(max_image_bytes=100))


def test_images_under_8_px_a_side_are_refused_and_8_px_ones_upscaled():
    for size in ((1, 1), (7, 64), (64, 7)):
        assert "each side must be at least 8" in rejected(encode_image(Image.new("RGB", size)), "image")
    request = parse(encode_image(Image.new("RGB", (8, 8), (200, 10, 10))), width=128, height=64)
    assert request.image.size == (128, 64) and request.image.getpixel((64, 32)) == (200, 10, 10)
    assert parse(encode_image(Image.new("RGB", (8, 8))), resize_mode="keep").image.size == (64, 64)


FORGE_SAMPLE_PPM = json.loads((SUPPORT / "forge_sample_request.json").read_text())["image"]


def test_the_forge_sample_16px_ppm_data_uri_is_read_and_upscaled():
    data = base64.b64decode(FORGE_SAMPLE_PPM.split(",", 1)[1])
    assert data.startswith(b"P6\n16 16\n")
    request = parse(data, width=128, height=128)
    assert request.image.size == (128, 128)
    assert np.asarray(request.image).std() > 10  # the picture (a square on a gradient), not a blank


@pytest.mark.parametrize("fmt,mode,args", [("PPM", "RGB", {}), ("PPM", "L", {}), ("PPM", "1", {}),
                                           ("TIFF", "RGB", {}), ("TIFF", "RGBA", {"compression": "tiff_lzw"}),
                                           ("TIFF", "I;16", {})])
def test_netpbm_and_tiff_are_read(sample_rgb, fmt, mode, args):
    image = Image.fromarray(sample_rgb)
    image = image.convert(mode) if mode != "I;16" else Image.fromarray((sample_rgb[..., 0].astype(np.uint16) * 257))
    data = encode_image(image, fmt, **args)
    assert data[:2] in (b"P6", b"P5", b"P4", b"II", b"MM")  # PPM, PGM, PBM or TIFF on the wire
    request = parse(data, resize_mode="stretch", width=128, height=96)
    assert request.image.mode == "RGB" and request.image.size == (128, 96)
    if mode == "RGB":
        assert np.abs(np.asarray(request.image).astype(int) - sample_rgb.astype(int)).mean() < 3


def test_netpbm_and_tiff_bombs_are_refused_from_their_headers():
    ppm = b"P6\n30000 30000\n255\n" + b"\x00" * 100
    assert "limit" in rejected(ppm, "image")
    big = encode_image(Image.new("L", (8000, 6000)), "TIFF", compression="tiff_lzw")
    assert "limit" in rejected(big, "image", EngineConfig(max_image_pixels=1_000_000))


@pytest.mark.parametrize("mode,size", [("crop", (128, 64)), ("pad", (64, 128)), ("stretch", (128, 64))])
def test_resize_modes_hit_the_target_size(sample_png, mode, size):
    assert parse(sample_png, resize_mode=mode, width=size[0], height=size[1]).image.size == size


def test_pad_keeps_the_whole_picture_with_black_bars():
    wide = Image.new("RGB", (200, 100), (255, 255, 255))
    pixels = np.asarray(parse(encode_image(wide), resize_mode="pad", width=64, height=64).image)
    assert pixels[0].max() == 0 and pixels[32].min() > 200  # bars top and bottom, picture in the middle


def test_keep_rounds_the_image_size_to_64_within_the_budget():
    request = parse(encode_image(Image.new("RGB", (700, 300))), resize_mode="keep")
    assert (request.width, request.height) == (640, 256)
    big = parse(encode_image(Image.new("RGB", (4000, 3000))), EngineConfig(max_pixels=512 * 512), resize_mode="keep")
    assert big.width % 64 == 0 and big.height % 64 == 0 and big.width * big.height <= 512 * 512
    assert big.width > big.height


def test_work_budget_limits_frames_times_pixels_times_steps(sample_png):
    config = EngineConfig(default_width=64, default_height=64, max_work=64 * 64 * 8 * 10)
    assert parse(sample_png, config, num_frames=8, num_inference_steps=10).num_frames == 8
    message = rejected(sample_png, "num_frames", config, num_frames=8, num_inference_steps=11)
    assert "budget of 327680" in message and "64×64×8×11" in message


# --- property-based: whatever the client sends, the parser answers with a request or InvalidRequest ---

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=12),
    st.sampled_from(["mp4", "gif", "frames", "crop", "keep", "pad", "WEBM"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(sorted(PARAMETERS) + ["model_source", "path"]), ANY_VALUE, max_size=6))
def test_parser_accepts_or_names_a_field(sample_rgb, params):
    try:
        request = parse_request(sample_rgb, params, CONFIG, model_num_frames=25)
    except InvalidRequest as error:
        assert error.field in PARAMETERS or error.field in ("model_source", "path", "image")
        assert str(error).startswith(error.field + ": ")
        return
    assert 64 <= request.width <= 2048 and request.width % 8 == 0 and request.width * request.height <= CONFIG.max_pixels
    assert 2 <= request.num_frames <= CONFIG.max_num_frames and 1 <= request.decode_chunk_size <= request.num_frames
    assert 1 <= request.num_inference_steps <= 100 and 0 <= request.seed <= MAX_SEED
    assert request.min_guidance_scale <= request.max_guidance_scale
    assert request.image.size == (request.width, request.height) and request.image.mode == "RGB"


# --- budgets by construction: every accepted request is within every limit of its deployment ---

def test_keep_mode_is_held_to_the_work_budget():
    """512×512 with keep, 16 frames, 100 steps: ~25× the cpu config's budget, refused before any work."""
    cpu = EngineConfig(max_pixels=262144, max_num_frames=16, max_work=16777216)
    message = rejected(encode_image(Image.new("RGB", (512, 512))), "num_frames", cpu,
                       resize_mode="keep", num_frames=16, num_inference_steps=100)
    assert "max_work budget of 16777216" in message and "512×512×16×100" in message and "resize_mode=keep" in message


# One check per limit in EngineConfig, given the request and the encoded input; a new max_* field
# fails test_every_limit_is_guarded until it is checked here.
LIMIT_CHECKS = {
    "max_pixels": lambda request, config, upload: request.width * request.height <= config.max_pixels,
    "max_num_frames": lambda request, config, upload: request.num_frames <= config.max_num_frames,
    "max_work": lambda request, config, upload: request.work <= config.max_work
        and request.width * request.height * request.num_frames * math.ceil(request.num_inference_steps / request.cache_interval)
        * request.segments * CONDITIONAL_STEP_COST <= request.work,  # whole UNet steps count at least half (conditional only)
    "max_segments": lambda request, config, upload: request.segments <= config.max_segments,
    "max_cache_interval": lambda request, config, upload: request.cache_interval <= config.max_cache_interval,
    "max_output_frames": lambda request, config, upload: output_frame_count(
        request.num_frames, request.segments, request.interpolate, request.loop) <= config.max_output_frames,
    "max_image_bytes": lambda request, config, upload: len(upload[0]) <= config.max_image_bytes,
    "max_image_pixels": lambda request, config, upload: upload[1] * upload[2] <= config.max_image_pixels,
}


def test_every_limit_is_guarded():
    import dataclasses

    limits = {f.name for f in dataclasses.fields(EngineConfig) if f.name.startswith("max_")}
    assert limits == set(LIMIT_CHECKS), f"limits without a check in LIMIT_CHECKS: {sorted(limits - set(LIMIT_CHECKS))}"


def _upload(width: int, height: int) -> tuple[bytes, int, int]:
    return encode_image(Image.new("RGB", (width, height), (90, 140, 200))), width, height


PLAUSIBLE = {  # values near and across each field's bounds, so that many requests are accepted
    "width": st.integers(8, 160).map(lambda n: n * 8), "height": st.integers(8, 160).map(lambda n: n * 8),
    "resize_mode": st.sampled_from(["crop", "pad", "stretch", "keep"]),
    "num_frames": st.integers(2, 40), "num_inference_steps": st.integers(1, 100),
    "decode_chunk_size": st.integers(1, 40), "video_format": st.sampled_from(["mp4", "gif", "webp", "frames"]),
    "segments": st.integers(1, 10), "interpolate": st.integers(1, 4),
    "cache_interval": st.integers(1, 10), "cache_branch_id": st.integers(0, 3),
    "conditional_final_steps": st.integers(0, 100), "max_guidance_scale": st.sampled_from([1.0, 3.0]),
    "loop": st.sampled_from(["none", "pingpong", "crossfade"]),
}


@settings(max_examples=400, deadline=None)
@given(params=st.fixed_dictionaries({}, optional=PLAUSIBLE),
       size=st.tuples(st.integers(32, 1600), st.integers(32, 1200)),
       config=st.builds(EngineConfig, default_width=st.just(64), default_height=st.just(64),
                        max_pixels=st.integers(64 * 64, 1024 * 1024), max_num_frames=st.integers(2, 30),
                        max_segments=st.integers(1, 8), max_output_frames=st.integers(2, 500),
                        max_cache_interval=st.integers(1, 10),
                        max_work=st.integers(64 * 64 * 2, 1024 * 576 * 25 * 50),
                        max_image_bytes=st.one_of(st.just(20 * 1024 * 1024), st.integers(100, 20_000)),
                        max_image_pixels=st.one_of(st.just(40_000_000), st.integers(1000, 2_000_000))))
def test_every_accepted_request_is_within_every_limit(params, size, config):
    upload = _upload(*size)
    try:
        request = parse_request(upload[0], params, config, model_num_frames=25)
    except InvalidRequest:
        return
    broken = [name for name, within in LIMIT_CHECKS.items() if not within(request, config, upload)]
    assert not broken, f"accepted a request over {broken}: {request}"
    assert request.image.size == (request.width, request.height)


@pytest.mark.parametrize("precision, refused, least, accepted", [
    ("float16", 1.0004, "1.001", 1.001), ("bfloat16", 1.0039, "1.008", 1.008), ("float32", 1 + 2.0**-24, "1.001", 1 + 2.0**-22),
    ("float16", 1.00048829, "1.001", 1.0005),  # above the float16 midpoint, but float32 (diffusers' linspace) rounds it onto it
])
def test_a_guidance_scale_that_is_1_in_the_model_s_precision_is_refused_naming_what_works(sample_png, precision, refused,
                                                                                           least, accepted):
    with pytest.raises(InvalidRequest) as caught:
        parse_request(sample_png, {"max_guidance_scale": refused}, CONFIG, model_num_frames=25, precision=precision)
    assert caught.value.field == "max_guidance_scale"
    assert f"is 1 in {precision}" in str(caught.value) and f"at least {least}" in str(caught.value)
    request = parse_request(sample_png, {"max_guidance_scale": accepted}, CONFIG, model_num_frames=25, precision=precision)
    assert request.max_guidance_scale == accepted
