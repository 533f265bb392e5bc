//! The FLOPs counted from the shapes the code runs (`perf::work`) equal an independent count
//! summed layer by layer from the diffusers config (the formulas below know nothing of the
//! model code): the tiny UNet at two latent sizes and batch 2, with and without the LoRA
//! adapters' extra products.

mod parity_support;

use burn::tensor::{Distribution, Tensor};
use gooddrag::device;
use gooddrag::models::unet_2d_condition::UNet2DConditionConfig;
use gooddrag::perf::work;
use parity_support::fixture_dir;
use serde_json::Value;

/// 2 FLOPs per multiply-add of a `[rows, inner] · [inner, cols]` product.
fn mm(rows: u64, inner: u64, cols: u64) -> u64 {
    2 * rows * inner * cols
}

/// One UNet forward's FLOPs from `unet/config.json` (SD 1.x layout: CrossAttn/plain down and
/// up blocks, a cross-attention mid block, one transformer layer per block, GEGLU ×4), batch
/// `b`, latent `h × w`, `tokens` text tokens.
fn unet_flops(config: &Value, b: u64, h: u64, w: u64, tokens: u64) -> u64 {
    let num = |k: &str| config[k].as_u64().unwrap();
    let channels: Vec<u64> = config["block_out_channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let layers = num("layers_per_block");
    let context = num("cross_attention_dim");
    let temb = 4 * channels[0];
    let conv = |cin: u64, cout: u64, k: u64, h: u64, w: u64| mm(b * h * w, cin * k * k, cout);
    let resnet = |cin: u64, cout: u64, h: u64, w: u64| {
        conv(cin, cout, 3, h, w)
            + mm(b, temb, cout)
            + conv(cout, cout, 3, h, w)
            + if cin != cout {
                conv(cin, cout, 1, h, w)
            } else {
                0
            }
    };
    let transformer = |c: u64, h: u64, w: u64| {
        let n = h * w;
        let self_attn = 4 * mm(b * n, c, c) + mm(b * n, n, 2 * c);
        let cross_attn =
            2 * mm(b * n, c, c) + 2 * mm(b * tokens, context, c) + mm(b * n, tokens, 2 * c);
        let ff = mm(b * n, c, 8 * c) + mm(b * n, 4 * c, c);
        2 * mm(b * n, c, c) + self_attn + cross_attn + ff
    };
    let crossattn = |t: &Value| t.as_str().unwrap().starts_with("CrossAttn");
    let down_types = config["down_block_types"].as_array().unwrap();
    let up_types = config["up_block_types"].as_array().unwrap();
    let levels = channels.len();

    let mut total = mm(b, channels[0], temb)
        + mm(b, temb, temb)
        + conv(num("in_channels"), channels[0], 3, h, w);
    let (mut hh, mut ww) = (h, w);
    let mut prev = channels[0];
    for (i, &c) in channels.iter().enumerate() {
        for j in 0..layers {
            total += resnet(if j == 0 { prev } else { c }, c, hh, ww);
            if crossattn(&down_types[i]) {
                total += transformer(c, hh, ww);
            }
        }
        prev = c;
        if i + 1 < levels {
            (hh, ww) = (hh.div_ceil(2), ww.div_ceil(2));
            total += conv(c, c, 3, hh, ww);
        }
    }
    let last = channels[levels - 1];
    total += 2 * resnet(last, last, hh, ww) + transformer(last, hh, ww);
    let reversed: Vec<u64> = channels.iter().rev().copied().collect();
    let mut prev_out = reversed[0];
    // The resolutions of the down levels, lowest first, for the up blocks to climb.
    let mut sizes = vec![(h, w)];
    for _ in 1..levels {
        let &(a, c) = sizes.last().unwrap();
        sizes.push((a.div_ceil(2), c.div_ceil(2)));
    }
    for (i, &out) in reversed.iter().enumerate() {
        let (uh, uw) = sizes[levels - 1 - i];
        let input = reversed[(i + 1).min(levels - 1)];
        for j in 0..=layers {
            let skip = if j == layers { input } else { out };
            let res_in = if j == 0 { prev_out } else { out };
            total += resnet(res_in + skip, out, uh, uw);
            if crossattn(&up_types[i]) {
                total += transformer(out, uh, uw);
            }
        }
        prev_out = out;
        if i + 1 < levels {
            let (nh, nw) = sizes[levels - 2 - i];
            total += conv(out, out, 3, nh, nw);
        }
    }
    total + conv(channels[0], num("out_channels"), 3, h, w)
}

#[test]
fn counted_unet_flops_equal_the_per_layer_count_from_the_config() {
    let json = std::fs::read_to_string(fixture_dir().join("unet/config.json")).unwrap();
    let config: Value = serde_json::from_str(&json).unwrap();
    let device = device::cpu().0;
    let unet = UNet2DConditionConfig::from_json(&json)
        .unwrap()
        .init(usize::MAX, &device)
        .unwrap();
    let context = config["cross_attention_dim"].as_u64().unwrap() as usize;
    for (b, h, w) in [(1, 8, 8), (2, 8, 8), (1, 12, 16)] {
        let sample = Tensor::<4>::random([b, 4, h, w], Distribution::Default, &device);
        let ehs = Tensor::<3>::random([b, 77, context], Distribution::Default, &device);
        let (out, counted) = work::count(|| unet.forward(sample, &[500.0], ehs, &[]));
        assert_eq!(out.noise_pred.dims(), [b, 4, h, w]);
        let expected = unet_flops(&config, b as u64, h as u64, w as u64, 77);
        assert_eq!(counted, expected, "batch {b}, latent {h}×{w}");
    }
    // A pass counts nothing when no count runs, and an outer count includes it.
    let sample = Tensor::<4>::random([1, 4, 8, 8], Distribution::Default, &device);
    let ehs = Tensor::<3>::random([1, 77, context], Distribution::Default, &device);
    let ((), outer) = work::count(|| {
        unet.forward(sample, &[500.0], ehs, &[]);
    });
    assert_eq!(outer, unet_flops(&config, 1, 8, 8, 77));
}
