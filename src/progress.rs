//! Progress events and cancellation shared by every long phase of an edit. The browser worker
//! forwards events to the page; the CLI draws progress bars. Cancellation is a flag checked
//! between steps (never inside a GPU dispatch), so a cancelled phase stops within one step and
//! leaves loaded weights intact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::{Error, Result};

/// One progress event. `step` counts from 1 and is reported when that step has finished on the
/// device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "phase",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Progress {
    /// LoRA fine-tuning step finished, with its training loss.
    Lora { step: usize, of: usize, loss: f32 },
    /// DDIM inversion step finished.
    Invert { step: usize, of: usize },
    /// Reference trajectory step finished (the unedited denoising the drag compares against).
    Reference { step: usize, of: usize },
    /// One motion-supervision step finished at drag timestep `timestep` (1-based of `of`).
    /// `handles` are the handles it pulled, in image `[x, y]` pixels.
    Drag {
        timestep: usize,
        of: usize,
        step: usize,
        loss: f32,
        drag_loss: f32,
        handles: Vec<[f64; 2]>,
    },
    /// Handles re-located by point tracking (image `[x, y]` pixels).
    Tracked { handles: Vec<[f64; 2]> },
    /// A drag timestep ended: a cheap preview of the predicted clean image (latent resolution).
    Preview {
        timestep: usize,
        width: usize,
        height: usize,
        rgb: Vec<u8>,
    },
    /// The drag phase stopped before its last timestep: `reached` or `early-stop`.
    DragStopped { reason: StopReason },
    /// Denoising step finished.
    Denoise { step: usize, of: usize },
    /// VAE decode finished.
    Decode,
}

/// Why the drag phase ended. Serialised as `completed`, `reached`, `early-stop` — the one
/// spelling of the CLI's JSON, `timings.json`, the worker's result and progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// All `drag_end_step` timesteps were used.
    Completed,
    /// Every handle is within reach of its target.
    Reached,
    /// `max_track_no_change` trackings in a row moved no handle.
    EarlyStop,
}

/// A cloneable cancellation flag: one side calls [`cancel`](Self::cancel), the running phase
/// calls [`check`](Self::check) between steps.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Clears the flag for the next run.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Error::Cancelled)` once cancellation was requested.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}
