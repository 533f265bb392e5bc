//! The GoodDrag editing core on the tiny SD 1.5-shaped model (tests/fixtures/tiny-sd): the AlDD
//! schedule and its stop rules, the mask term, presets, determinism, odd image sizes, and the
//! motion-supervision gradient against finite differences.

mod parity_support;

use burn::tensor::{Device, Tensor, TensorData};
use gooddrag::device;
use gooddrag::drag::features::FeatureGeometry;
use gooddrag::drag::motion::{MotionInputs, MotionSettings, motion_supervision_loss};
use gooddrag::drag::{DragConfig, PRESETS, PatchWeight, StopReason};
use gooddrag::edit::{EditInput, EditOutput, LoraChoice, Models, RgbImage, run_edit};
use gooddrag::probe::{deterministic_values, read_f32};
use gooddrag::progress::{Cancel, Progress};
use parity_support::fixture_dir;

fn models(device: &Device) -> Models {
    Models::load_dir(&fixture_dir(), None, device, u64::MAX).expect("tiny model loads")
}

/// A smooth test photo: a bright disc on a gradient.
fn photo(width: usize, height: usize) -> RgbImage {
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let (cx, cy) = (width as f64 * 0.4, height as f64 * 0.5);
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
            let disc = if d < width.min(height) as f64 * 0.2 {
                200.0
            } else {
                0.0
            };
            rgb.push((40.0 + disc + 50.0 * x as f64 / width as f64) as u8);
            rgb.push((60.0 + disc * 0.5) as u8);
            rgb.push((90.0 + 80.0 * y as f64 / height as f64) as u8);
        }
    }
    RgbImage { width, height, rgb }
}

fn full_mask(width: usize, height: usize) -> Vec<u8> {
    let mut m = vec![0u8; width * height];
    for y in height / 4..3 * height / 4 {
        for x in width / 8..7 * width / 8 {
            m[y * width + x] = 255;
        }
    }
    m
}

fn edit(
    models: &mut Models,
    config: DragConfig,
    image: RgbImage,
    mask: Option<Vec<u8>>,
    points: Vec<[f64; 2]>,
) -> (EditOutput, Vec<Progress>) {
    let mut events = Vec::new();
    let out = pollster::block_on(run_edit(
        models,
        EditInput {
            image,
            mask,
            points,
            config,
            lora: LoraChoice::None,
        },
        &mut |p| events.push(p),
        &Cancel::new(),
    ))
    .expect("edit runs");
    (out, events)
}

fn no_lora(mut c: DragConfig) -> DragConfig {
    c.use_lora = false;
    c
}

#[test]
fn aldd_visits_timesteps_741_to_621_with_the_stated_counts() {
    let device = device::cpu().0;
    let mut m = models(&device);
    // Neither stop rule can fire: no reach distance, no idle-tracking limit.
    let config = DragConfig {
        max_track_no_change: 1000,
        reach_distance: 0.0,
        ..no_lora(DragConfig::default())
    };
    let (out, events) = edit(
        &mut m,
        config,
        photo(64, 64),
        Some(full_mask(64, 64)),
        vec![[20.0, 30.0], [56.0, 30.0]],
    );
    let r = &out.record;
    // 7 drag timesteps (741, 721, …, 621) × 10 operations × 3 supervision steps.
    assert_eq!(
        r.drag_timesteps,
        (0..7).collect::<Vec<_>>(),
        "stop: {:?}",
        r.stop
    );
    assert_eq!(r.losses.len(), 210);
    // One tracking at the start of each timestep plus one per operation, after the initial entry.
    assert_eq!(r.handle_history.len(), 1 + 7 * 11);
    assert_eq!(r.stop, Some(StopReason::Completed));
    let count = |f: fn(&Progress) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(count(|e| matches!(e, Progress::Reference { .. })), 7);
    assert_eq!(count(|e| matches!(e, Progress::Invert { .. })), 38);
    assert_eq!(count(|e| matches!(e, Progress::Denoise { .. })), 38);
    assert_eq!(count(|e| matches!(e, Progress::Preview { .. })), 7);
    assert_eq!(count(|e| matches!(e, Progress::Drag { .. })), 210);
    assert!(r.losses.iter().all(|l| l.is_finite()));
}
