#!/usr/bin/env python3
"""The PyTorch half of scripts/gpu-bench.sh: the phases of one default GoodDrag edit timed with
diffusers' own UNet and VAE (random weights, nothing downloaded), as the official GoodDrag code
runs them — fp16 autocast on CUDA (float32 on the CPU, where autocast to fp16 is not offered),
no classifier-free guidance, batch 1 (2 for the MasaCtrl denoising steps) — so that
`gooddrag bench-synthetic`'s numbers have a reference on the same machine.

Phases (names match `bench-synthetic`'s, which the table script joins on):
  VAE encode, LoRA step (one crop: forward + backward to rank-16 LoRA factors on the attention
  projections, added by forward hooks — the official code's peft adapter, without peft), DDIM
  inversion step, reference trajectory step, motion-supervision step (forward + backward to the
  latent through `up_blocks[2]`'s output), denoising step with MasaCtrl (batch 2), VAE decode.
Each is run once untimed, then timed as the median of `--reps` runs with CUDA synchronised.

Usage: torch_bench.py --latent 64 [--architecture DIR] [--reps 3] > torch.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel


def sd15_unet() -> dict:
    return dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                block_out_channels=[320, 640, 1280, 1280], layers_per_block=2)


def sd15_vae() -> dict:
    return dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)


def load(arch: Path | None, device: str):
    if arch is None:
        unet = UNet2DConditionModel(**sd15_unet())
        vae = AutoencoderKL(**sd15_vae())
    else:
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(arch / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(arch / "vae"))
    return unet.to(device).eval().requires_grad_(False), vae.to(device).eval().requires_grad_(False)


def add_lora(unet, rank: int = 16):
    """LoRA factors on to_q/to_k/to_v/to_out.0 as forward hooks (B starts at zero, as peft)."""
    params = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in ("to_q", "to_k", "to_v", "0") \
                and ("attn1" in name or "attn2" in name):
            a = torch.nn.Parameter(torch.randn(rank, module.in_features, device=module.weight.device) * 0.01)
            b = torch.nn.Parameter(torch.zeros(module.out_features, rank, device=module.weight.device))
            module.register_forward_hook(lambda m, i, o, a=a, b=b: o + (i[0] @ a.t()) @ b.t())
            params += [a, b]
    return params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--architecture", type=Path)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    unet, vae = load(args.architecture, device)
    lora = add_lora(unet)
    cross = unet.config.cross_attention_dim
    l = args.latent
    autocast = torch.autocast("cuda", dtype=torch.float16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    text = torch.randn(1, 77, cross, device=device)
    image = torch.rand(1, 3, 8 * l, 8 * l, device=device) * 2 - 1
    z = torch.randn(1, 4, l, l, device=device)
    t = torch.tensor(741, device=device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def forward(batch=1):
        with torch.no_grad(), autocast:
            unet(z.repeat(batch, 1, 1, 1), t, encoder_hidden_states=text.repeat(batch, 1, 1))

    def lora_step():
        with autocast:
            out = unet(z, t, encoder_hidden_states=text).sample
            loss = torch.nn.functional.mse_loss(out.float(), z)
        loss.backward()
        for p in lora:
            p.grad = None

    feats = {}
    unet.up_blocks[2].register_forward_hook(lambda m, i, o: feats.__setitem__("f", o))

    def supervision_step():
        leaf = z.clone().requires_grad_(True)
        with autocast:
            unet(leaf, t, encoder_hidden_states=text)
            loss = feats["f"].float().abs().mean()
        loss.backward()

    def encode():
        with torch.no_grad(), autocast:
            vae.encode(image).latent_dist.mean

    def decode():
        with torch.no_grad(), autocast:
            vae.decode(z / 0.18215).sample

    phases = [
        ("VAE encode", encode),
        ("LoRA step, one crop", lora_step),
        ("DDIM inversion step", forward),
        ("reference trajectory step", forward),
        ("motion-supervision step", supervision_step),
        ("denoising step with MasaCtrl (batch 2)", lambda: forward(2)),
        ("VAE decode", decode),
    ]
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "torch": torch.__version__, "latent": l, "autocast_fp16": device == "cuda", "phases": []}
    for name, fn in phases:
        print(f"torch: {name}", file=sys.stderr)
        fn()
        sync()
        times = []
        for _ in range(max(1, args.reps)):
            start = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
        report["phases"].append({"name": name, "millis": statistics.median(times)})
    if device == "cuda":
        report["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    json.dump(report, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
