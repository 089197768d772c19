"""Peak memory of a sprite sheet (`GET /v1/videos/{id}/content?variant=spritesheet`) of the largest video the
limits allow, built by the gateway's code (ffmpeg scales each frame down to a sprite, pasted as it arrives)
and by the decode-everything approach it replaced (every frame at full size in a list, then resized).

The largest video: the most frames any request may deliver under model_repository/svd_xt/config.pbtxt
(max_num_frames, max_segments, interpolate up to its contract bound, loops, max_output_frames), at the
largest square side within max_pixels; a moving test pattern (ffmpeg's testsrc2) encoded as the engine
encodes MP4. Each approach builds the sheet once in a fresh Python process, which reports its own peak RSS
and its ffmpeg child's. Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import REPOSITORY, markdown_table, write_section
from svd_gateway.media import SHEET_SIDE

CONFIG = REPOSITORY / "svd_xt" / "config.pbtxt"
PARAMETER = re.compile(r'key:\s*"(\w+)",\s*value:\s*\{\s*string_value:\s*"([^"]*)"')
LIMITS = ("max_pixels", "max_num_frames", "max_segments", "max_output_frames", "max_work")
APPROACHES = ("gateway", "decode_everything")


def largest_video(config: Path = CONFIG) -> tuple[int, int, dict]:
    """(frames, square side, the request that delivers them) at this deployment's limits."""
    from svd_contract import LOOPS, PARAMETERS
    from svd_engine.postprocess import output_frame_count

    limits = {name: int(value) for name, value in PARAMETER.findall(config.read_text()) if name in LIMITS}
    side = min(math.isqrt(limits["max_pixels"]) // 8 * 8, PARAMETERS["width"].high)
    interpolate = PARAMETERS["interpolate"]
    requests = [{"num_frames": n, "segments": s, "interpolate": i, "loop": loop}
                for n in range(PARAMETERS["num_frames"].low, limits["max_num_frames"] + 1)
                for s in range(1, limits["max_segments"] + 1) for i in range(interpolate.low, interpolate.high + 1)
                for loop in LOOPS if side * side * n * s <= limits["max_work"]]  # at one step: the least work
    request = max((r for r in requests if output_frame_count(**r) <= limits["max_output_frames"]),
                  key=lambda r: output_frame_count(**r))
    return output_frame_count(**request), side, request


def synthesize(path: Path, frames: int, side: int, fps: int = 7) -> None:
    """A moving test pattern, encoded with the engine's MP4 settings."""
    import imageio_ffmpeg

    from svd_engine.video import ENCODERS

    mp4 = ENCODERS["mp4"]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                    "-i", f"testsrc2=size={side}x{side}:rate={fps}", "-frames:v", str(frames), *mp4.codec_args,
                    *mp4.quality_args(None), "-y", str(path)], check=True)


def decode_everything(video: bytes, scratch: Path) -> bytes:
    """The baseline: the sprite sheet as the gateway built it before, every frame decoded at full size first."""
    import imageio_ffmpeg
    from PIL import Image

    from svd_gateway.media import SPRITE_WIDTH, jpeg

    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".video") as source:
        source.write(video)
        source.flush()
        reader = imageio_ffmpeg.read_frames(source.name)
        try:
            size = next(reader)["size"]
            frames = [Image.frombytes("RGB", size, raw) for raw in reader]
        finally:
            reader.close()
    width = min(SPRITE_WIDTH, frames[0].width)
    height = round(frames[0].height * width / frames[0].width)
    columns = math.ceil(math.sqrt(len(frames)))
    sheet = Image.new("RGB", (columns * width, math.ceil(len(frames) / columns) * height))
    for index, frame in enumerate(frames):
        sheet.paste(frame.resize((width, height), Image.Resampling.BILINEAR),
                    ((index % columns) * width, (index // columns) * height))
    return jpeg(sheet)


def child(approach: str, video_path: str) -> None:
    """In the fresh process: build the sheet once, print what it cost as JSON."""
    from PIL import Image

    from svd_gateway import media

    build = media.spritesheet if approach == "gateway" else decode_everything
    video = Path(video_path).read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        sheet = build(video, Path(scratch))
    seconds = time.perf_counter() - started
    print(json.dumps({"before_kib": before, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "ffmpeg_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "seconds": seconds,
                      "size": Image.open(io.BytesIO(sheet)).size, "jpeg_bytes": len(sheet)}))


def measure(approach: str, video: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.spritesheet", "--child", approach, str(video)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def count_seconds(video: Path) -> tuple[float, float]:
    """The frame count the gateway takes (a stream copy) vs counting decoded frames, in seconds."""
    import imageio_ffmpeg

    from svd_gateway.media import probe

    started = time.perf_counter()
    probe(video)
    copied = time.perf_counter()
    imageio_ffmpeg.count_frames_and_secs(str(video))
    return copied - started, time.perf_counter() - copied


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, help="frames of the video (default: the most the limits allow)")
    parser.add_argument("--side", type=int, help="width and height (default: the largest square within max_pixels)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--child", nargs=2, metavar=("APPROACH", "VIDEO"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    most, largest, request = largest_video()
    frames, side = args.frames or most, args.side or largest
    with tempfile.TemporaryDirectory(prefix="spritesheet-bench-") as folder:
        video = Path(folder) / "video.mp4"
        synthesize(video, frames, side)
        rows = []
        for approach in APPROACHES:
            cost = measure(approach, video)
            rows.append([f"`{approach}`", "×".join(map(str, cost["size"])), mib(cost["before_kib"]),
                         mib(cost["peak_kib"]), mib(cost["peak_kib"] - cost["before_kib"]), mib(cost["ffmpeg_kib"]),
                         f"{cost['seconds']:.1f}"])
            print(rows[-1], flush=True)
        copy_seconds, decode_seconds = count_seconds(video)
        megabytes = video.stat().st_size / 1e6
    table = markdown_table(["approach", "sheet", "Python RSS before, MiB", "Python peak RSS, MiB",
                            "peak − before, MiB", "ffmpeg peak RSS, MiB", "seconds"], rows)
    shape = ", ".join(f"{name}={value}" for name, value in request.items())
    body = (f"The sprite sheet of a {frames}-frame {side}×{side} MP4 ({megabytes:.1f} MB; the largest video a request "
            f"may get under config.pbtxt's limits is {most} frames at {largest}×{largest}, e.g. {shape}), built once "
            "per approach in a fresh process: `gateway` is svd_gateway.media.spritesheet (ffmpeg scales each frame "
            f"to a sprite, each is pasted as it arrives, the sheet is at most {SHEET_SIDE}×{SHEET_SIDE}); "
            "`decode_everything` is the code it replaced (every frame decoded at full size into a list, then "
            "resized). Python RSS before: after imports and reading the video's bytes; ffmpeg runs beside it, so "
            f"the pod's peak is about the sum.\n\n{table}\n\nCounting the frames first (which sizes the sprites "
            f"before any is decoded): the stream copy the gateway runs took {copy_seconds:.2f} s, counting decoded "
            f"frames (imageio_ffmpeg.count_frames_and_secs) {decode_seconds:.2f} s.")
    print(body)
    if not args.no_write:
        write_section("spritesheet", "Sprite sheets: memory", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
