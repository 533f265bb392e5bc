#!/usr/bin/env python3
"""Make the tiny SD1.5-shaped parity fixtures under tests/fixtures/tiny-sd/.

Usage (from the repository root):

    python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install -r scripts/requirements-fixtures.txt && .venv-fixtures/bin/python scripts/make_fixtures.py

`scripts/make_fixtures.py --gooddrag-lora` redoes only the diffusers load of the LoRA file this
project's writer produced (tests/fixtures/gooddrag-lora/, see `expected_gooddrag_lora`).

What it writes (all deterministic: fixed seeds, float32 on the CPU, one thread):

    tests/fixtures/tiny-sd/
      unet/          config.json, diffusion_pytorch_model.safetensors (+ .fp16.safetensors)
      vae/           config.json, diffusion_pytorch_model.safetensors (+ .fp16.safetensors)
      text_encoder/  config.json, model.safetensors (+ model.fp16.safetensors)
      tokenizer/     vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
      scheduler/     scheduler_config.json (DDIM, SD 1.5 values)
      expected/      unet.safetensors, vae.safetensors, clip.safetensors,
                     tokenizer.json, scheduler.json, versions.json

The networks are randomly initialised from config with every SD 1.5 architectural choice kept
(four UNet levels with the same block types, 2 layers per block, 16 transformer blocks = 32
attention modules, 8x VAE, CLIP text transformer with quick_gelu and a causal mask) and only the
widths shrunk. Norm weights/biases and other constant-initialised parameters are perturbed so
that a loader that swaps or drops them fails the parity tests.

The tokenizer is a real CLIP byte-level BPE (256 byte symbols, their "</w>" forms, a few
hundred merges learned greedily from a small English corpus embedded below, then
<|startoftext|> and <|endoftext|>), in the same file format as SD 1.5's tokenizer/.

Expected outputs are f32 safetensors holding inputs and outputs together (input_ids: int64).
Re-running the script rewrites tests/fixtures/tiny-sd/ byte for byte identically on the same
machine (the weights come from torch's CPU RNG and are bit-stable anywhere; the expected outputs
could differ in the last bits on another CPU, well inside the tests' tolerances).
Safetensors metadata is kept to the single {"format": "pt"} key: safetensors writes metadata
keys in hash order, so more than one key makes the bytes differ between runs.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import regex
import torch
from safetensors.torch import load_file as _load
from safetensors.torch import save_file

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tiny-sd"

# Seeds: one per component so that changing one does not shift the others.
SEED_UNET = 0
SEED_VAE = 1
SEED_CLIP = 2
SEED_INPUTS = 100

# --------------------------------------------------------------------------------------------
# Configurations (SD 1.5 values except the widths)
# --------------------------------------------------------------------------------------------

# SD 1.5: block_out_channels [320, 640, 1280, 1280], attention_head_dim 8 (= 8 HEADS, the
# diffusers quirk: num_attention_heads defaults to attention_head_dim), norm_num_groups 32,
# cross_attention_dim 768, sample_size 64.
UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=[
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=[
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    only_cross_attention=False,
    block_out_channels=[16, 32, 32, 32],
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=8,
    norm_eps=1e-5,
    cross_attention_dim=32,
    attention_head_dim=2,  # like SD 1.5's "8": the number of HEADS (2 heads: dims 8 and 16)
    use_linear_projection=False,
    upcast_attention=False,
)

# SD 1.5 (and sd-vae-ft-mse): block_out_channels [128, 256, 512, 512], layers_per_block 2,
# norm_num_groups 32, latent_channels 4, scaling_factor 0.18215.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 16, 16, 16],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=4,
    sample_size=64,
    scaling_factor=0.18215,
)

# SD 1.5's CLIP ViT-L/14 text model: hidden 768, 12 layers, 12 heads, intermediate 3072,
# quick_gelu, layer_norm_eps 1e-5, max_position_embeddings 77.
CLIP_HIDDEN = 32
CLIP_LAYERS = 2
CLIP_HEADS = 4
CLIP_INTERMEDIATE = 37

# The DDIM construction of the GoodDrag reference (docs/ALGORITHM.md §1.7), made explicit.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
)

N_MERGES = 300
MAX_LEN = 77

# --------------------------------------------------------------------------------------------
# Tokenizer: a tiny real CLIP byte-level BPE
# --------------------------------------------------------------------------------------------

CORPUS = """
A photo of a cat sitting on the table. A photo of a dog running in the park. The cat and the
dog are friends. This is a picture of the mountain and the lake at sunset. There is a red car
on the street, and a small house with a green door. Drag the handle point to the target point
and the image will follow. The model edits the photo while keeping the rest of the picture the
same. Draw a mask over the region that should move; everything outside the mask stays where it
is. We have a person with a smile, a horse in the field, a bird on the tree, a boat on the
water, and flowers in the garden. The sun is shining, the sky is blue, the trees are green.
She is reading a book in the morning; he is walking with the dog in the evening. They were
there and it was wonderful. A portrait of a woman, a portrait of a man, a painting of a
castle, a drawing of a flower, a sketch of an old building, a close up of a face.
Stable diffusion turns noise into images. The denoising steps run from the noisy latent to the
clean latent. Points, masks, features, motion, tracking, inversion, drawing, editing, moving,
rotating, stretching, bending, opening, closing, lifting, turning, looking, growing.
It's a nice day and we're going outside; don't forget the camera. I'll take a photo.
The quick brown fox jumps over the lazy dog. Hello world! Numbers like 12345 and 3.14 are
fine. One, two, three, four, five, six, seven, eight, nine, ten.
"""

# CLIP's pre-tokenisation pattern (openai/CLIP simple_tokenizer.py, used by transformers too).
CLIP_PAT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode char map (same order as CLIP's vocab)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def learn_merges(corpus: str, n_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE training in CLIP's symbol space (last symbol of a word carries "</w>").

    Ties are broken by the pair's strings so the result is deterministic. A merge whose result
    already exists as a token is skipped (CLIP's vocab has every merge result exactly once).
    """
    b2u = bytes_to_unicode()
    text = " ".join(corpus.split()).lower()
    words = collections.Counter()
    for tok in CLIP_PAT.findall(text):
        chars = [b2u[b] for b in tok.encode("utf-8")]
        words[tuple(chars[:-1] + [chars[-1] + "</w>"])] += 1

    existing = set(b2u.values()) | {c + "</w>" for c in b2u.values()}
    merges: list[tuple[str, str]] = []
    banned: set[tuple[str, str]] = set()
    while len(merges) < n_merges:
        pairs = collections.Counter()
        for word, freq in words.items():
            for a, b in zip(word, word[1:]):
                if (a, b) not in banned:
                    pairs[(a, b)] += freq
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        if merged in existing:
            banned.add(best)
            continue
        existing.add(merged)
        merges.append(best)
        new_words = collections.Counter()
        for word, freq in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += freq
        words = new_words
    return merges


def write_tokenizer_files(directory: Path) -> None:
    """vocab.json + merges.txt in openai/CLIP's order, plus SD 1.5-style tokenizer configs."""
    directory.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(CORPUS, N_MERGES)
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab_list)) == len(vocab_list)
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    with open(directory / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(directory / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = lambda s: {  # noqa: E731 - same AddedToken shape as SD 1.5's files
        "__type": "AddedToken",
        "content": s,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    tok_config = {
        "add_prefix_space": False,
        "bos_token": special("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": special("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": MAX_LEN,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": special("<|endoftext|>"),
    }
    with open(directory / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(tok_config, f, indent=2, sort_keys=True)
        f.write("\n")
    specials_map = {
        "bos_token": {k: v for k, v in special("<|startoftext|>").items() if k != "__type"},
        "eos_token": {k: v for k, v in special("<|endoftext|>").items() if k != "__type"},
        "pad_token": "<|endoftext|>",
        "unk_token": {k: v for k, v in special("<|endoftext|>").items() if k != "__type"},
    }
    with open(directory / "special_tokens_map.json", "w", encoding="utf-8") as f:
        json.dump(specials_map, f, indent=2, sort_keys=True)
        f.write("\n")


TOKENIZER_CASES = [
    "",
    "a photo of a cat",
    "Hello, World!!",
    "  multiple   spaces\tand\nnewlines ",
    "café naïve résumé",
    "emoji 😀 and 中文",
    "don't it's we're",
    "numbers 12345 and 3.14",
    "<|startoftext|> literal special",
    " ".join(["the quick brown fox jumps over the lazy dog while the cat sleeps"] * 8),
    # Extra: decomposed "e" + U+0301 (the normalizer's NFC makes it "é"), non-ASCII uppercase.
    "cafe\u0301 ÀÉÎ UPPER",
]

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def perturb_constant_params(model: torch.nn.Module, gen: torch.Generator) -> list[str]:
    """Add N(0, 0.1^2) noise to every parameter that was initialised to a constant (norm
    weights = 1, norm/linear biases = 0, ...), so loader mix-ups cannot go unnoticed."""
    touched = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            if flat.numel() > 0 and bool((flat == flat[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
                touched.append(name)
    return touched


def save_weights(model, directory: Path) -> None:
    """fp32 weights + config into `directory`, plus the fp16 variant weights file only (so the
    fp32 config.json stays as written, like the SD 1.5 repository)."""
    model.save_pretrained(directory)
    with tempfile.TemporaryDirectory() as tmp:
        half = copy.deepcopy(model).half()
        half.save_pretrained(tmp, variant="fp16")
        names = [n for n in os.listdir(tmp) if n.endswith(".fp16.safetensors")]
        assert len(names) == 1, names
        shutil.copyfile(Path(tmp) / names[0], directory / names[0])


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    clean = {}
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if v.dtype != torch.int64:
            v = v.to(torch.float32)
        clean[k] = v
    save_file(clean, str(path), metadata={"format": "pt"})  # one key: safetensors orders metadata keys randomly


def f32_list(t: torch.Tensor) -> list[float]:
    # float(np.float32) is the exact double value of the f32, and JSON's repr round-trips it.
    return [float(x) for x in t.detach().to(torch.float32).reshape(-1).tolist()]


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def build_tokenizer() -> CLIPTokenizer:
    # transformers 5 has no slow (pure-Python) CLIPTokenizer any more: CLIPTokenizer is the
    # tokenizers-backed one, and its save_pretrained writes tokenizer.json + tokenizer_config.json
    # only (no vocab.json / merges.txt). So the SD 1.5-style files are written here directly and
    # CLIPTokenizer.from_pretrained is used to load (and thereby check) them.
    tok_dir = OUT / "tokenizer"
    write_tokenizer_files(tok_dir)
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    assert tok.model_max_length == MAX_LEN
    return tok


def build_clip(tok: CLIPTokenizer) -> None:
    torch.manual_seed(SEED_CLIP)
    config = CLIPTextConfig(
        vocab_size=len(tok.get_vocab()),
        hidden_size=CLIP_HIDDEN,
        intermediate_size=CLIP_INTERMEDIATE,
        projection_dim=CLIP_HIDDEN,
        num_hidden_layers=CLIP_LAYERS,
        num_attention_heads=CLIP_HEADS,
        max_position_embeddings=MAX_LEN,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = CLIPTextModel(config).eval()
    gen = torch.Generator().manual_seed(SEED_CLIP)
    perturb_constant_params(model, gen)
    save_weights(model, OUT / "text_encoder")
    # transformers 5 flattened CLIPTextModel and saves keys without the "text_model." prefix;
    # SD 1.5's text_encoder/model.safetensors (written by transformers 4.x) has the prefix and
    # the old persistent `text_model.embeddings.position_ids` buffer (int64 [1, 77]). Rewrite both
    # files in that real layout; transformers 5 still loads it (checked in expected_clip).
    for name, dtype in (("model.safetensors", torch.float32), ("model.fp16.safetensors", torch.float16)):
        sd = {"text_model." + k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
        sd["text_model.embeddings.position_ids"] = torch.arange(MAX_LEN, dtype=torch.int64)[None]
        save_file(sd, str(OUT / "text_encoder" / name), metadata={"format": "pt"})


def build_unet() -> None:
    torch.manual_seed(SEED_UNET)
    model = UNet2DConditionModel(**UNET_CONFIG).eval()
    gen = torch.Generator().manual_seed(SEED_UNET)
    perturb_constant_params(model, gen)
    save_weights(model, OUT / "unet")


def build_vae() -> None:
    torch.manual_seed(SEED_VAE)
    model = AutoencoderKL(**VAE_CONFIG).eval()
    gen = torch.Generator().manual_seed(SEED_VAE)
    perturb_constant_params(model, gen)
    save_weights(model, OUT / "vae")


def build_scheduler() -> DDIMScheduler:
    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    sched.save_pretrained(OUT / "scheduler")
    return sched


# --------------------------------------------------------------------------------------------
# Expected outputs (from the models as reloaded from disk, f32, CPU)
# --------------------------------------------------------------------------------------------


def expected_tokenizer(exp: Path) -> None:
    tok = CLIPTokenizer.from_pretrained(OUT / "tokenizer")
    cases = []
    for text in TOKENIZER_CASES:
        padded = tok(text, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        unpadded = tok(text).input_ids
        cases.append(
            {
                "text": text,
                "ids": list(padded),
                "ids_unpadded": list(unpadded),
                "tokens_unpadded": tok.convert_ids_to_tokens(unpadded),
            }
        )
    doc = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "vocab_size": len(tok.get_vocab()),
        "max_length": MAX_LEN,
        "call": 'tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids; '
        "ids_unpadded: tokenizer(text).input_ids",
        "cases": cases,
    }
    with open(exp / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


def expected_clip(exp: Path) -> None:
    tok = CLIPTokenizer.from_pretrained(OUT / "tokenizer")
    model, info = CLIPTextModel.from_pretrained(
        OUT / "text_encoder", dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    with torch.no_grad():
        ref = {k.removeprefix("text_model."): v for k, v in _load(OUT / "text_encoder" / "model.safetensors").items()}
        for k, v in model.state_dict().items():
            assert torch.equal(v, ref[k]), k
    out = {}
    for suffix, prompt in (("", "a photo of a cat"), ("_empty", "")):
        ids = tok(prompt, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            h = model(input_ids=ids).last_hidden_state
        out["input_ids" + suffix] = ids.to(torch.int64)
        out["last_hidden_state" + suffix] = h
    save_tensors(exp / "clip.safetensors", out)


def expected_unet(exp: Path) -> None:
    unet = UNet2DConditionModel.from_pretrained(OUT / "unet", torch_dtype=torch.float32).eval()
    # Intermediates, by forward hooks: up_block_i / mid_block are the blocks' returned tensors
    # (up_block_2 = GoodDrag's feature map, after its upsampler); down_block_i is element 0 of
    # the returned tuple (the hidden state after the block's downsampler, if any); time_emb is
    # the TimestepEmbedding output (linear_1 -> silu -> linear_2).
    feats: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_module, _inputs, output):
            feats[name] = output[0] if isinstance(output, tuple) else output

        return fn

    handles = [unet.time_embedding.register_forward_hook(hook("time_emb"))]
    for i, blk in enumerate(unet.down_blocks):
        handles.append(blk.register_forward_hook(hook(f"down_block_{i}")))
    handles.append(unet.mid_block.register_forward_hook(hook("mid_block")))
    for i, blk in enumerate(unet.up_blocks):
        handles.append(blk.register_forward_hook(hook(f"up_block_{i}")))

    g = torch.Generator().manual_seed(SEED_INPUTS)
    ehs = torch.randn(1, MAX_LEN, UNET_CONFIG["cross_attention_dim"], generator=g)
    out = {"encoder_hidden_states": ehs}
    # "": the GoodDrag-like case (t = 741, the first drag timestep); "_ns": non-square 8x6,
    # whose up path needs diffusers' forward_upsample_size (1x1 -> 2x2 -> 4x3 -> 8x6, nearest
    # with an explicit size); "_16": 16x16 so the mid block's self-attention sees 4 tokens
    # instead of 1.
    cases = (("", (1, 4, 8, 8), 741), ("_ns", (1, 4, 8, 6), 1), ("_16", (1, 4, 16, 16), 981))
    for suffix, shape, t in cases:
        sample = torch.randn(*shape, generator=g)
        feats.clear()
        with torch.no_grad():
            noise_pred = unet(sample, torch.tensor([t], dtype=torch.int64), encoder_hidden_states=ehs).sample
        out["sample" + suffix] = sample
        out["timestep" + suffix] = torch.tensor([float(t)])
        out["noise_pred" + suffix] = noise_pred
        for k, v in feats.items():
            out[k + suffix] = v
    for h in handles:
        h.remove()
    save_tensors(exp / "unet.safetensors", out)


def expected_vae(exp: Path) -> None:
    vae = AutoencoderKL.from_pretrained(OUT / "vae", torch_dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(SEED_INPUTS + 1)
    out = {}
    # "" : the square case the brief asks for; "_odd": H, W not multiples of 8 (60x44 -> 7x5),
    # exercising the encoder's asymmetric (0,1,0,1) downsampling pad and a non-square decode.
    for suffix, (h, w) in (("", (64, 64)), ("_odd", (60, 44))):
        image = torch.rand(1, 3, h, w, generator=g) * 2.0 - 1.0
        with torch.no_grad():
            dist = vae.encode(image).latent_dist
        lh, lw = dist.mean.shape[-2:]
        z = torch.randn(1, 4, lh, lw, generator=g)
        with torch.no_grad():
            decoded = vae.decode(z).sample
        out["image" + suffix] = image
        out["latent_mean" + suffix] = dist.mean
        out["latent_std" + suffix] = dist.std
        out["z" + suffix] = z
        out["decoded" + suffix] = decoded
    save_tensors(exp / "vae.safetensors", out)


def expected_scheduler(exp: Path) -> None:
    sched = DDIMScheduler.from_pretrained(OUT / "scheduler")
    sched.set_timesteps(50)
    g = torch.Generator().manual_seed(SEED_INPUTS + 2)
    steps = []
    for t in (741, 1):
        sample = torch.randn(1, 4, 2, 2, generator=g)
        eps = torch.randn(1, 4, 2, 2, generator=g)
        prev = sched.step(eps, t, sample, eta=0.0).prev_sample
        steps.append(
            {
                "timestep": t,
                "shape": [1, 4, 2, 2],
                "sample": f32_list(sample),
                "model_output": f32_list(eps),
                "prev_sample": f32_list(prev),
            }
        )
    doc = {
        "config": SCHEDULER_CONFIG,
        "num_inference_steps": 50,
        "timesteps": [int(t) for t in sched.timesteps.tolist()],
        "final_alpha_cumprod": float(sched.final_alpha_cumprod),
        "alphas_cumprod": f32_list(sched.alphas_cumprod),
        "betas": f32_list(sched.betas),
        "step_eta0": steps,
    }
    with open(exp / "scheduler.json", "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def empty_prompt_embedding() -> torch.Tensor:
    """The tiny CLIP's last hidden state for "" (the GoodDrag default prompt), from clip.safetensors."""
    return _load(OUT / "expected" / "clip.safetensors")["last_hidden_state_empty"]


def expected_inversion(exp: Path) -> None:
    """GoodDrag's DDIM inversion (spec 1.8, DragDiffusion's `inv_step`) of a VAE latent to
    strength 0.75 (38 of 50 steps, ending at t = 741), every intermediate latent, and the plain
    DDIM reconstruction back from z_T with `DDIMScheduler.step` (spec 1.7)."""
    unet = UNet2DConditionModel.from_pretrained(OUT / "unet", torch_dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(OUT / "vae", torch_dtype=torch.float32).eval()
    sched = DDIMScheduler.from_pretrained(OUT / "scheduler")
    sched.set_timesteps(50)
    ehs = empty_prompt_embedding()
    g = torch.Generator().manual_seed(SEED_INPUTS + 3)
    image = torch.rand(1, 3, 64, 64, generator=g) * 2.0 - 1.0
    with torch.no_grad():
        z0 = vae.encode(image).latent_dist.mean * vae.config.scaling_factor
    step = sched.config.num_train_timesteps // sched.num_inference_steps
    n_steps = int(round(0.75 * 50))
    z = z0.clone()
    latents, eps_all = [], []
    with torch.no_grad():
        for i, t in enumerate(reversed(sched.timesteps)):
            if i >= n_steps:
                continue
            eps = unet(z, t, encoder_hidden_states=ehs).sample
            # GoodDragger.inv_step, verbatim
            next_step = t
            timestep = min(t - step, 999)
            a = sched.alphas_cumprod[timestep] if timestep >= 0 else sched.final_alpha_cumprod
            a_next = sched.alphas_cumprod[next_step]
            pred_x0 = (z - (1 - a) ** 0.5 * eps) / a**0.5
            z = a_next**0.5 * pred_x0 + (1 - a_next) ** 0.5 * eps
            latents.append(z)
            eps_all.append(eps)
        z_t = z
        denoised = []
        for t in sched.timesteps[50 - n_steps :]:
            eps = unet(z, t, encoder_hidden_states=ehs).sample
            z = sched.step(eps, t, z, eta=0.0).prev_sample
            denoised.append(z)
    save_tensors(
        exp / "inversion.safetensors",
        {
            "image": image,
            "encoder_hidden_states": ehs,
            "z0": z0,
            "inversion_latents": torch.cat(latents),
            "inversion_noise_pred": torch.cat(eps_all),
            "z_T": z_t,
            "denoised_latents": torch.cat(denoised),
        },
    )


# GoodDrag's rank is 16; the fixtures use 4 (training) and 2 (file layouts) to stay small; rank
# is a parameter of the Rust code, not a constant.
LORA_RANK = 4
LORA_FORMAT_RANK = 2
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def unet_with_lora(init_b: bool, rank: int = LORA_RANK, seed: int = SEED_INPUTS + 4) -> UNet2DConditionModel:
    """The tiny UNet with a PEFT LoRA as GoodDrag's (rank 16 there, alpha = rank so scale 1,
    on to_q/to_k/to_v/to_out.0 of all 32 attention modules; A ~ N(0, 1/r^2), B = 0). With
    `init_b`, B is drawn N(0, 0.05^2) too, so a first optimisation step moves A as well."""
    from peft import LoraConfig

    unet = UNet2DConditionModel.from_pretrained(OUT / "unet", torch_dtype=torch.float32)
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(unet.named_parameters()):
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=g) / rank)
            elif "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05 if init_b else torch.zeros_like(p))
    return unet


def lora_state(unet) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}


def save_diffusers_lora(state: dict[str, torch.Tensor], path: Path) -> None:
    """What diffusers' `StableDiffusionPipeline.save_lora_weights(unet_lora_layers=...)` writes
    (keys `unet.<module>.lora_A.weight` / `lora_B.weight`), with the fixed single-key metadata."""
    from diffusers import StableDiffusionPipeline

    with tempfile.TemporaryDirectory() as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=state, safe_serialization=True)
        written = _load(Path(tmp) / "pytorch_lora_weights.safetensors")
    save_tensors(path, written)


def expected_lora(exp: Path) -> None:
    """Two AdamW steps of GoodDrag's LoRA fine-tuning (spec 1.9: lr 5e-4, betas (0.9, 0.999),
    weight decay 1e-2, eps 1e-8; batch 4; DDPM add_noise at uniform timesteps; MSE to the noise)
    with fixed latents, noise and timesteps, plus LoRA files in three layouts and UNet outputs
    with a LoRA applied."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    lora_dir = OUT / "lora"
    lora_dir.mkdir()
    noise_sched = DDPMScheduler.from_pretrained(OUT / "scheduler")
    ehs = empty_prompt_embedding().repeat(4, 1, 1)
    unet = unet_with_lora(init_b=True)
    save_diffusers_lora(lora_state(unet), lora_dir / "init_diffusers.safetensors")
    params = [p for p in unet.parameters() if p.requires_grad]
    assert sum(p.numel() for p in params) > 0
    opt = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    g = torch.Generator().manual_seed(SEED_INPUTS + 5)
    out = {}
    for k in range(2):
        latents = torch.randn(4, 4, 8, 8, generator=g)
        noise = torch.randn(4, 4, 8, 8, generator=g)
        timesteps = torch.randint(0, 1000, (4,), generator=g, dtype=torch.int64)
        noisy = noise_sched.add_noise(latents, noise, timesteps)
        pred = unet(noisy, timesteps, encoder_hidden_states=ehs).sample
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        out[f"latents_{k}"] = latents
        out[f"noise_{k}"] = noise
        out[f"timesteps_{k}"] = timesteps.to(torch.float32)
        out[f"noisy_{k}"] = noisy
        out[f"loss_{k}"] = loss.detach().reshape(1)
        if k == 0:
            grads = {n: p.grad.detach().clone() for n, p in unet.named_parameters() if p.requires_grad}
            save_tensors(lora_dir / "grads_step0.safetensors", grads)
        opt.step()
        opt.zero_grad()
        save_diffusers_lora(lora_state(unet), lora_dir / f"after_step{k}_diffusers.safetensors")
    # UNet output with the trained LoRA on the first inversion-fixture case.
    base = _load(exp / "unet.safetensors")
    with torch.no_grad():
        out["noise_pred_lora"] = unet(base["sample"], 741, encoder_hidden_states=base["encoder_hidden_states"]).sample
    save_tensors(exp / "lora.safetensors", out)

    # One small LoRA (rank 2) in the three layouts users have; diffusers' output with each loaded.
    small = lora_state(unet_with_lora(init_b=True, rank=LORA_FORMAT_RANK, seed=SEED_INPUTS + 6))
    save_diffusers_lora(small, lora_dir / "small_diffusers.safetensors")
    trained = _load(lora_dir / "small_diffusers.safetensors")
    # (a) diffusers <= 0.20 attention processors (what the official GoodDrag code writes):
    #     unet.<attn>.processor.<to_q|to_k|to_v|to_out>_lora.<down|up>.weight
    old = {}
    for key, v in trained.items():
        mod, ab = key.rsplit(".lora_", 1)
        if mod.endswith(".to_out.0"):
            attn, proj = mod.removesuffix(".to_out.0"), "to_out"
        else:
            attn, proj = mod.rsplit(".", 1)
        old[f"{attn}.processor.{proj}_lora.{'down' if ab.startswith('A') else 'up'}.weight"] = v
    save_tensors(lora_dir / "small_attn_procs.safetensors", old)
    # (b) kohya-ss / A1111 (most community SD 1.5 LoRAs): lora_unet_<path with _>.lora_down/up
    #     + .alpha; alpha = rank/2 here, so the scale is 0.5 and the loader must apply it.
    kohya = {}
    for key, v in trained.items():
        mod, ab = key.rsplit(".lora_", 1)
        name = "lora_unet_" + mod.removeprefix("unet.").replace(".", "_")
        kohya[f"{name}.{'lora_down' if ab.startswith('A') else 'lora_up'}.weight"] = v
        kohya[f"{name}.alpha"] = torch.tensor(LORA_FORMAT_RANK / 2)
    save_tensors(lora_dir / "small_kohya.safetensors", kohya)
    # What diffusers computes with each file loaded (also proves diffusers reads all three).
    from diffusers import StableDiffusionPipeline

    res = {}
    for name in ("small_diffusers", "small_attn_procs", "small_kohya"):
        fresh = UNet2DConditionModel.from_pretrained(OUT / "unet", torch_dtype=torch.float32).eval()
        sd, alphas = StableDiffusionPipeline.lora_state_dict(str(lora_dir / f"{name}.safetensors"))
        fresh.load_lora_adapter(sd, network_alphas=alphas, prefix="unet", adapter_name="x")
        with torch.no_grad():
            res[name] = fresh(base["sample"], 741, encoder_hidden_states=base["encoder_hidden_states"]).sample
    assert torch.equal(res["small_diffusers"], res["small_attn_procs"])
    assert not torch.allclose(res["small_diffusers"], res["small_kohya"])
    save_tensors(exp / "lora_loaded.safetensors", {f"noise_pred_{k}": v for k, v in res.items()})


# A LoRA file written by this project's own writer (`gooddrag::lora::write_lora`), committed
# by `cargo test` (tests/lora_parity.rs, GOODDRAG_UPDATE_FIXTURES=1 rewrites it), and what
# diffusers computes with it loaded: the check that the files GoodDrag Web writes load in
# diffusers, automated instead of done by hand.
GOODDRAG_LORA_DIR = ROOT / "tests" / "fixtures" / "gooddrag-lora"


def expected_gooddrag_lora() -> None:
    """Loads tests/fixtures/gooddrag-lora/pytorch_lora_weights.safetensors the way a diffusers
    user does (`StableDiffusionPipeline.lora_state_dict` + `load_lora_adapter`) into the tiny
    UNet and writes its noise prediction on the UNet fixture's input at t = 741."""
    from diffusers import StableDiffusionPipeline

    path = GOODDRAG_LORA_DIR / "pytorch_lora_weights.safetensors"
    if not path.is_file():
        print(f"skipped: {path.relative_to(ROOT)} is missing (run the Rust tests first)")
        return
    base = _load(OUT / "expected" / "unet.safetensors")
    unet = UNet2DConditionModel.from_pretrained(OUT / "unet", torch_dtype=torch.float32).eval()
    sd, alphas = StableDiffusionPipeline.lora_state_dict(str(path))
    assert sd, "diffusers found no LoRA weights in the file"
    unet.load_lora_adapter(sd, network_alphas=alphas, prefix="unet", adapter_name="gooddrag")
    loaded = sum(1 for n, _ in unet.named_parameters() if "lora_" in n)
    assert loaded == len(sd), f"diffusers attached {loaded} LoRA parameters for {len(sd)} tensors"
    with torch.no_grad():
        pred = unet(base["sample"], 741, encoder_hidden_states=base["encoder_hidden_states"]).sample
    save_tensors(GOODDRAG_LORA_DIR / "diffusers_output.safetensors", {"noise_pred": pred})


def expected_drag(exp: Path) -> None:
    """One GoodDrag motion-supervision step and one point tracking, written as the official code
    has them (`interpolate_feature_patch`, `cal_motion_supervision_loss`, `point_tracking`;
    spec 1.10-1.14), on the tiny UNet at t = 741 with a 64x64 image (32x32 feature resolution)."""
    import torch.nn.functional as F

    unet = UNet2DConditionModel.from_pretrained(OUT / "unet", torch_dtype=torch.float32).eval()
    unet.requires_grad_(False)
    sched = DDIMScheduler.from_pretrained(OUT / "scheduler")
    sched.set_timesteps(50)
    ehs = empty_prompt_embedding()
    z_t = _load(exp / "inversion.safetensors")["z_T"]
    t, r1, r2, beta, lam = 741, 4, 12, 4.0, 0.2
    sup = (32, 32)

    feats = {}
    handle = unet.up_blocks[2].register_forward_hook(lambda m, i, o: feats.__setitem__("f", o))

    def unet_feat(z):
        eps = unet(z, t, encoder_hidden_states=ehs).sample
        return eps, F.interpolate(feats["f"], sup, mode="bilinear")

    def interpolate_feature_patch(feat, y, x, r):
        x0 = torch.floor(x).long()
        x1 = x0 + 1
        y0 = torch.floor(y).long()
        y1 = y0 + 1
        wa = (x1.float() - x) * (y1.float() - y)
        wb = (x1.float() - x) * (y - y0.float())
        wc = (x - x0.float()) * (y1.float() - y)
        wd = (x - x0.float()) * (y - y0.float())
        Ia = feat[:, :, y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
        Ib = feat[:, :, y1 - r : y1 + r + 1, x0 - r : x0 + r + 1]
        Ic = feat[:, :, y0 - r : y0 + r + 1, x1 - r : x1 + r + 1]
        Id = feat[:, :, y1 - r : y1 + r + 1, x1 - r : x1 + r + 1]
        return Ia * wa + Ib * wb + Ic * wc + Id * wd

    with torch.no_grad():
        eps0, f0_map = unet_feat(z_t)
        z_prev0 = sched.step(eps0, t, z_t).prev_sample
    g = torch.Generator().manual_seed(SEED_INPUTS + 7)
    z = (z_t + 0.05 * torch.randn(z_t.shape, generator=g)).requires_grad_(True)
    eps1, f1_map = unet_feat(z)
    z_prev = sched.step(eps1, t, z).prev_sample
    handle.remove()
    p0 = torch.tensor([[12.0, 10.0], [18.0, 20.0]])
    p = torch.tensor([[13.0, 12.0], [18.0, 19.0]])
    q = torch.tensor([[15.0, 18.0], [20.0, 19.5]])
    mask = torch.zeros(1, 1, 8, 8)
    mask[:, :, 2:6, 1:7] = 1.0
    drag_loss = 0.0
    for i in range(len(p)):
        pi0, pi, ti = p0[i], p[i], q[i]
        if (ti - pi).norm() < 2.0:
            continue
        di = (ti - pi) / (ti - pi).norm() * min(beta, (ti - pi).norm())
        f0_patch = f0_map[:, :, int(pi0[0]) - r1 : int(pi0[0]) + r1 + 1, int(pi0[1]) - r1 : int(pi0[1]) + r1 + 1].detach()
        f1_patch = interpolate_feature_patch(f1_map, pi[0] + di[0], pi[1] + di[1], r1)
        drag_loss += ((2 * r1) ** 2) * F.l1_loss(f0_patch, f1_patch)
    loss = drag_loss + lam * ((z_prev - z_prev0) * (1.0 - mask)).abs().sum()
    loss.backward()
    # point_tracking (compare_mode), on the same forward's features.
    tracked = p.clone()
    with torch.no_grad():
        for i in range(len(p)):
            pi0, pi = p0[i], tracked[i]
            f0 = f0_map[:, :, int(pi0[0]), int(pi0[1])]
            ra, rb = int(pi[0]) - r2, int(pi[0]) + r2 + 1
            ca, cb = int(pi[1]) - r2, int(pi[1]) + r2 + 1
            assert ra >= 0 and ca >= 0 and rb <= sup[0] and cb <= sup[1]
            nb = f1_map[:, :, ra:rb, ca:cb]
            dist = (f0.unsqueeze(-1).unsqueeze(-1) - nb).abs().sum(dim=1).squeeze(0)
            row, col = divmod(dist.argmin().item(), dist.shape[-1])
            tracked[i][0] = pi[0] - r2 + row
            tracked[i][1] = pi[1] - r2 + col
    shift0 = (q[0] - p[0]) / (q[0] - p[0]).norm() * min(beta, (q[0] - p[0]).norm())
    save_tensors(
        exp / "drag.safetensors",
        {
            "z": z.detach(),
            "z_prev0": z_prev0,
            "mask": mask,
            "handles_init": p0,
            "handles": p,
            "targets": q,
            "loss": loss.detach().reshape(1),
            "drag_loss": drag_loss.detach().reshape(1),
            "grad_z": z.grad,
            "tracked": tracked,
            "f1_patch_0": interpolate_feature_patch(f1_map.detach(), *(p[0] + shift0), r1),
        },
    )


class MutualSelfAttention:
    """MasaCtrl's `MutualSelfAttentionControl.attn_batch` (spec 1.16) as a diffusers attention
    processor: the queries of every sample, concatenated along the tokens, attend to the keys
    and values of sample 0 (the reference branch); scale 1/sqrt(d)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert encoder_hidden_states is None, "self-attention only"
        b, n, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        h = attn.heads
        d = q.shape[-1] // h
        qh = q.reshape(b, n, h, d).permute(2, 0, 1, 3).reshape(h, b * n, d)
        kh = k[:1].reshape(1, n, h, d).permute(2, 0, 1, 3).reshape(h, n, d)
        vh = v[:1].reshape(1, n, h, d).permute(2, 0, 1, 3).reshape(h, n, d)
        out = ((qh @ kh.transpose(-1, -2)) * d**-0.5).softmax(-1) @ vh
        out = out.reshape(h, b, n, d).permute(1, 2, 0, 3).reshape(b, n, h * d)
        return attn.to_out[1](attn.to_out[0](out))


def expected_masactrl(exp: Path) -> None:
    """A batch-2 UNet pass [reference, edited] with mutual self-attention in transformer blocks
    10-15 (= every attn1 of up_blocks[2] and up_blocks[3]), as GoodDrag's Latent-MasaCtrl."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = UNet2DConditionModel.from_pretrained(OUT / "unet", torch_dtype=torch.float32).eval()
    procs = {}
    for name in unet.attn_processors:
        mutual = name.startswith(("up_blocks.2.", "up_blocks.3.")) and ".attn1." in name
        procs[name] = MutualSelfAttention() if mutual else AttnProcessor2_0()
    assert sum(isinstance(p, MutualSelfAttention) for p in procs.values()) == 6
    unet.set_attn_processor(procs)
    g = torch.Generator().manual_seed(SEED_INPUTS + 8)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = empty_prompt_embedding().repeat(2, 1, 1)
    with torch.no_grad():
        noise_pred = unet(sample, 621, encoder_hidden_states=ehs).sample
    save_tensors(exp / "masactrl.safetensors", {"sample": sample, "noise_pred": noise_pred})


def write_dragbench_pickles() -> None:
    """DragBench-style `meta_data.pkl` files (spec 4.3) in every pickle protocol the Rust reader
    supports, plus the float32 all-zero mask DragBench stores when no mask was drawn. Written
    to tests/fixtures/pickle/ with the expected contents in expected.json."""
    import pickle

    import numpy as np

    out = ROOT / "tests" / "fixtures" / "pickle"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[10:30, 5:40] = 1
    meta = {"prompt": "a photo of a cat", "points": [[12, 20], [30, 22], [50, 40], [41, 8]], "mask": mask}
    for proto in (2, 3, 4, 5):
        with open(out / f"meta_p{proto}.pkl", "wb") as f:
            pickle.dump(meta, f, protocol=proto)
    empty = {"prompt": "", "points": [[1, 2], [3, 4]], "mask": np.zeros((48, 64), dtype=np.float32)}
    with open(out / "meta_float_mask.pkl", "wb") as f:
        pickle.dump(empty, f, protocol=4)
    # Big-endian and Fortran-ordered arrays must come out right too.
    odd = {"prompt": "x", "points": [(1, 2), (3, 4)], "mask": np.asfortranarray(mask.astype(">i2"))}
    with open(out / "meta_odd_layout.pkl", "wb") as f:
        pickle.dump(odd, f, protocol=2)
    with open(out / "expected.json", "w", encoding="utf-8") as f:
        json.dump({"mask_sum": int(mask.sum()), "mask_first_row": 10, "mask_first_col": 5, "shape": [48, 64]}, f)
        f.write("\n")


def check_fp16_variants() -> None:
    """Each fp16 variant loads with its library's `variant="fp16"` and equals fp32 -> half."""
    for cls, sub in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae"), (CLIPTextModel, "text_encoder")):
        kw = {"torch_dtype": torch.float16} if cls is not CLIPTextModel else {"dtype": torch.float16}
        half = cls.from_pretrained(OUT / sub, variant="fp16", **kw).state_dict()
        full = cls.from_pretrained(OUT / sub).state_dict()
        assert half.keys() == full.keys(), sub
        for k, v in full.items():
            assert torch.equal(half[k], v.half() if v.is_floating_point() else v), (sub, k)


def write_versions(exp: Path) -> None:
    doc = {
        "python": platform.python_version(),
        **{
            p: version(p)
            for p in ("torch", "diffusers", "transformers", "tokenizers", "safetensors", "numpy", "peft", "accelerate")
        },
        "seeds": {"unet": SEED_UNET, "vae": SEED_VAE, "clip": SEED_CLIP, "inputs": SEED_INPUTS},
        "unet_attn_processor": None,
    }
    unet = UNet2DConditionModel.from_pretrained(OUT / "unet")
    doc["unet_attn_processor"] = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    clip = CLIPTextModel.from_pretrained(OUT / "text_encoder")
    doc["clip_attn_implementation"] = clip.config._attn_implementation
    with open(exp / "versions.json", "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def main() -> None:
    if sys.argv[1:] == ["--gooddrag-lora"]:
        # Only the diffusers load of the LoRA file this project wrote (tiny-sd/ must exist).
        torch.set_num_threads(1)
        expected_gooddrag_lora()
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    tok = build_tokenizer()
    build_clip(tok)
    build_unet()
    build_vae()
    build_scheduler()

    exp = OUT / "expected"
    exp.mkdir()
    expected_tokenizer(exp)
    expected_clip(exp)
    expected_unet(exp)
    expected_vae(exp)
    expected_scheduler(exp)
    expected_inversion(exp)
    expected_lora(exp)
    expected_drag(exp)
    expected_masactrl(exp)
    write_dragbench_pickles()
    check_fp16_variants()
    write_versions(exp)
    expected_gooddrag_lora()

    total = 0
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            size = path.stat().st_size
            total += size
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            print(f"{size:>10}  {digest}  {path.relative_to(ROOT)}")
    print(f"{total:>10}  total ({total / 2**20:.2f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
