"""An artist's single-file SD1.5 fine-tune (LDM / A1111 layout) as the free prior's base model: exact weights, fallback
to the stock VAE / text encoder, fp16 and EMA files, the errors for what is not an SD1.5 checkpoint, check-models."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from backend.cli import main as cli_main
from backend.jobs.preview import PreviewRunner
from backend.prior import layout, load_prior
from backend.prior.loading import CheckpointError, load_free
from testkit.tiny_prior import TINY_RESOLUTION, tiny_modules
from backend.prior.errors import PriorError
from backend.runner import JobContext
from shared.config.prior import PriorConfig
from shared.jobs import PreviewParams
from tests.ldm_layout import ldm_checkpoint, ldm_unet, ldm_vae
from tests.support import mesh_inputs, sphere_normals

R = TINY_RESOLUTION


@pytest.fixture(scope="module")
def stock():
    """The modules save_tiny_models wrote into the stock SD1.5 folder (same seed -> same weights)."""
    return tiny_modules(0)


@pytest.fixture(scope="module")
def artist(stock):
    """The fine-tune's modules: other random weights than the stock folder's."""
    modules = tiny_modules(7)
    assert not torch.equal(modules["unet"].conv_in.weight, stock["unet"].conv_in.weight)
    return modules


def _save(sd: dict, path):
    if path.suffix == ".safetensors":
        save_file(sd, path)
    else:
        torch.save({"state_dict": sd, "global_step": 1000}, path)  # the Lightning wrapping most .ckpt files have
    return path


def _outputs(unet, vae, text_encoder) -> list[torch.Tensor]:
    """UNet noise prediction, VAE round trip and text embedding on fixed inputs."""
    g = torch.Generator().manual_seed(0)
    x, ids, image = torch.randn(2, 4, R // 8, R // 8, generator=g), torch.randint(0, 400, (2, 77), generator=g), \
        torch.rand(1, 3, R, R, generator=g) * 2 - 1
    with torch.no_grad():
        text = text_encoder(ids)[0]
        return [text, unet(x, torch.tensor(321), encoder_hidden_states=text).sample,
                vae.decode(vae.encode(image).latent_dist.mean).sample]


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_reproduces_the_modules_it_was_made_from(models, artist, tmp_path, suffix):
    path = _save(ldm_checkpoint(artist), tmp_path / f"artist{suffix}")
    loaded = load_free(models, str(path))
    assert loaded.unet is loaded.ref_unet and loaded.name == "free"
    ours, theirs = _outputs(loaded.unet, loaded.vae, loaded.text_encoder), _outputs(**{
        k: artist[k] for k in ("unet", "vae", "text_encoder")})
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_unet_only_fp16_file_under_the_models_dir_keeps_the_stock_vae_and_text_encoder(models, artist, stock):
    name = "artist-unet-only.safetensors"  # a name under the models dir, like a folder name
    _save(ldm_checkpoint(artist, ("unet",), torch.float16), models / name)
    loaded = load_free(models, name)
    for part in ("vae", "text_encoder"):
        assert all(torch.equal(v, stock[part].state_dict()[k]) for k, v in getattr(loaded, part).state_dict().items())
    want = artist["unet"].state_dict()
    got = loaded.unet.state_dict()
    assert all(v.dtype == torch.float32 and torch.equal(v, want[k].half().float()) for k, v in got.items())


def test_file_with_ema_and_regular_weights_loads_the_regular_ones(models, artist, tmp_path):
    sd = ldm_checkpoint(artist, ("unet",))
    # LDM stores EMA weights with the dots dropped: model_ema.diffusion_modelinput_blocks00weight
    other = ldm_unet(tiny_modules(8)["unet"])
    sd |= {"model_ema." + k.replace(".", "", 1).replace(".", ""): v.clone() for k, v in other.items()}
    sd |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(1000)}
    loaded = load_free(models, str(_save(sd, tmp_path / "with-ema.ckpt")))
    want = artist["unet"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.unet.state_dict().items())


@pytest.mark.parametrize("keys, expected", [
    (["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "model.diffusion_model.out.0.weight"],
     "SDXL is not supported, SD1.5 only"),
    (["cond_stage_model.model.ln_final.weight", "model.diffusion_model.out.0.weight"], "SD2.x is not supported"),
    (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_te_text_model_encoder.alpha"],
     "a LoRA/LyCORIS (lora_* keys), not a full checkpoint"),
    (["down_blocks.0.resnets.0.conv1.weight", "conv_in.weight"], "no `model.diffusion_model.` keys"),
    (["model_ema.diffusion_modelout0weight"], "EMA weights only"),
])
def test_what_is_not_an_sd15_checkpoint_is_named(models, tmp_path, keys, expected):
    path = _save({k: torch.zeros(2) for k in keys}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_prior(PriorConfig(mode="free", base_model=str(path)), models, "cpu")
    assert expected in str(e.value) and str(path) in str(e.value)
    assert e.value.code == "bad_checkpoint" and "full SD1.5 checkpoint" in e.value.hint


def test_a_mismatching_unet_lists_its_keys_with_a_single_file_hint(models, artist, tmp_path):
    sd = ldm_checkpoint(artist, ("unet",))
    del sd["model.diffusion_model.out.2.weight"]
    with pytest.raises(CheckpointError) as e:
        load_free(models, str(_save(sd, tmp_path / "broken.safetensors")))
    assert "conv_out.weight" in str(e.value) and "model.diffusion_model" in e.value.hint


class Payload:
    def __reduce__(self):  # what a malicious pickle would run
        return (print, ("unpickled!",))


def test_ckpt_carrying_code_is_refused(models, artist, tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": ldm_checkpoint(artist, ("unet",)), "callbacks": Payload()}, path)
    with pytest.raises(CheckpointError, match="tensor-only") as e:
        load_free(models, str(path))
    assert ".safetensors" in e.value.hint and "unpickled!" not in capsys.readouterr().out


def test_missing_file_names_its_path_and_what_to_do(models, tmp_path):
    path = tmp_path / "not-there.safetensors"
    with pytest.raises(PriorError) as e:
        load_prior(PriorConfig(mode="free", base_model=str(path)), models, "cpu")
    assert e.value.code == "missing_weights" and str(path) in str(e.value)
    assert "absolute path" in e.value.hint and "fetch-models" not in e.value.hint  # the stock parts are there


def test_file_without_the_stock_folder_lists_what_is_still_needed(artist, tmp_path):
    path = _save(ldm_checkpoint(artist), tmp_path / "artist.safetensors")
    empty = tmp_path / "models"
    with pytest.raises(PriorError) as e:
        load_prior(PriorConfig(mode="free", base_model=str(path)), empty, "cpu")
    message = str(e.value)
    assert str(empty / layout.SD15_DIR / "tokenizer" / "vocab.json") in message
    assert str(empty / layout.SD15_DIR / "vae" / "diffusion_pytorch_model.safetensors") in message
    assert layout.SD15_UNET_WEIGHTS not in message and str(path) not in message  # the file replaces the stock UNet
    assert f"fetch-models --mode free --models-dir {empty}" in e.value.hint


def test_joker_mode_refuses_a_single_file_base_model(models, tmp_path):
    with pytest.raises(PriorError) as e:
        load_prior(PriorConfig(mode="joker", base_model=str(tmp_path / "artist.safetensors")), models, "cpu")
    assert e.value.code == "invalid_field" and "only the free prior" in str(e.value)
    assert 'prior.mode = "free"' in e.value.hint


def test_check_models_understands_a_single_file(models, artist, tmp_path, capsys):
    path = _save(ldm_checkpoint(artist, ("unet",)), tmp_path / "artist.safetensors")
    args = ["check-models", "--mode", "free", "--models-dir", str(models), "--base-model"]
    assert cli_main(args + [str(path)]) == 0
    assert "free: ready" in capsys.readouterr().out
    assert cli_main(args + [str(tmp_path / "gone.ckpt")]) == 1
    out = capsys.readouterr().out
    assert f"missing {tmp_path / 'gone.ckpt'}" in out and "free mode only" in out and "absolute path" in out


def test_preview_in_free_mode_runs_on_the_single_file(models, artist, tmp_path):
    path = _save(ldm_checkpoint(artist), tmp_path / "artist.safetensors")
    runner = PreviewRunner(models_dir=models, render_normals=sphere_normals)

    def image(prior: PriorConfig) -> np.ndarray:
        params = PreviewParams(prompt="a man smiling", steps=2, sampler="ddim", seed=5, prior=prior,
                               reference_framing="centre")  # the stand-in reference is noise: no face
        result = runner.run(params, mesh_inputs(), JobContext("job", tmp_path, "cpu", emit=lambda e: None))
        assert result.meta["mode"] == "free"
        return np.asarray(Image.open(io.BytesIO(result.artifacts[0].data)))

    fine_tune, stock = image(PriorConfig(mode="free", base_model=str(path))), image(PriorConfig(mode="free"))
    assert fine_tune.shape == (R, R, 3) and np.abs(fine_tune.astype(int) - stock).max() > 0


def test_preview_reloads_a_fine_tune_saved_again_under_the_same_name(models, artist, stock, tmp_path):
    path = _save(ldm_checkpoint(artist), tmp_path / "artist.safetensors")
    runner, config = PreviewRunner(models_dir=models), PriorConfig(mode="free", base_model=str(path))
    first = runner.prior(config, "cpu")
    assert runner.prior(config, "cpu") is first  # same file: the loaded prior is reused
    _save(ldm_checkpoint(stock), path)  # the artist trains on and overwrites the file
    again = runner.prior(config, "cpu")
    assert again is not first and torch.equal(again.unet.conv_in.weight, stock["unet"].conv_in.weight)


def test_test_layout_matches_real_sd15_key_names_and_diffusers_converter():
    """The reverse mapping, on the full-size SD1.5 architecture (meta tensors): known LDM names, and diffusers'
    converters map it back onto exactly the model's keys."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    with init_empty_weights():
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)  # SD1.5's defaults
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    sd = ldm_unet(unet)
    for key in ("input_blocks.11.0.in_layers.0.weight", "input_blocks.3.0.op.weight", "output_blocks.2.1.conv.weight",
                "output_blocks.5.2.conv.weight", "middle_block.1.transformer_blocks.0.attn2.to_k.weight"):
        assert "model.diffusion_model." + key in sd
    assert set(convert_ldm_unet_checkpoint(sd, dict(unet.config))) == set(unet.state_dict())
    sd = ldm_vae(vae)
    assert sd["first_stage_model.decoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in sd  # decoder levels counted from the bottom
    assert set(convert_ldm_vae_checkpoint(sd, dict(vae.config))) == set(vae.state_dict())
