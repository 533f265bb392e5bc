#!/usr/bin/env python3
"""Joins scripts/gpu-bench.sh's reports into one Markdown table: per phase of the default edit,
its count in the edit, our time for each configuration run (`ours-*.json`, from
`gooddrag bench-synthetic --json`), PyTorch's (`torch.json`, from scripts/torch_bench.py, or
"skipped" with the reason in `torch.skipped`), and ours ÷ PyTorch for the fastest of ours; then
the whole edit extrapolated by the counts. Standard library only.

Usage: gpu_bench_table.py DIR > DIR/table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    out = Path(sys.argv[1])
    ours = {}
    for path in sorted(out.glob("ours-*.json")):
        data = json.loads(path.read_text())
        ours[path.stem.removeprefix("ours-")] = data.get("report", data)
    if not ours:
        sys.exit(f"{out}: no ours-*.json reports")
    torch = json.loads((out / "torch.json").read_text()) if (out / "torch.json").is_file() else None
    skipped = (out / "torch.skipped").read_text().strip() if (out / "torch.skipped").is_file() else "not run"
    first = next(iter(ours.values()))
    adapter = json.loads((out / f"ours-{next(iter(ours))}.json").read_text()).get("adapter", {})
    print(f"# GPU benchmark: {first['model']} at latent {first['latentSize']} ({8 * first['latentSize']}² px)\n")
    print(f"Adapter: {adapter.get('name', '?')} ({adapter.get('backend', '?')}); "
          f"PyTorch: {torch['device'] + ', torch ' + torch['torch'] + (', fp16 autocast' if torch['autocast_fp16'] else ', f32') if torch else 'skipped — ' + skipped}.\n")
    configs = list(ours)
    header = ["phase", "× in edit"] + [f"ours {c} (ms)" for c in configs] + ["PyTorch (ms)", "best ours ÷ PyTorch"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    totals = {c: 0.0 for c in configs}
    torch_total = 0.0
    torch_phases = {p["name"]: p["millis"] for p in torch["phases"]} if torch else {}
    for phase in first["phases"]:
        name, count = phase["name"], phase["countInEdit"]
        cells = [name, str(count)]
        times = []
        for c in configs:
            match = next((p for p in ours[c]["phases"] if p["name"] == name), None)
            ms = match["millis"] if match else None
            times.append(ms)
            cells.append("–" if ms is None else f"{ms:.1f}")
            if ms is not None:
                totals[c] += ms * count
        ref = next((v for k, v in torch_phases.items() if name.startswith(k)), None)
        cells.append("skipped" if torch is None else ("–" if ref is None else f"{ref:.1f}"))
        best = min((t for t in times if t is not None), default=None)
        cells.append(f"{best / ref:.2f}" if ref and best is not None else "–")
        if ref is not None:
            torch_total += ref * count
        print("| " + " | ".join(cells) + " |")
    cells = ["**whole default edit (s)**", ""] + [f"**{totals[c] / 1e3:.1f}**" for c in configs]
    best_total = min(totals.values())
    cells.append("skipped" if torch is None else f"**{torch_total / 1e3:.1f}**")
    cells.append(f"**{best_total / torch_total:.2f}**" if torch and torch_total else "–")
    print("| " + " | ".join(cells) + " |")
    print()
    for c in configs:
        r = ours[c]
        print(f"- ours {c}: backward plan {r.get('backwardPlan', '?')}, f16 weights {r['f16Weights']}, "
              f"compute {r.get('precision', 'f32')}, "
              f"{r['totalUnetForwardEquivalents']:.0f} UNet forwards counted per edit, dry run {r['dryRun']}")


if __name__ == "__main__":
    main()
