#!/usr/bin/env python3
"""LPIPS parity fixtures (tests/fixtures/lpips/, ≈ 0.3 MB): the `lpips` package's own AlexNet-LPIPS
v0.1 on committed image pairs, with the package's real linear heads and an AlexNet trunk whose
weights are the closed-form deterministic values that src/weights/deterministic.rs computes
(torchvision names `features.N.weight/bias`), so no 9.9 MB of trunk weights is committed. Also
PyTorch checkpoint files for the `.pth` reader (src/weights/pth.rs): the heads in the legacy
format (the package's file, copied), re-saved in the zip format and as safetensors; tensors that
are strided views of shared storages in both formats; and a checkpoint carrying code.

Usage (from the repository root, in the fixtures venv of scripts/make_fixtures.py, with
`pip install --no-deps lpips==0.1.4 torchvision==0.29.2 && pip install scipy tqdm`: lpips imports
torchvision's model zoo, pure Python here, and scipy at import time):

    .venv-fixtures/bin/python scripts/make_lpips_fixtures.py

Outputs:
    alex.pth               the package's lpips/weights/v0.1/alex.pth, byte for byte (legacy format)
    heads_zip.pth          the same five tensors, torch.save (zip format)
    heads.safetensors      the same five tensors, safetensors
    images.safetensors     uint8 [H, W, 3] images `<case>_a`, `<case>_b`
    expected.json          per case: LPIPS and the five per-tap terms from the package; for the
                           IF cases also checksums of the 224×224 inputs; the heads' checksums
    views.pth, views_legacy.pth, views.json   strided views, f16/bf16/int64 storages, a Parameter,
                           a nested dict, non-tensor values, and their expected values
    evil.pth               a zip checkpoint whose pickle calls os.system (must be refused)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_full_width_fixtures import deterministic_tensor  # noqa: E402

import lpips  # noqa: E402

OUT = Path("tests/fixtures/lpips")


def images(seed: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random image and a shifted, noisier copy (a plausible 'edit')."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 6, 6, generator=g)
    a = F.interpolate(low, (h + 8, w + 8), mode="bicubic", align_corners=False)
    a = a + 0.08 * torch.rand(1, 3, h + 8, w + 8, generator=g)
    b = torch.roll(a, shifts=(3, -2), dims=(2, 3)) + 0.05 * torch.rand(1, 3, h + 8, w + 8, generator=g)

    def u8(t: torch.Tensor) -> np.ndarray:
        t = t[0, :, 4 : 4 + h, 4 : 4 + w].clamp(0, 1) * 255
        return t.round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()

    return u8(a), u8(b)


def signed_unit(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1


def per_layer(model: lpips.LPIPS, a: torch.Tensor, b: torch.Tensor) -> tuple[float, list[float]]:
    total, layers = model(a, b, retPerLayer=True)
    return float(total.flatten()[0]), [float(r.flatten()[0]) for r in layers]


def checkpoints(heads: dict[str, torch.Tensor]) -> None:
    torch.save(heads, OUT / "heads_zip.pth")
    save_file({k: v.contiguous() for k, v in heads.items()}, OUT / "heads.safetensors")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    obj = {
        "base": base,
        "transposed": base.t(),
        "rows": base[1:3],
        "column": base[:, 2],
        "every_other": torch.nn.Parameter(base[::2, ::3]),
        "half": (base * 3).half(),
        "bf16": (base - 1).bfloat16(),
        "long": torch.arange(5) - 2,
        "nested": {"x": torch.tensor([1.5, -2.0]), "note": "text"},
        "count": 3,
    }
    torch.save(obj, OUT / "views.pth")
    torch.save(obj, OUT / "views_legacy.pth", _use_new_zipfile_serialization=False)
    expected = {}

    def walk(prefix: str, v) -> None:
        if isinstance(v, torch.Tensor):
            expected[prefix] = {"shape": list(v.shape), "values": v.detach().float().flatten().tolist()}
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)

    walk("", obj)
    (OUT / "views.json").write_text(json.dumps(expected, indent=1) + "\n")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))

    torch.save({"w": torch.zeros(2), "payload": Evil()}, OUT / "evil.pth")


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    # The trunk: slices hold torchvision's `features` modules under their original indices.
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            index, kind = name.split(".")[1:]
            tv = f"features.{index}.{kind}"
            p.copy_(torch.from_numpy(deterministic_tensor(tv, tuple(p.shape))))
    heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    shutil.copyfile(heads_file, OUT / "alex.pth")
    heads = torch.load(heads_file, map_location="cpu")
    head_sums = {k: {"sum": float(v.double().sum()), "max": float(v.max())} for k, v in heads.items()}
    checkpoints(heads)

    cases = {}
    tensors = {}
    with torch.no_grad():
        for name, seed, (w, h), dragbench in [
            ("pair_64x64", 1, (64, 64), False),
            ("pair_67x53", 2, (67, 53), False),
            ("if_256x192", 3, (256, 192), True),
            ("if_96x128", 4, (96, 128), True),
        ]:
            a, b = images(seed, w, h)
            tensors[f"{name}_a"] = torch.from_numpy(a)
            tensors[f"{name}_b"] = torch.from_numpy(b)
            ta, tb = signed_unit(a), signed_unit(b)
            case = {"width": w, "height": h, "dragbench_if": dragbench}
            if dragbench:
                # DragBench's run_eval_similarity.py: no antialiasing, aspect not kept.
                ta = F.interpolate(ta, (224, 224), mode="bilinear")
                tb = F.interpolate(tb, (224, 224), mode="bilinear")
                case["input_a_sum"] = float(ta.double().sum())
                case["input_a_samples"] = [float(ta.flatten()[i]) for i in range(0, ta.numel(), 9973)]
            case["lpips"], case["per_layer"] = per_layer(model, ta, tb)
            case["lpips_same"] = float(model(ta, ta).flatten()[0])
            cases[name] = case
    save_file(tensors, OUT / "images.safetensors")
    (OUT / "expected.json").write_text(
        json.dumps(
            {
                "generator": "scripts/make_lpips_fixtures.py",
                "versions": {p: metadata.version(p) for p in ["torch", "lpips", "torchvision", "numpy"]},
                "heads": head_sums,
                "cases": cases,
            },
            indent=1,
        )
        + "\n"
    )
    print(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
