"""The work of one full SVD-XT video (25 frames, 1024×576, batch 1), counted, not timed: UNet passes and TFLOP for
stock diffusers at 25 steps and for each preset and switch. Needs no GPU and computes nothing.

Each model is built from its real architecture on the meta device (diffusers' UNetSpatioTemporalConditionModel
and AutoencoderKLTemporalDecoder defaults are SVD-XT's; the image encoder is SVD's CLIP ViT-H/14), and
torch.utils.flop_counter.FlopCounterMode counts one call of each: the UNet on 2 samples (guided) and on 1
(conditional-only), with stock attention and with the engine's cross-attention shortcut
(svd_engine.cross_attention), the cached steps' shallow branch (svd_engine.feature_cache), the temporal VAE decode of
25 frames (SVD's VAE: diffusers' class with SVD's four blocks), and the image encoder plus the VAE encode of the
conditioning image. A configuration's UNet work is then
the sum over its denoising steps of the pass each step runs (guided or conditional-only, whole or shallow).
"""
from __future__ import annotations

import argparse

from benchmarks.report import markdown_table, write_section

FRAMES, WIDTH, HEIGHT = 25, 1024, 576


def flops(call) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.device("meta"):
        call()
    return counter.get_total_flops()


def count_models() -> dict[str, float]:
    """TFLOP of one call of each piece at full size."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from svd_engine.cross_attention import use_single_token_cross_attention
    from svd_engine.feature_cache import CachedUNet, CachePlan, FeatureCache

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel().to("meta")  # .to: parameters made from data land on the CPU
        vae = AutoencoderKLTemporalDecoder(  # SVD's VAE (the class's own defaults are a one-block toy)
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2
        ).to("meta")
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=1024, hidden_act="gelu")).to("meta")

    def unet_inputs(batch: int):
        return (torch.empty(batch, FRAMES, 8, HEIGHT // 8, WIDTH // 8, device="meta"), torch.tensor(1.0, device="meta"),
                torch.empty(batch, 1, 1024, device="meta"), torch.empty(batch, 3, device="meta"))

    counted = {}
    unet.eval(), vae.eval(), encoder.eval()
    for batch in (2, 1):
        counted[f"stock unet b{batch}"] = flops(lambda b=batch: unet(*unet_inputs(b), return_dict=False))
    use_single_token_cross_attention(unet.eval())  # eval: in training mode the shortcut stands aside
    cache = FeatureCache(unet)
    for batch in (2, 1):
        counted[f"unet b{batch}"] = flops(lambda b=batch: unet(*unet_inputs(b), return_dict=False))
        split = CachedUNet(cache, CachePlan(3, 0), unet)
        split(*unet_inputs(batch))  # step 0: the whole pass, which keeps the feature
        counted[f"shallow b{batch}"] = flops(lambda b=batch, shallow=split: shallow(*unet_inputs(b)))
    latents = torch.empty(FRAMES, 4, HEIGHT // 8, WIDTH // 8, device="meta")
    counted["vae decode"] = flops(lambda: vae.decode(latents, num_frames=FRAMES))
    counted["image encoder"] = flops(lambda: encoder(torch.empty(1, 3, 224, 224, device="meta")))
    counted["vae encode"] = flops(lambda: vae.encode(torch.empty(1, 3, HEIGHT, WIDTH, device="meta")))
    return {name: value / 1e12 for name, value in counted.items()}


CONFIGURATIONS = [
    # name, steps, conditional-only final steps, cache interval, stock attention
    ("stock diffusers (25 Karras steps, guided)", 25, 0, 1, True),
    ("quality (the default: stock + the exact cross-attention shortcut)", 25, 0, 1, False),
    ("schedule=ays, 10 steps", 10, 0, 1, False),
    ("conditional_final_steps=4 at 25 steps", 25, 4, 1, False),
    ("cache_interval=3 (branch 0) at 25 steps", 25, 0, 3, False),
    ("balanced (ays, 15 steps, last 3 conditional-only)", 15, 3, 1, False),
    ("fast (ays, 10 steps, last 4 conditional-only)", 10, 4, 1, False),
    ("fast + cache_interval=3", 10, 4, 3, False),
]


def unet_work(counted: dict[str, float], steps: int, window: int, interval: int, stock: bool) -> tuple[float, float]:
    """(UNet passes in batch-1 units, UNet TFLOP) of one video's denoising."""
    passes = tflop = 0.0
    for step in range(steps):
        batch = 1 if step >= steps - window else 2
        if interval == 1 or step % interval == 0:
            passes += batch
            tflop += counted[f"{'stock ' if stock else ''}unet b{batch}"]
        else:
            passes += batch * counted[f"shallow b{batch}"] / counted[f"unet b{batch}"]
            tflop += counted[f"shallow b{batch}"]
    return passes, tflop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    counted = count_models()
    fixed = counted["vae decode"] + counted["image encoder"] + counted["vae encode"]
    stock_passes, stock_unet = unet_work(counted, *CONFIGURATIONS[0][1:])
    rows = []
    for name, *plan in CONFIGURATIONS:
        passes, unet = unet_work(counted, *plan)
        rows.append([name, f"{passes:.1f}", f"{unet:.0f}", f"{unet + fixed:.0f}", f"{stock_unet / unet:.2f}×",
                     f"{(stock_unet + fixed) / (unet + fixed):.2f}×"])
    table = markdown_table(["configuration", "UNet passes (batch-1 units)", "UNet TFLOP", "video TFLOP",
                            "UNet work vs stock", "video work vs stock"], rows)
    pieces = (f"One UNet call at 25 frames, 1024×576: {counted['stock unet b2']:.1f} TFLOP guided (2 samples) with "
              f"stock attention, {counted['unet b2']:.1f} with the cross-attention shortcut, {counted['unet b1']:.1f} "
              f"conditional-only; a cached step's shallow branch (interval 3, branch 0) "
              f"{counted['shallow b2'] / counted['unet b2']:.2f} of a whole one. Fixed per video: VAE decode "
              f"{counted['vae decode']:.1f}, image encoder {counted['image encoder']:.2f}, VAE encode "
              f"{counted['vae encode']:.2f} TFLOP.")
    fast, cached = (stock_unet / unet_work(counted, 10, 4, interval, False)[1] for interval in (1, 3))
    goals = (f"Goals: fast's UNet work at most 1/3 of stock ({fast:.2f}× "
             f"fewer), fast with caching at most 1/4.5 ({cached:.2f}× "
             f"fewer). Counted work, not speed: the quality of these switches on SVD-XT with its real weights has not "
             f"been measured here.")
    print(table, pieces, goals, sep="\n\n")
    if not args.no_write:
        write_section("work-table", "Work per video, counted (SVD-XT, 25 frames, 1024×576)",
                      f"{table}\n\n{pieces}\n\n{goals}\n\nCommand: `make bench-work` (`python -m benchmarks.work_table`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
