"""The prior's sampler against diffusers' own pipelines, and reference-feature caching against no caching.

Tiny random weights written to disk and loaded through the real loading code (testkit.tiny_prior)."""

from __future__ import annotations

import pytest
import torch

from backend.prior import layout, load_prior
from testkit.tiny_prior import TINY_RESOLUTION
from shared.config.prior import PriorConfig
from tests.support import assert_close

R = TINY_RESOLUTION


def _stock_components(models, with_controlnet: bool):
    """Fresh, unmodified diffusers components from the same folder (stock attention processors)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = models / layout.SD15_DIR
    parts = dict(vae=AutoencoderKL.from_pretrained(sd / "vae"), text_encoder=CLIPTextModel.from_pretrained(sd / "text_encoder"),
                 tokenizer=CLIPTokenizer.from_pretrained(sd / "tokenizer"), unet=UNet2DConditionModel.from_pretrained(sd / "unet"),
                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if with_controlnet:
        parts["controlnet"] = ControlNetModel.from_pretrained(models / layout.CONTROLNET_DIR)
    return parts


def _normals(seed: int, n: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, R, R, generator=g) * 2 - 1


@pytest.mark.parametrize("sampler", ["pndm", "ddim"])
def test_sampler_equals_stable_diffusion_pipeline_without_reference_and_control(models, sampler):
    from diffusers import StableDiffusionPipeline

    from backend.prior.sampling import make_scheduler

    prior = load_prior(PriorConfig(mode="free", controlnet_scale=0.0, reference_attention=False), models, "cpu")
    ours = prior.generate(prior.prepare_control(_normals(0)), "a woman laughing", "blurry",
                          reference=prior.prepare_reference(torch.rand(1, 3, R, R)), steps=3, cfg=3.0,
                          sampler=sampler, generator=torch.Generator().manual_seed(7))
    pipe = StableDiffusionPipeline(scheduler=make_scheduler(sampler, prior.m.scheduler_config),
                                   **_stock_components(models, False))
    theirs = pipe("a woman laughing", negative_prompt="blurry", height=R, width=R, num_inference_steps=3,
                  guidance_scale=3.0, generator=torch.Generator().manual_seed(7), output_type="pt").images
    assert ours.shape == theirs.shape == (1, 3, R, R)
    assert_close(ours, theirs)


def test_sampler_equals_controlnet_pipeline(models):
    from diffusers import StableDiffusionControlNetPipeline

    from backend.prior.sampling import make_scheduler

    prior = load_prior(PriorConfig(mode="free", reference_attention=False), models, "cpu")
    control = prior.prepare_control(_normals(1))  # normalbae convention: 0..1, red flipped
    assert 0 <= float(control.min()) and float(control.max()) <= 1
    ours = prior.generate(control, "a man with a big smile", steps=3, cfg=3.0, sampler="pndm",
                          generator=torch.Generator().manual_seed(3))
    pipe = StableDiffusionControlNetPipeline(scheduler=make_scheduler("pndm", prior.m.scheduler_config),
                                             **_stock_components(models, True))
    theirs = pipe("a man with a big smile", image=control, height=R, width=R, num_inference_steps=3,
                  guidance_scale=3.0, generator=torch.Generator().manual_seed(3), output_type="pt").images
    assert_close(ours, theirs)
    no_control = load_prior(PriorConfig(mode="free", controlnet_scale=0.0, reference_attention=False), models, "cpu")
    plain = no_control.generate(control, "a man with a big smile", steps=3, cfg=3.0,
                                generator=torch.Generator().manual_seed(3))
    assert (plain - ours).abs().max() > 1e-3  # the ControlNet really acts


@pytest.fixture(scope="module")
def joker(models):
    return load_prior(PriorConfig(mode="joker"), models, "cpu")


def test_cached_reference_features_equal_uncached(joker):
    views = joker.prepare_control(_normals(2, n=2))
    reference = joker.prepare_reference(torch.rand(2, 3, R, R, generator=torch.Generator().manual_seed(4)))  # 2 refs
    text = joker.text_pair("a man sticking his tongue out", "", 19.0)
    x_t = torch.randn(2, 4, R // 8, R // 8, generator=torch.Generator().manual_seed(5))
    out = {}
    for cache in (True, False):
        joker.reference_cache = cache
        out[cache] = joker.truncated_ddim(x_t, 400, 2, text, views, reference, 19.0)
    joker.reference_cache = True
    assert_close(out[True], out[False])
    joker.reference_attention = False
    without = joker.truncated_ddim(x_t, 400, 2, text, views, reference, 19.0)
    joker.reference_attention = True
    assert (without - out[True]).abs().max() > 1e-3  # the reference really reaches the denoiser


def test_reference_features_are_computed_once_per_timestep(joker, monkeypatch):
    calls = []
    original = joker.record_reference
    monkeypatch.setattr(joker, "record_reference", lambda *a: (calls.append(int(a[2])), original(*a))[1])
    views = joker.prepare_control(_normals(3, n=2))
    reference = joker.prepare_reference(torch.rand(1, 3, R, R))
    text = joker.text_pair("a woman", "", 19.0)
    x_t = torch.randn(2, 4, R // 8, R // 8)
    joker.truncated_ddim(x_t, 400, 3, text, views, reference, 19.0)
    assert calls == [400, 267, 133]  # linspace(400, 0, 4)[:3], rounded
    joker.truncated_ddim(x_t[:1], 133, 1, text, views[:1], reference, 19.0)  # same t, other views: reused
    assert calls == [400, 267, 133]


def test_reference_tokens_come_from_every_self_attention_layer(joker):
    from backend.prior.attention import self_attention_layers

    reference = joker.prepare_reference(torch.rand(1, 3, R, R))
    text = joker.text_pair("a man", "", 3.0)
    joker.record_reference(reference, text, torch.tensor(500))
    layers = self_attention_layers(joker.unet)
    assert len(layers) == 7  # tiny UNet: 2 down, 1 mid, 4 up (SD1.5: 16)
    assert layers[0].startswith("down_blocks.0") and layers[2].startswith("mid_block") and layers[-1].startswith("up_blocks.1")
    assert sorted(joker.bank.tokens) == sorted(layers)  # stopping after the last one lost none
    early = {k: v.clone() for k, v in joker.bank.tokens.items()}
    joker.bank.stop_after = None  # run the reference UNet to its end
    try:
        joker.record_reference(reference, text, torch.tensor(500))
    finally:
        joker.bank.stop_after = layers[-1]
    for name in layers:
        assert early[name].shape[0] == 2  # one group per CFG branch
        assert torch.equal(early[name], joker.bank.tokens[name])


def test_reference_attention_matches_the_written_formula():
    """out = W_o softmax(Q K^T / sqrt(d)) V with Q = W_q h, K/V = W_k/W_v [h ; r] (docs/REFERENCE.md §2), 2 heads."""
    from diffusers.models.attention_processor import Attention

    from backend.prior.attention import ReferenceAttnProcessor, ReferenceBank

    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    bank = ReferenceBank()
    attn.set_processor(ReferenceAttnProcessor("layer", bank, query_chunk=3))  # chunked queries, same result
    h, r = torch.randn(3, 5, 8), torch.randn(2, 2 * 5, 8)  # 3 rows, 2 groups of 2 reference views
    bank.tokens["layer"], bank.rows, bank.mode = r, torch.tensor([0, 1, 1]), "read"
    with torch.no_grad():
        out = attn(h)
        kv_in = torch.cat([h, r[bank.rows]], dim=1)
        q = attn.to_q(h).view(3, 5, 2, 4).transpose(1, 2)
        k = attn.to_k(kv_in).view(3, 15, 2, 4).transpose(1, 2)
        v = attn.to_v(kv_in).view(3, 15, 2, 4).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)
        expected = attn.to_out[0]((w @ v).transpose(1, 2).reshape(3, 5, 8))
    assert_close(out, expected)


def test_ddim_step_to_zero_keeps_alpha_bar_zero_like_diffusers():
    """Our eta-0 step equals DDIMScheduler's (set_alpha_to_one=False) for 100 -> 0: ᾱ_prev = alphas_cumprod[0]."""
    from diffusers import DDIMScheduler

    from backend.prior.models import SD15_SCHEDULER_CONFIG
    from backend.prior.sampling import alphas_cumprod, ddim_step, truncated_timesteps

    assert truncated_timesteps(400, 40) == list(range(400, 0, -10))
    assert truncated_timesteps(999, 1) == [999]
    ddim = DDIMScheduler.from_config({**SD15_SCHEDULER_CONFIG, "steps_offset": 0})
    ddim.set_timesteps(10)  # 900, 800, ..., 100, 0
    x, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    ac = alphas_cumprod(SD15_SCHEDULER_CONFIG)
    for t, t_prev in ((900, 800), (100, 0)):
        assert_close(ddim_step(x, eps, t, t_prev, ac), ddim.step(eps, t, x, eta=0.0).prev_sample)
    assert abs(float(ac[0]) - 0.99915) < 1e-5
