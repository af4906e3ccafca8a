"""Settings of the 2D diffusion prior (shared by the CLI, the protocol and the add-on; field names are stable)."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import spec


@dataclass
class PriorConfig:
    mode: str = spec("joker", choices=("joker", "free", "oracle"),
                     doc="joker: the authors' checkpoint; free: any SD1.5 + normal ControlNet; oracle: test prior")
    precision: str = spec("auto", choices=("auto", "fp32", "fp16", "bf16"),
                          doc="auto: bf16 on CUDA, fp32 on CPU")
    base_model: str = spec("stable-diffusion-v1-5", max_len=512,
                           doc="SD1.5 diffusers folder, or (free mode) an artist's single-file fine-tune "
                               "(.safetensors/.ckpt/.pt/.bin, LDM/A1111 layout): a name under the models dir "
                               "or an absolute path")
    controlnet_scale: float = spec(1.0, lo=0.0, hi=2.0, doc="strength of the normal-map ControlNet (1 in the reference)")
    reference_attention: bool = spec(True, doc="append the reference image's self-attention tokens (identity)")
    reference_cache: bool = spec(True, doc="compute reference features once per timestep and reuse them")
    attention_slicing: str = spec("auto", choices=("auto", "off", "on"),
                                  doc="chunk attention to save memory; auto: on for GPUs under 12 GiB")
    compile: bool = spec(False, doc="torch.compile the UNets (CUDA; slow first call, faster after)")

