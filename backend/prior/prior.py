"""The Joker prior: text + reference image + normal map -> image, and the distillation primitives.

One guided noise prediction (CFG rows ordered [uncond, cond] like diffusers' pipelines; row order does not change
the result):

    ε̂ = ε_u + w (ε_c - ε_u),   ε_b = UNet(x_t, t, text_b, ControlNet(x_t, t, text_b, control), ref_b(t))

where ref_b(t) are the reference UNet's attn1 inputs for the un-noised reference latent at the same t and the same
text as branch b (docs/REFERENCE.md §2): the reference stays in both branches, only the text is dropped. With
``reference_cache`` the reference UNet runs once per (t, branch) and its tokens (and their K/V projections) serve
every view of the batch and every call at that t; without it, it runs for every denoiser row at every call, as the
authors' code does. Both give the same numbers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from backend import costs
from backend.prior.attention import ReferenceBank, ReferenceRecorded, install_reference_attention
from backend.prior.models import PriorModules
from backend.prior.sampling import add_noise, alphas_cumprod, ddim_step, make_scheduler, truncated_timesteps
from backend.prior.errors import PriorError

StepCallback = Callable[[int, int], None]  # (steps done, total); may raise to cancel


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA (what the authors' distillation runs), fp32 on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@contextlib.contextmanager
def out_of_memory_as_job_error() -> Iterator[None]:
    """CUDA out-of-memory -> a :class:`PriorError` the server reports while it lives on."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        raise PriorError(f"the GPU ran out of memory in the prior: {str(e).splitlines()[0]}",
                         "set prior.attention_slicing to on, use fewer views per batch or fp16/bf16, or close other "
                         "GPU programs", code="out_of_memory") from e


@dataclass
class Reference:
    """Encoded reference images: latents [n_ref, 4, h, w]; ``noise`` (same shape) for the training-free variant."""

    latents: torch.Tensor
    noise: Optional[torch.Tensor] = None


class JokerPrior:
    """The prior on one device. Build with :func:`backend.prior.load_prior` or from :class:`PriorModules`."""

    def __init__(self, modules: PriorModules, device: str | torch.device = "cpu", precision: str = "auto",
                 attention_slicing: str = "auto", compile: bool = False, controlnet_scale: float = 1.0,
                 reference_cache: bool = True, reference_attention: bool = True) -> None:
        self.m, self.device = modules, torch.device(device)
        self.reference_attention = reference_attention
        self.dtype = resolve_dtype(precision, self.device)
        self.controlnet_scale, self.reference_cache = controlnet_scale, reference_cache
        for name, module in modules.modules().items():  # fp16 VAEs overflow; keep the VAE in fp32 then
            dtype = torch.float32 if name == "vae" and self.dtype == torch.float16 else self.dtype
            module.to(self.device, dtype).eval().requires_grad_(False)
        slicing = _slicing_on(attention_slicing, self.device)
        if slicing:
            modules.vae.enable_slicing()
        self.bank = ReferenceBank()
        layers = install_reference_attention(modules.unet, self.bank, query_chunk=1024 if slicing else 0)
        if modules.ref_unet is not modules.unet:
            install_reference_attention(modules.ref_unet, self.bank, query_chunk=1024 if slicing else 0)
        self.bank.stop_after = None if compile else layers[-1]  # the ref UNet's tail after it is unused
        self.unet, self.ref_unet, self.controlnet = modules.unet, modules.ref_unet, modules.controlnet
        if compile:
            self.unet, self.controlnet = torch.compile(self.unet), self.controlnet and torch.compile(self.controlnet)  # type: ignore[assignment]  # same call interface
        self.ac = alphas_cumprod(modules.scheduler_config).to(self.device)
        self.vae_scale = 2 ** (len(modules.vae.config.block_out_channels) - 1)
        self.resolution = modules.unet.config.sample_size * self.vae_scale  # 512 for SD1.5
        self._ref_key: Optional[tuple] = None
        self.counter = costs.CostCounter()  # network passes per sample, added where each network runs

    # --- encoders ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """[N, 77, D] CLIP last hidden states (BOS/EOS, truncated and padded to 77 with the pad token)."""
        tok = self.m.tokenizer(prompts, padding="max_length", max_length=self.m.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
        return self.m.text_encoder(tok.input_ids.to(self.device))[0].to(self.dtype)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                      sample: bool = True) -> torch.Tensor:
        """images [N, 3, R, R] in 0..1 -> latents [N, 4, R/8, R/8] (posterior sample, or its mean) x scaling."""
        vae = self.m.vae
        dist = vae.encode((images * 2 - 1).to(self.device, vae.dtype)).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        self.counter.add(costs.VAE_ENCODES, images.shape[0])
        return (z * vae.config.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [N, 4, h, w] -> float32 images [N, 3, 8h, 8w] in 0..1."""
        vae = self.m.vae
        x = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample
        self.counter.add(costs.VAE_DECODES, latents.shape[0])
        return (x.float() / 2 + 0.5).clamp(0, 1)

    def prepare_control(self, normals: torch.Tensor) -> torch.Tensor:
        """Normal maps [N, 3, H, W] in [-1, 1] (``shared.conventions.normals_to_control``) -> ControlNet input at
        the prior's resolution, in this ControlNet's colour convention."""
        c = normals.to(self.device, torch.float32)
        if c.shape[-1] != self.resolution or c.shape[-2] != self.resolution:
            c = F.interpolate(c, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
        return self.m.control.apply(c).to(self.dtype)

    def prepare_reference(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> Reference:
        """Reference portraits [n_ref, 3, H, W] in 0..1 -> :class:`Reference` (posterior mean: deterministic)."""
        x = F.interpolate(images.float(), size=(self.resolution,) * 2, mode="bilinear", align_corners=False) \
            if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution else images.float()
        z = self.encode_images(x.clamp(0, 1), sample=False)
        noise = None
        if self.m.reference_noised:
            noise = torch.randn(z.shape, generator=generator or torch.Generator().manual_seed(0)).to(z)
        return Reference(z, noise)

    # --- reference features ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def record_reference(self, reference: Reference, text: torch.Tensor, t: torch.Tensor | int) -> None:
        """Run the reference UNet for every text row (one group each) at timestep t and keep its attn1 inputs:
        bank.tokens[layer] = [G, n_ref * L, C]."""
        n_ref, groups = reference.latents.shape[0], text.shape[0]
        z = reference.latents
        if reference.noise is not None:  # training-free variant: its UNet only knows noised latents at level t
            z = add_noise(z, reference.noise, int(t), self.ac)
        z = z.repeat(groups, 1, 1, 1)  # [G * n_ref, 4, h, w], group-major
        self.bank.clear()
        self.bank.mode = "record"
        self.counter.add(costs.REF_UNET, z.shape[0])
        try:
            self.ref_unet(z, t, encoder_hidden_states=text.repeat_interleave(n_ref, dim=0))
        except ReferenceRecorded:
            pass
        finally:
            self.bank.mode = "off"
        self.bank.finish_record(n_ref)
        self._ref_key = None

    def _reference_rows(self, reference: Reference, text: torch.Tensor, t: torch.Tensor | int,
                        rows_per_group: int) -> torch.Tensor:
        """Fill the bank for a denoiser call with ``rows_per_group`` rows per text group; return row -> group."""
        groups = text.shape[0]
        if self.reference_cache:
            key = (id(reference), int(t), text.data_ptr(), tuple(text.shape))
            if self._ref_key != key:
                self.record_reference(reference, text, t)
                self._ref_key = key
            return torch.arange(groups, device=self.device).repeat_interleave(rows_per_group)
        self.record_reference(reference, text.repeat_interleave(rows_per_group, dim=0), t)  # one row each
        return torch.arange(groups * rows_per_group, device=self.device)

    # --- noise prediction ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: torch.Tensor | int, text: torch.Tensor, control: Optional[torch.Tensor],
            reference: Optional[Reference], cfg: float) -> torch.Tensor:
        """Guided ε̂ for latents x [B, 4, h, w]; text [2, 77, D] = (uncond, cond) or [1, 77, D] without CFG;
        control [B, 3, R, R] (``prepare_control``) or None."""
        groups, batch = text.shape[0], x.shape[0]
        x_in = torch.cat([x] * groups)
        text_rows = text.repeat_interleave(batch, dim=0)
        control_rows = None if control is None else torch.cat([control] * groups)
        use_reference = reference is not None and self.reference_attention
        rows = self._reference_rows(reference, text, t, batch) if use_reference else None
        e = self._eps_rows(x_in, t, text_rows, control_rows, rows)
        self.counter.add(costs.PRIOR_EVALS, batch)
        if groups == 1:
            return e
        e_uncond, e_cond = e.chunk(2)
        return e_uncond + cfg * (e_cond - e_uncond)

    def _eps_rows(self, x: torch.Tensor, t: torch.Tensor | int, text: torch.Tensor,
                  control: Optional[torch.Tensor], rows: Optional[torch.Tensor]) -> torch.Tensor:
        residuals = {}
        if self.controlnet is not None and control is not None and self.controlnet_scale > 0:
            down, mid = self.controlnet(x, t, encoder_hidden_states=text, controlnet_cond=control,
                                        conditioning_scale=self.controlnet_scale, guess_mode=False, return_dict=False)
            self.counter.add(costs.CONTROLNET, x.shape[0])
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        self.bank.rows, self.bank.mode = rows, ("read" if rows is not None else "off")
        self.counter.add(costs.UNET, x.shape[0])
        try:
            return self.unet(x, t, encoder_hidden_states=text, **residuals).sample
        finally:
            self.bank.mode = "off"

    def text_pair(self, prompt: str, negative_prompt: str, cfg: float) -> torch.Tensor:
        """[2, 77, D] (negative, prompt) for CFG, or [1, 77, D] when cfg <= 1 (like diffusers)."""
        return self.encode_text([negative_prompt, prompt]) if cfg > 1 else self.encode_text([prompt])

    # --- 2D generation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, control: Optional[torch.Tensor], prompt: str, negative_prompt: str = "",
                 reference: Optional[Reference] = None, steps: int = 100, cfg: float = 3.0, sampler: str = "pndm",
                 generator: Optional[torch.Generator] = None, batch: int = 1,
                 callback: Optional[StepCallback] = None) -> torch.Tensor:
        """Images [B, 3, R, R] in 0..1 from pure noise (docs/REFERENCE.md §3: PNDM 100 steps, cfg 3 by default).
        control: [B, 3, R, R] from :meth:`prepare_control` (B sets the batch) or None (then ``batch``)."""
        from diffusers.utils.torch_utils import randn_tensor

        scheduler = make_scheduler(sampler, self.m.scheduler_config)
        scheduler.set_timesteps(steps, device=self.device)
        text = self.text_pair(prompt, negative_prompt, cfg)
        b = control.shape[0] if control is not None else batch
        shape = (b, self.unet.config.in_channels, self.resolution // self.vae_scale, self.resolution // self.vae_scale)
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        latents = latents * scheduler.init_noise_sigma
        extra = {"eta": 0.0} if sampler == "ddim" else {}
        self._ref_key = None
        for i, t in enumerate(scheduler.timesteps):
            e = self.eps(scheduler.scale_model_input(latents, t), t, text, control, reference, cfg)
            latents = scheduler.step(e, t, latents, **extra).prev_sample
            if callback:
                callback(i + 1, len(scheduler.timesteps))
        return self.decode(latents)

    # --- distillation primitives -----------------------------------------------------------------------------------
    @torch.no_grad()
    def truncated_ddim(self, x_t: torch.Tensor, t: int, n_steps: int, text: torch.Tensor,
                       control: Optional[torch.Tensor], reference: Optional[Reference], cfg: float,
                       callback: Optional[StepCallback] = None) -> torch.Tensor:
        """DDIM from level t over linspace(t, 0, n + 1)[:n] and then to "0" (ᾱ_0): n = 1 is Stage 1's one-step x̂0,
        n = k Stage 2's truncated run. x_t [B, 4, h, w] -> latents [B, 4, h, w] (views batched)."""
        ts = truncated_timesteps(t, n_steps)
        x = x_t
        for i, t_i in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else 0
            e = self.eps(x.to(self.dtype), torch.tensor(t_i, device=self.device), text, control, reference, cfg)
            x = ddim_step(x, e, t_i, t_prev, self.ac)
            if callback:
                callback(i + 1, len(ts))
        return x.to(self.dtype)

    @torch.no_grad()
    def denoise_images(self, images: torch.Tensor, t: int, n_steps: int, text: torch.Tensor,
                       control: Optional[torch.Tensor], reference: Optional[Reference], cfg: float,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Renders [B, 3, H, W] 0..1 -> targets [B, 3, R, R] 0..1: upsample (bilinear), encode (posterior sample),
        noise to t with fresh ε per view, truncated DDIM, decode (docs/REFERENCE.md §4 "one target update")."""
        from diffusers.utils.torch_utils import randn_tensor

        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
        x0 = self.encode_images(x.clamp(0, 1), generator=generator)
        noise = randn_tensor(x0.shape, generator=generator, device=self.device, dtype=x0.dtype)
        x_t = add_noise(x0, noise, t, self.ac)
        return self.decode(self.truncated_ddim(x_t, t, n_steps, text, control, reference, cfg))


def _slicing_on(setting: str, device: torch.device) -> bool:
    if setting == "auto":
        return device.type == "cuda" and torch.cuda.get_device_properties(device).total_memory < 12 * 2**30
    return setting == "on"
