//! The GoodDrag editing core: Alternating Drag and Denoising (AlDD, GoodDrag §3.2 / Alg. 1),
//! information-preserving motion supervision (§3.3, Eq. 6), point tracking and Latent-MasaCtrl,
//! exactly as the official code runs them (docs/ALGORITHM.md §1.11–§1.16). The AlDD loop itself
//! is [`session`]; the other modules are its parts (loss, tracking, features, mask, points).
//!
//! [`DragSession`] is a resumable state machine over the inverted latent z_T:
//!
//! 1. reference trajectory: denoise z_T without edits through the drag timesteps, keeping only
//!    what the loss and the tracking read — z⁰ₜ₋₁, the reference patch at each original handle
//!    and the feature vector there — instead of full 640×H/2×W/2 maps (identical results);
//! 2. AlDD: at each of the first `drag_end_step` timesteps, a fresh Adam on the latent runs
//!    up to B drag operations of J motion-supervision steps, tracking once at the start of the
//!    timestep and after every operation, then one DDIM step; both stop rules (all handles
//!    within reach; `max_track_no_change` idle trackings) end the drag phase for good;
//! 3. Latent-MasaCtrl: every remaining step denoises `[reference, edited]` as a batch whose
//!    self-attention in transformer blocks ≥ 10 takes K/V from the reference branch.
//!
//! Each [`advance`](DragSession::advance) does one unit of work (one UNet pass, or one
//! supervision step) and reports it, so a run can be cancelled between any two units and
//! resumed by calling `advance` again. Gradients flow only into the latent: the UNet's weights
//! must not require gradients (call `Module::no_grad` after LoRA training).

pub mod config;
pub mod features;
pub mod mask;
pub mod motion;
pub mod points;
pub mod preview;
pub mod session;
pub mod tracking;

pub use crate::progress::StopReason;
pub use config::{DragConfig, PRESETS};
pub use mask::LatentMask;
pub use motion::PatchWeight;
pub use points::{Frame, Point, PointPairs, PointsFile};
pub use session::{DragRecord, DragSession};
