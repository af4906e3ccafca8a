"""Loading the prior: the official checkpoint's layout and traps, strict key checks, missing files, unsafe pickles."""

from __future__ import annotations

import shutil

import pytest
import torch

from backend.prior import layout, load_prior
from backend.prior.loading import CheckpointError, load_joker, read_checkpoint
from backend.prior.models import official_state_dict, rename_legacy_vae_keys, split_official
from testkit.tiny_prior import TINY_RESOLUTION, tiny_modules
from backend.prior.errors import PriorError
from shared.config.prior import PriorConfig

R = TINY_RESOLUTION


@pytest.fixture(scope="module")
def source():
    """The modules save_tiny_models wrote into the official checkpoint (same seed -> same weights)."""
    return tiny_modules(100)


def _copy_configs(models, dest):
    """A models dir that shares the tiny SD1.5 folder and VAE but gets its own checkpoint."""
    for name in (layout.SD15_DIR, layout.VAE_DIR):
        shutil.copytree(models / name, dest / name)
    (dest / layout.JOKER_CHECKPOINT).parent.mkdir(parents=True)
    return dest / layout.JOKER_CHECKPOINT


def test_official_layout_has_the_known_prefixes_and_traps(source):
    sd = official_state_dict(**source)
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {"text_encoder", "vae", "unet", "ref_unet", "controlnet"}
    assert "text_encoder.embeddings.token_embedding.weight" in sd  # no text_model. level
    assert "text_encoder.embeddings.position_ids" in sd
    assert any(k.endswith("attentions.0.query.weight") for k in sd if k.startswith("vae."))
    assert sd["controlnet.controlnet_cond_embedding.conv_in.weight"].shape[1] == 3
    assert sd["controlnet.controlnet_cond_embedding.conv_out.weight"].shape[:2] == (32, 256)  # (16,32,96,256) -> 320 in SD


def test_legacy_vae_keys_are_renamed_and_1x1_convs_flattened():
    sd = {"encoder.mid_block.attentions.0.query.weight": torch.ones(8, 8, 1, 1),
          "encoder.mid_block.attentions.0.proj_attn.bias": torch.ones(8),
          "encoder.mid_block.attentions.0.group_norm.weight": torch.ones(8),
          "encoder.conv_in.weight": torch.ones(8, 3, 3, 3)}
    out = rename_legacy_vae_keys(sd)
    assert out["encoder.mid_block.attentions.0.to_q.weight"].shape == (8, 8)
    assert "encoder.mid_block.attentions.0.to_out.0.bias" in out
    assert "encoder.mid_block.attentions.0.group_norm.weight" in out and "encoder.conv_in.weight" in out


def test_official_checkpoint_loads_strictly_and_reproduces_outputs(models, source):
    loaded = load_joker(models, vae_source="checkpoint")  # the checkpoint's own (legacy-named) VAE
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, R // 8, R // 8), torch.tensor(321)
    ids = torch.randint(0, 400, (2, 77))
    with torch.no_grad():
        text = source["text_encoder"](ids)[0]
        assert torch.equal(loaded.text_encoder(ids)[0], text)
        for name in ("unet", "ref_unet"):
            assert torch.equal(getattr(loaded, name)(x, t, encoder_hidden_states=text).sample,
                               source[name](x, t, encoder_hidden_states=text).sample)
        control = torch.rand(2, 3, R, R) * 2 - 1
        ours = loaded.controlnet(x, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False)
        theirs = source["controlnet"](x, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False)
        for a, b in zip([*ours[0], ours[1]], [*theirs[0], theirs[1]]):
            assert torch.equal(a, b)
        image = torch.rand(1, 3, R, R) * 2 - 1
        assert torch.equal(loaded.vae.decode(loaded.vae.encode(image).latent_dist.mean).sample,
                           source["vae"].decode(source["vae"].encode(image).latent_dist.mean).sample)


def test_key_mismatch_names_missing_and_unexpected_keys(models, source, tmp_path):
    sd = official_state_dict(**source)
    del sd["unet.conv_in.weight"]
    sd["unet.not_a_layer.weight"] = torch.zeros(1)
    torch.save(sd, _copy_configs(models, tmp_path))
    with pytest.raises(CheckpointError) as e:
        load_joker(tmp_path)
    assert "unet" in str(e.value) and "conv_in.weight" in str(e.value) and "not_a_layer.weight" in str(e.value)
    assert "fetch-models --mode joker" in e.value.hint


def test_unknown_prefix_is_reported(models, source, tmp_path):
    sd = official_state_dict(**source)
    sd["ema.unet.conv_in.weight"] = torch.zeros(1)
    torch.save(sd, _copy_configs(models, tmp_path))
    with pytest.raises(CheckpointError, match="ema.unet.conv_in.weight"):
        load_joker(tmp_path)


class NotATensor:
    def __reduce__(self):  # what a malicious pickle would run
        return (print, ("unpickled!",))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.bin"
    torch.save({"unet.conv_in.weight": torch.zeros(1), "payload": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="tensor-only"):
        read_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out


def test_data_parallel_module_prefix_is_stripped_with_a_note(models, source, tmp_path, caplog):
    """Training wrapped the prior for data parallelism; a released file may keep the ``module.`` key prefix."""
    sd = {"module." + k: v for k, v in official_state_dict(**source).items()}
    torch.save(sd, _copy_configs(models, tmp_path))
    with caplog.at_level("INFO", logger="backend.prior.checkpoint"):
        loaded = load_joker(tmp_path, vae_source="checkpoint")
    assert any("module." in r.getMessage() and "stripped" in r.getMessage() for r in caplog.records)
    torch.manual_seed(0)
    x, t, ids = torch.randn(1, 4, R // 8, R // 8), torch.tensor(500), torch.randint(0, 400, (1, 77))
    with torch.no_grad():
        text = source["text_encoder"](ids)[0]
        assert torch.equal(loaded.unet(x, t, encoder_hidden_states=text).sample,
                           source["unet"](x, t, encoder_hidden_states=text).sample)


def test_prefix_clash_is_refused_rather_than_dropping_a_tensor(tmp_path):
    path = tmp_path / "clash.bin"
    torch.save({"unet.a": torch.zeros(1), "module.unet.a": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="unet.a"):
        read_checkpoint(path)


def test_old_format_pickle_is_read_without_memory_mapping(tmp_path):
    sd = {"unet.conv_in.weight": torch.randn(4, 4), "module.vae.b": torch.arange(3.0)}
    path = tmp_path / "legacy.bin"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError):  # what the fallback is for: the legacy format cannot be memory-mapped
        torch.load(path, weights_only=True, mmap=True)
    got = read_checkpoint(path)
    assert sorted(got) == ["unet.conv_in.weight", "vae.b"]
    assert torch.equal(got["unet.conv_in.weight"], sd["unet.conv_in.weight"]) and torch.equal(got["vae.b"], sd["module.vae.b"])


def test_old_format_pickle_with_arbitrary_objects_is_still_refused(tmp_path, capsys):
    path = tmp_path / "evil-legacy.bin"
    torch.save({"unet.conv_in.weight": torch.zeros(1), "payload": NotATensor()}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="tensor-only"):
        read_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out


def test_split_pops_position_ids_and_keeps_components_apart(source):
    parts, unknown = split_official(official_state_dict(**source))
    assert not unknown and "embeddings.position_ids" not in parts["text_encoder"]
    assert set(parts["unet"]) == set(source["unet"].state_dict())


@pytest.mark.parametrize("mode", ["joker", "free"])
def test_missing_files_error_names_files_place_and_command(tmp_path, mode):
    (tmp_path / layout.SD15_DIR / "unet").mkdir(parents=True)
    (tmp_path / layout.SD15_DIR / "unet" / "config.json").write_text("{}")
    with pytest.raises(PriorError) as e:
        load_prior(PriorConfig(mode=mode), tmp_path, "cpu")
    message = str(e.value)
    assert e.value.code == "missing_weights"
    assert str(tmp_path / layout.SD15_DIR / "tokenizer" / "vocab.json") in message
    assert "unet/config.json" not in message  # present files are not listed
    expected = layout.JOKER_CHECKPOINT if mode == "joker" else layout.CONTROLNET_DIR
    assert expected in message
    assert f"joker-head fetch-models --mode {mode} --models-dir {tmp_path}" in e.value.hint


def test_free_mode_loads_an_sd15_folder_by_absolute_path(models, tmp_path):
    finetune = tmp_path / "my-finetune"
    shutil.copytree(models / layout.SD15_DIR, finetune)
    shutil.copytree(models / layout.CONTROLNET_DIR, tmp_path / layout.CONTROLNET_DIR)
    prior = load_prior(PriorConfig(mode="free", base_model=str(finetune)), tmp_path, "cpu")
    assert prior.unet is prior.ref_unet and prior.resolution == R
