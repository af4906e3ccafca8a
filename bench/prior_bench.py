"""Per-view cost of the Stage-1 distillation primitive (encode -> noise to t -> one guided DDIM step -> decode) with
and without reference caching and view batching.

CPU (here): the tiny random configuration of testkit.tiny_prior. CUDA (where a GPU is lent): also the full
SD1.5-size architecture with random weights (no download), bf16, 512 px, with peak memory.

    python bench/prior_bench.py --quick
    python bench/prior_bench.py --quick --sd15-cpu   # also one Stage-1 update of the SD1.5-size prior on the CPU
                                                     # (~1.5 min, ~11 GiB): the full architecture runs end to end
Last line: ``prior: per_view_ms=… per_view_ms_uncached=… speedup=…`` (batched+cached vs batched+uncached).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.prior.models import PriorModules, joker_controlnet  # noqa: E402
from backend.prior.prior import JokerPrior  # noqa: E402
from testkit.tiny_prior import tiny_modules, tiny_tokenizer  # noqa: E402

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
SD15_CLIP = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                 max_position_embeddings=77, projection_dim=768)


def sd15_modules() -> dict[str, torch.nn.Module]:
    """SD1.5-size prior modules with random weights (2.3 B parameters, like the official checkpoint)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_tokenizer()
    mods = {"text_encoder": CLIPTextModel(CLIPTextConfig(vocab_size=49408, bos_token_id=tok.bos_token_id,
                                                         eos_token_id=tok.eos_token_id, **SD15_CLIP)),
            "vae": AutoencoderKL(**SD15_VAE), "unet": UNet2DConditionModel(**SD15_UNET),
            "ref_unet": UNet2DConditionModel(**SD15_UNET)}
    mods["controlnet"] = joker_controlnet(mods["ref_unet"])
    return mods


def build(full: bool, device: str, precision: str) -> JokerPrior:
    mods = sd15_modules() if full else tiny_modules(0)
    return JokerPrior(PriorModules(tokenizer=tiny_tokenizer(), **mods), device=device, precision=precision)


def per_view_ms(prior: JokerPrior, views: int, batch: int, cache: bool, updates: int, t0: int = 999) -> float:
    """ms per view of ``updates`` Stage-1 target updates over ``views`` views, ``batch`` views per call."""
    prior.reference_cache = cache
    g = torch.Generator().manual_seed(0)
    text = prior.text_pair("a man with a big smile", "", 19.0)
    reference = prior.prepare_reference(torch.rand(1, 3, prior.resolution, prior.resolution, generator=g))
    control = prior.prepare_control(torch.rand(views, 3, prior.resolution, prior.resolution, generator=g) * 2 - 1)
    renders = torch.rand(views, 3, prior.resolution // 4, prior.resolution // 4, generator=g)
    timesteps = [t0 - 10 * (i + 1) for i in range(updates)]  # a fresh level per update, as in Stage 1

    def update(t: int) -> None:
        for i in range(0, views, batch):
            prior.denoise_images(renders[i:i + batch], t, 1, text, control[i:i + batch], reference, 19.0, g)

    update(t0)  # warm-up (kernels, allocator)
    _sync(prior)
    start = time.perf_counter()
    for t in timesteps:
        update(t)
    _sync(prior)
    return (time.perf_counter() - start) * 1000 / (views * updates)


def _sync(prior: JokerPrior) -> None:
    if prior.device.type == "cuda":
        torch.cuda.synchronize(prior.device)


def run(full: bool, device: str, views: int, batch: int, updates: int, precision: str) -> dict[str, float]:
    prior = build(full, device, precision)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    res = {"cached": per_view_ms(prior, views, batch, True, updates),
           "uncached": per_view_ms(prior, views, batch, False, updates),
           "unbatched": per_view_ms(prior, views, 1, True, updates)}
    if device.startswith("cuda"):
        res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    name = "sd15" if full else "tiny"
    print(f"{name} {device} {prior.dtype} {prior.resolution}px views={views} batch={batch}: "
          f"cached {res['cached']:.1f} ms/view, uncached {res['uncached']:.1f} ms/view, "
          f"unbatched {res['unbatched']:.1f} ms/view" + (f", peak {res['peak_gib']:.2f} GiB" if "peak_gib" in res else ""))
    return res


def sd15_on_cpu() -> None:
    """One Stage-1 update of one view with the SD1.5-size random-weight prior on the CPU, with peak resident memory."""
    import resource

    t0 = time.perf_counter()
    prior = build(True, "cpu", "fp32")
    built = time.perf_counter() - t0
    ms = per_view_ms(prior, views=1, batch=1, cache=True, updates=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    params = sum(p.numel() for m in prior.m.modules().values() for p in m.parameters()) / 1e9
    print(f"sd15 cpu {prior.dtype} {prior.resolution}px: {params:.2f} B parameters built in {built:.0f} s, "
          f"{ms:.0f} ms/view (one Stage-1 update), peak RSS {peak:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 1 minute on a CPU)")
    parser.add_argument("--views", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--sd15-cpu", action="store_true", help="also run the SD1.5-size prior on the CPU (slow)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    # several batches per level, so the reference cache has something to save
    views, batch = args.views or (8 if args.quick else 32), args.batch or (2 if args.quick else 8)
    if args.sd15_cpu:
        sd15_on_cpu()
    headline = run(False, "cpu", views, batch, 1 if args.quick else 5, "fp32")
    if torch.cuda.is_available():
        headline = run(True, "cuda", views, batch, 2 if args.quick else 5, args.precision)
    else:
        print("sd15: skipped (no CUDA device; the SD1.5-size random-weight run needs a GPU)")
    print(f"prior: per_view_ms={headline['cached']:.1f} per_view_ms_uncached={headline['uncached']:.1f} "
          f"speedup={headline['uncached'] / headline['cached']:.2f}")


if __name__ == "__main__":
    main()
