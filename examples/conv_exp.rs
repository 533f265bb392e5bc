use burn::tensor::module;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;

fn im2col_conv(x: Tensor<4>, w: Tensor<4>) -> Tensor<4> {
    let [b, c, h, wd] = x.dims();
    let [co, _, _, _] = w.dims();
    let xp = x.pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
    let mut taps = Vec::new();
    for ky in 0..3 {
        for kx in 0..3 {
            taps.push(xp.clone().narrow(2, ky, h).narrow(3, kx, wd));
        }
    }
    let cols = Tensor::cat(taps, 1).reshape([b, 9 * c, h * wd]);
    let wm = w.permute([0, 2, 3, 1]).reshape([1, co, 9 * c]);
    wm.matmul(cols).reshape([b, co, h, wd])
}

fn tap_conv(x: Tensor<4>, w: Tensor<4>) -> Tensor<4> {
    let [b, c, h, wd] = x.dims();
    let [co, _, _, _] = w.dims();
    let xp = x.pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
    let mut acc: Option<Tensor<3>> = None;
    for ky in 0..3 {
        for kx in 0..3 {
            let xs = xp
                .clone()
                .narrow(2, ky, h)
                .narrow(3, kx, wd)
                .reshape([b, c, h * wd]);
            let wk = w
                .clone()
                .narrow(2, ky, 1)
                .narrow(3, kx, 1)
                .reshape([1, co, c]);
            let y = wk.matmul(xs);
            acc = Some(match acc {
                None => y,
                Some(a) => a + y,
            });
        }
    }
    acc.unwrap().reshape([b, co, h, wd])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (device, _) = if args.get(1).map(|s| s.as_str()) == Some("cpu") {
        gooddrag::device::cpu()
    } else {
        gooddrag::device::wgpu().unwrap()
    };
    for &(c, s) in &[(320usize, 16usize), (640, 8), (320, 32), (1280, 8)] {
        let x = Tensor::<4>::random([1, c, s, s], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([c, c, 3, 3], Distribution::Normal(0.0, 0.05), &device);
        let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let direct = |x: Tensor<4>, w: Tensor<4>| module::conv2d(x, w, None, opts.clone());
        let a = direct(x.clone(), w.clone());
        let b2 = im2col_conv(x.clone(), w.clone());
        let c2 = tap_conv(x.clone(), w.clone());
        let e1 = (a.clone() - b2).abs().max().into_scalar::<f32>();
        let e2 = (a - c2).abs().max().into_scalar::<f32>();
        println!("c{c} s{s}: err im2col {e1:.2e} taps {e2:.2e}");
        for (name, f) in [
            (
                "direct",
                &direct as &dyn Fn(Tensor<4>, Tensor<4>) -> Tensor<4>,
            ),
            ("im2col", &im2col_conv),
            ("taps", &tap_conv),
        ] {
            let _ = f(x.clone(), w.clone()).sum().into_scalar::<f32>();
            let t = Instant::now();
            let n = 3;
            for _ in 0..n {
                let _ = f(x.clone(), w.clone()).sum().into_scalar::<f32>();
            }
            println!(
                "  {name:8} {:8.1} ms",
                t.elapsed().as_secs_f64() * 1e3 / n as f64
            );
        }
    }
}
