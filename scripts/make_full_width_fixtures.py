#!/usr/bin/env python3
"""Full-width parity fixtures: SD 1.5's real architecture (UNet 320/640/1280 channels with 8 heads
and 32 groups, the real VAE, the 12-layer 768-wide CLIP text model) with closed-form deterministic
weights that the Rust side computes itself (src/weights/deterministic.rs), so only the expected
outputs are committed (tests/fixtures/full-width/, ≈ 0.5 MB) and never 4 GB of weights.

Usage (from the repository root, in the fixtures venv of scripts/make_fixtures.py):

    .venv-fixtures/bin/python scripts/make_full_width_fixtures.py            # the committed fixture
    .venv-fixtures/bin/python scripts/make_full_width_fixtures.py --z0-512 OUT.safetensors
        # a 512×512 image and diffusers' VAE latent for it (≈ 1 min, not committed):
        # GOODDRAG_Z0_512=OUT.safetensors cargo test --release --test full_width -- --ignored

Weights (bit for bit the Rust definition): for tensor `name`, element i (row-major, file layout)
    seed = FNV-1a-64(name); z = splitmix64(seed + i * 0x9E3779B97F4A7C15); v = 2 * (z >> 40) / 2^24 - 1
    rank >= 2: v * f32(sqrt(3 / fan_in));  norm scales: 1 + 0.1 * v;  other rank 1: 0.1 * v
all in float32 arithmetic. Inputs are written into the fixture. Everything runs in float32 on the
CPU with one thread (torch.use_deterministic_algorithms).

Outputs (tests/fixtures/full-width/expected.safetensors):
    unet_sample [1,4,8,8], unet_timestep [1], unet_encoder_hidden_states [1,77,768],
    unet_noise_pred [1,4,8,8], unet_up_block_2 [1,640,8,8]
    vae_image [1,3,64,64], vae_latent_mean [1,4,8,8], vae_latent_logvar [1,4,8,8],
    vae_z [1,4,8,8], vae_decoded [1,3,64,64]
    clip_input_ids [1,77] (int64, the real vocabulary's ids), clip_last_hidden_state [1,77,768]
and keys.json: every parameter name and shape of the three networks (the Rust test checks that
its loader expects exactly these).
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "full-width"

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def fnv1a64(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def unit_values(name: str, n: int) -> np.ndarray:
    """v in [-1, 1) as float32, exactly the Rust `unit`."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + np.arange(n, dtype=np.uint64) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
    return np.float32(2.0) * u - np.float32(1.0)


def is_norm_scale(name: str) -> bool:
    parts = name.split(".")
    leaf_module = parts[-2] if len(parts) >= 2 else ""
    return name.endswith(".weight") and "norm" in leaf_module


def deterministic_tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    v = unit_values(name, n)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        out = v * np.float32(np.sqrt(3.0 / fan_in))
    elif is_norm_scale(name):
        out = np.float32(1.0) + np.float32(0.1) * v
    else:
        out = np.float32(0.1) * v
    return out.astype(np.float32).reshape(shape)


def fill(model: torch.nn.Module, prefix: str = "") -> dict[str, list[int]]:
    """Every parameter set to its deterministic values (named as in the diffusers file)."""
    keys = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            file_name = prefix + name
            p.copy_(torch.from_numpy(deterministic_tensor(file_name, tuple(p.shape))))
            keys[file_name] = list(p.shape)
    return keys


# SD 1.5's unet/config.json, vae/config.json and text_encoder/config.json (runwayml / stable-
# diffusion-v1-5), as the Rust side's defaults.
UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    only_cross_attention=False, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2,
    downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32,
    norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False,
    upcast_attention=False,
)
VAE = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
    layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512,
    scaling_factor=0.18215,
)
CLIP = CLIPTextConfig(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768,
    num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
    hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)

# "a photo of a cat" in SD 1.5's vocabulary, padded with <|endoftext|> (tests/fixtures/clip-vocab/).
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70


def inputs(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Inputs from the same generator (name "input.<what>"), unit scale."""
    return torch.from_numpy(unit_values("input." + name, int(np.prod(shape))).reshape(shape))


def vae_model() -> tuple[AutoencoderKL, dict]:
    vae = AutoencoderKL(**VAE).eval()
    return vae, fill(vae)


def committed_fixture() -> None:
    out, keys = {}, {}
    with torch.no_grad():
        unet = UNet2DConditionModel(**UNET).eval()
        keys["unet"] = fill(unet)
        sample = inputs("unet_sample", (1, 4, 8, 8))
        ehs = inputs("unet_encoder_hidden_states", (1, 77, 768))
        t = torch.tensor([741.0])
        feats = {}
        hook = unet.up_blocks[2].register_forward_hook(lambda m, a, o: feats.__setitem__("f", o))
        pred = unet(sample, t, encoder_hidden_states=ehs).sample
        hook.remove()
        out |= dict(unet_sample=sample, unet_timestep=t, unet_encoder_hidden_states=ehs,
                    unet_noise_pred=pred, unet_up_block_2=feats["f"])
        del unet

        vae, keys["vae"] = vae_model()
        image = inputs("vae_image", (1, 3, 64, 64))
        dist = vae.encode(image).latent_dist
        z = inputs("vae_z", (1, 4, 8, 8)) * 3.0
        out |= dict(vae_image=image, vae_latent_mean=dist.mean, vae_latent_logvar=dist.logvar,
                    vae_z=z, vae_decoded=vae.decode(z).sample)
        del vae

        clip = CLIPTextModel(CLIP).eval()
        # transformers 5 names the parameters without SD 1.5's "text_model." prefix.
        keys["text_encoder"] = fill(clip, prefix="text_model.")
        ids = torch.tensor([CAT_IDS], dtype=torch.int64)
        out |= dict(clip_input_ids=ids, clip_last_hidden_state=clip(input_ids=ids).last_hidden_state)

    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in out.items()}, str(OUT / "expected.safetensors"),
              metadata={"format": "pt"})
    versions = {p: metadata.version(p) for p in ("torch", "diffusers", "transformers", "numpy")}
    with open(OUT / "keys.json", "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "components": keys}, f, indent=0, sort_keys=True)
        f.write("\n")


def z0_512(path: str) -> None:
    """A 512×512 image (smooth, photo-like, in [-1, 1]) and the VAE posterior mean × 0.18215,
    as GoodDrag's `image2latent` computes z0."""
    with torch.no_grad():
        vae, _ = vae_model()
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 512), torch.linspace(0, 1, 512), indexing="ij")
        image = torch.stack([
            torch.sin(6.0 * xx + 2.0 * yy), torch.cos(4.0 * yy - 3.0 * xx * yy), 2.0 * xx * yy - 1.0,
        ])[None] * 0.9 + 0.1 * inputs("z0_noise", (1, 3, 512, 512))
        image = image.clamp(-1, 1).float()
        z0 = vae.encode(image).latent_dist.mean * 0.18215
        z0_f64 = vae.double().encode(image.double()).latent_dist.mean * 0.18215
    save_file({"image": image.contiguous(), "z0": z0.contiguous(), "z0_f64": z0_f64.float().contiguous()},
              path, metadata={"format": "pt"})
    rel = ((z0.double() - z0_f64).norm() / z0_f64.norm()).item()
    print(f"wrote {path}: PyTorch f32 vs f64 z0 relative error {rel:.2e}")


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    # The pinned values of src/weights/deterministic.rs's unit test.
    assert fnv1a64("conv_in.weight") == 0x1CE69906BDC574A7, hex(fnv1a64("conv_in.weight"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--z0-512", metavar="OUT", help="write the 512×512 z0 check instead")
    args = parser.parse_args()
    if args.z0_512:
        z0_512(args.z0_512)
    else:
        committed_fixture()


if __name__ == "__main__":
    sys.exit(main())
