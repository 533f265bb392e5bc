#!/usr/bin/env python3
"""DIFT / MD parity fixtures on a tiny SD 2.x-shaped model (tests/fixtures/tiny-sd2/, ≈ 1.5 MB).

The model has SD 2.1's architecture in miniature: linear `proj_in`/`proj_out`, per-block head
counts (`attention_head_dim` [1, 2, 2, 2], head dimension 16), `upcast_attention`, a CLIP text
model with exact GELU, the SD 2.x tokenizer convention (pad token "!" = id 0), and SD 2.1's
v-prediction DDIM scheduler config. Weights are seeded random, saved as fp16 only (the files a
user has), and every reference below runs in float32 on the fp16 values, as the Rust side does.
The VAE is tests/fixtures/tiny-sd's (SD 2.x uses SD 1.5's VAE architecture), copied.

The reference follows DragDiffusion's `drag_bench_evaluation/run_eval_point_matching.py` +
`dift_sd.py` step by step (docs/EVALUATION.md §2.3), written here from that description:
image → (x/255 − 0.5)·2, ×8 ensemble; text embedding of the prompt (positive only);
latent = (mean + std·ε₁)·0.18215; x_t = scheduler.add_noise(latent, ε₂, 261); the UNet's
`up_blocks[1]` output (forward hook) averaged over the ensemble; bilinear to the image size
(align_corners=False); cosine similarity of the handle's source vector against every pixel of
the dragged image's map; argmax; distance to the target; MD pooled over pairs. The two noise
tensors of each featurizer call are exported so the Rust test injects them.

Usage (from the repository root, in the fixtures venv of scripts/make_fixtures.py, after it has
written tests/fixtures/tiny-sd):

    .venv-fixtures/bin/python scripts/make_dift_fixtures.py
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures  # noqa: E402

SD1 = Path("tests/fixtures/tiny-sd")
OUT = Path("tests/fixtures/tiny-sd2")
T = 261
ENSEMBLE = 8
PROMPT = "a photo of a cat"

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    block_out_channels=[16, 32, 32, 32],
    layers_per_block=1,
    attention_head_dim=[1, 2, 2, 2],  # SD 2.x's legacy name for the head count
    cross_attention_dim=32,
    norm_num_groups=8,
    use_linear_projection=True,
    upcast_attention=True,
    flip_sin_to_cos=True,
    freq_shift=0,
)

# stabilityai/stable-diffusion-2-1's scheduler/scheduler_config.json: SD 1.5's DDIM table with
# v-prediction.
SCHEDULER_CONFIG = dict(make_fixtures.SCHEDULER_CONFIG, prediction_type="v_prediction")


def save_fp16(model, directory: Path, weights_name: str) -> None:
    """config.json (as the model saves it) + the fp16 weights file only."""
    model.save_pretrained(directory)
    for f in directory.glob("*.safetensors"):
        f.unlink()
    half = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(half, str(directory / weights_name), metadata={"format": "pt"})


def tokenizer_files() -> CLIPTokenizer:
    tok_dir = OUT / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name in ["vocab.json", "merges.txt"]:
        shutil.copyfile(SD1 / "tokenizer" / name, tok_dir / name)
    config = json.loads((SD1 / "tokenizer" / "tokenizer_config.json").read_text())
    # SD 2.x: tokenizer_config.json says "<|endoftext|>" but special_tokens_map.json pads with "!".
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = json.loads((SD1 / "tokenizer" / "special_tokens_map.json").read_text())
    special["pad_token"] = "!"
    (tok_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    assert tok.pad_token_id == 0, tok.pad_token_id
    return tok


def build(tok: CLIPTokenizer):
    torch.manual_seed(20)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    make_fixtures.perturb_constant_params(unet, torch.Generator().manual_seed(20))
    save_fp16(unet, OUT / "unet", "diffusion_pytorch_model.fp16.safetensors")

    torch.manual_seed(21)
    config = CLIPTextConfig(
        vocab_size=len(tok.get_vocab()),
        hidden_size=32,
        intermediate_size=37,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=1,  # as SD 2.x's text_encoder/config.json (unused: no attention mask)
    )
    te = CLIPTextModel(config).eval()
    make_fixtures.perturb_constant_params(te, torch.Generator().manual_seed(21))
    save_fp16(te, OUT / "text_encoder", "model.fp16.safetensors")

    vae_dir = OUT / "vae"
    vae_dir.mkdir(parents=True, exist_ok=True)
    for name in ["config.json", "diffusion_pytorch_model.fp16.safetensors"]:
        shutil.copyfile(SD1 / "vae" / name, vae_dir / name)
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(OUT / "scheduler")


def load():
    """The model as a user loads it from the fp16 files, computing in float32."""
    f32 = dict(torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(OUT / "unet", variant="fp16", **f32).float().eval()
    vae = AutoencoderKL.from_pretrained(OUT / "vae", variant="fp16", **f32).float().eval()
    te = CLIPTextModel.from_pretrained(OUT / "text_encoder", variant="fp16", **f32).float().eval()
    tok = CLIPTokenizer.from_pretrained(OUT / "tokenizer")
    sched = DDIMScheduler.from_pretrained(OUT / "scheduler")
    return unet, vae, te, tok, sched


def image(seed: int, w: int, h: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 5, 6, generator=g)
    x = F.interpolate(low, (h + 12, w + 12), mode="bicubic", align_corners=False)
    x = x + 0.1 * torch.rand(1, 3, h + 12, w + 12, generator=g)
    x = x[:, :, 6 : 6 + h, 6 : 6 + w]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def featurize(models, img: np.ndarray, prompt: str, gen: torch.Generator, out: dict, tag: str) -> torch.Tensor:
    unet, vae, te, tok, sched = models
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    x = ((x - 0.5) * 2).repeat(ENSEMBLE, 1, 1, 1)
    ids = tok(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    emb = te(ids)[0]
    post = vae.encode(x).latent_dist
    eps1 = torch.randn(post.mean.shape, generator=gen)
    eps2 = torch.randn(post.mean.shape, generator=gen)
    latent = (post.mean + post.std * eps1) * vae.config.scaling_factor
    t = torch.tensor(T, dtype=torch.long)
    noisy = sched.add_noise(latent, eps2, t)
    grab = {}
    hook = unet.up_blocks[1].register_forward_hook(lambda m, i, o: grab.__setitem__("f", o))
    unet(noisy, t, encoder_hidden_states=emb.repeat(ENSEMBLE, 1, 1))
    hook.remove()
    feat = grab["f"].mean(0, keepdim=True)
    out[f"{tag}_eps_posterior"] = eps1
    out[f"{tag}_eps_noise"] = eps2
    out[f"{tag}_latent_mean"] = post.mean[:1]
    out[f"{tag}_noisy"] = noisy
    out[f"{tag}_features"] = feat
    out["prompt_embedding"] = emb
    out["prompt_ids"] = ids
    return feat


def match(fs: torch.Tensor, fd: torch.Tensor, h: int, w: int, pairs) -> list[dict]:
    fs_up = F.interpolate(fs, (h, w), mode="bilinear")
    fd_up = F.interpolate(fd, (h, w), mode="bilinear")
    rows = []
    for (hx, hy), (tx, ty) in pairs:
        v = fs_up[:, :, hy, hx][:, :, None, None]
        cos = torch.nn.CosineSimilarity(dim=1)(v, fd_up)[0].numpy()
        r, c = np.unravel_index(cos.argmax(), cos.shape)
        top2 = np.sort(cos.ravel())[-2:]
        dist = (torch.tensor([ty, tx]) - torch.tensor([r, c])).float().norm()
        rows.append({"handle": [hx, hy], "target": [tx, ty], "match": [int(c), int(r)],
                     "distance": float(dist), "margin": float(top2[1] - top2[0]), "cos_max": float(top2[1])})
    return rows


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    build(tokenizer_files())
    models = load()
    unet = models[0]
    exp = {}
    with torch.no_grad():
        # The whole SD 2.x-shaped UNet once (odd latent size, batch 2), against diffusers.
        g = torch.Generator().manual_seed(5)
        exp["unet_sample"] = torch.randn(2, 4, 7, 9, generator=g)
        exp["unet_encoder_hidden_states"] = torch.randn(2, 77, 32, generator=g)
        exp["unet_noise_pred"] = unet(exp["unet_sample"], torch.tensor(T), encoder_hidden_states=exp["unet_encoder_hidden_states"]).sample
        # DIFT on an original and a dragged image (70×54: latent 8×6, not multiples of 8).
        w, h = 70, 54
        src = image(1, w, h)
        dragged = np.roll(src, shift=(3, 6), axis=(0, 1)).copy()
        dragged[:, :6] = image(2, 6, h)
        gen = torch.Generator().manual_seed(42)
        fs = featurize(models, src, PROMPT, gen, exp, "source")
        fd = featurize(models, dragged, PROMPT, gen, exp, "dragged")
        pairs = [((20, 25), (26, 28)), ((50, 10), (56, 13)), ((5, 40), (11, 43))]
        rows = match(fs, fd, h, w, pairs)
    exp["source_image"] = torch.from_numpy(src)
    exp["dragged_image"] = torch.from_numpy(dragged)
    tensors = {}
    for k, v in exp.items():
        v = v.detach().contiguous()
        tensors[k] = v if v.dtype in (torch.int64, torch.uint8) else v.to(torch.float32)
    (OUT / "expected").mkdir(exist_ok=True)
    save_file(tensors, str(OUT / "expected" / "dift.safetensors"), metadata={"format": "pt"})
    md = float(np.mean([r["distance"] for r in rows], dtype=np.float32))
    summary = {
        "generator": "scripts/make_dift_fixtures.py",
        "versions": {p: metadata.version(p) for p in ["torch", "diffusers", "transformers"]},
        "timestep": T, "ensemble": ENSEMBLE, "up_ft_index": 1, "prompt": PROMPT,
        "image": [w, h], "pairs": rows, "md": md,
        "alpha_cumprod_261": float(models[4].alphas_cumprod[T]),
    }
    (OUT / "expected" / "dift.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
