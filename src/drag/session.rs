//! The AlDD loop as a resumable state machine (GoodDrag §3.2, Algorithm 1;
//! docs/ALGORITHM.md §1.11–§1.16): reference trajectory, alternating motion supervision and
//! DDIM steps with point tracking and both stop rules, then Latent-MasaCtrl denoising.
//! See the [`drag`](super) module docs for the stages.

use burn::tensor::Tensor;

use super::config::DragConfig;
use super::features::FeatureGeometry;
use super::mask::LatentMask;
use super::motion::{MotionInputs, motion_supervision_loss};
use super::points::{Frame, Point, PointPairs};
use super::{preview, tracking};
use crate::progress::StopReason;

use crate::error::{Error, Result};
use crate::exec::recompute::Recorded;
use crate::kernels::precision::Precision;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::optim::{Adam, AdamConfig};
use crate::pipeline::sync;
use crate::progress::{Cancel, Progress};
use crate::schedulers::DdimScheduler;
use crate::tensor_io::read_f32;

/// What the unedited trajectory gives one drag timestep.
struct ReferenceStep {
    /// z⁰ₜ₋₁.
    z_prev: Tensor<4>,
    /// Reference patch `[C, 2r₁+1, 2r₁+1]` at each original handle.
    patches: Vec<Tensor<3>>,
    /// Reference feature `[C]` at each original handle (tracking).
    vectors: Vec<Tensor<1>>,
}

/// State of the drag at the current timestep.
struct DragTimestep {
    adam: Adam<4>,
    first: bool,
    track_num: usize,
    cur: usize,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Reference,
    Main,
    Done,
}

/// Everything a finished session reports besides the latent.
#[derive(Debug, Clone)]
pub struct DragRecord {
    /// Loss of every supervision step (drag + mask term).
    pub losses: Vec<f32>,
    /// Drag term of every supervision step.
    pub drag_losses: Vec<f32>,
    /// Handles (feature `[row, col]`) after each tracking; the first entry is the initial
    /// handles.
    pub handle_history: Vec<Vec<Point>>,
    /// Timestep indices (into the edit's timesteps) at which dragging happened.
    pub drag_timesteps: Vec<usize>,
    /// Why the drag phase ended (`None` while it runs).
    pub stop: Option<StopReason>,
    /// The latent right after the drag phase (before the first MasaCtrl step).
    pub z_drag_end: Option<Tensor<4>>,
}

/// A resumable GoodDrag run over an inverted latent (see the module docs).
pub struct DragSession {
    config: DragConfig,
    scheduler: DdimScheduler,
    frame: Frame,
    geometry: Option<FeatureGeometry>,
    timesteps: Vec<usize>,
    ehs: Tensor<3>,
    keep: Option<Tensor<4>>,
    handles: Vec<Point>,
    handles_init: Vec<Point>,
    targets: Vec<Point>,
    references: Vec<ReferenceStep>,
    z: Tensor<4>,
    z_ref: Tensor<4>,
    index: usize,
    stage: Stage,
    do_drag: bool,
    no_change: usize,
    masactrl_on: bool,
    current: Option<DragTimestep>,
    /// The drag at `index` is over; its (non-MasaCtrl) denoising step is next.
    dragged_here: bool,
    ms_steps: usize,
    record: DragRecord,
}

impl DragSession {
    /// A session starting from the inverted latent `z_t` (`[1, 4, h, w]`) at `timesteps[0]`.
    /// `timesteps` are the edit's DDIM timesteps (descending); encoder_hidden_states `[1, 77, d]`.
    // The eight are the edit's independent inputs (settings, schedule, geometry, mask, latent,
    // prompt); a struct bundling them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: DragConfig,
        scheduler: DdimScheduler,
        frame: Frame,
        pairs: PointPairs,
        mask: LatentMask,
        z_t: Tensor<4>,
        timesteps: Vec<usize>,
        encoder_hidden_states: Tensor<3>,
    ) -> Result<Self> {
        config.validate()?;
        if timesteps.is_empty() {
            return Err(Error::InvalidInput("the edit has no timesteps".into()));
        }
        let drag_steps = config.drag_end_step.min(timesteps.len());
        let record = DragRecord {
            losses: Vec::new(),
            drag_losses: Vec::new(),
            handle_history: vec![pairs.handles.clone()],
            drag_timesteps: Vec::new(),
            stop: None,
            z_drag_end: None,
        };
        Ok(Self {
            scheduler,
            frame,
            geometry: None,
            timesteps,
            ehs: encoder_hidden_states,
            keep: mask.keep,
            handles_init: pairs.handles.clone(),
            handles: pairs.handles,
            targets: pairs.targets,
            references: Vec::with_capacity(drag_steps),
            z_ref: z_t.clone(),
            z: z_t,
            index: 0,
            stage: if drag_steps == 0 {
                Stage::Main
            } else {
                Stage::Reference
            },
            do_drag: drag_steps > 0,
            no_change: 0,
            masactrl_on: false,
            current: None,
            dragged_here: false,
            ms_steps: 0,
            record,
            config,
        })
    }

    /// Whether the run has finished.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Current handles in feature `[row, col]`.
    pub fn handles(&self) -> &[Point] {
        &self.handles
    }

    /// Current handles in image `[x, y]` pixels.
    pub fn handles_image(&self) -> Vec<[f64; 2]> {
        self.handles
            .iter()
            .map(|&p| self.frame.to_image(p))
            .collect()
    }

    /// The current edited latent (the final latent once done).
    pub fn latent(&self) -> &Tensor<4> {
        &self.z
    }

    /// What has been recorded so far.
    pub fn record(&self) -> &DragRecord {
        &self.record
    }

    /// Runs to the end, checking `cancel` between units. A cancelled session can be resumed.
    pub async fn run(
        &mut self,
        unet: &mut UNet2DConditionModel,
        progress: &mut dyn FnMut(Progress),
        cancel: &Cancel,
    ) -> Result<()> {
        while !self.is_done() {
            cancel.check()?;
            self.advance(unet, progress).await?;
        }
        Ok(())
    }

    fn drag_steps(&self) -> usize {
        self.config.drag_end_step.min(self.timesteps.len())
    }

    fn geometry_for(&mut self, feat: &Tensor<4>) -> FeatureGeometry {
        *self.geometry.get_or_insert_with(|| {
            let [_, _, h, w] = feat.dims();
            FeatureGeometry {
                map_height: h,
                map_width: w,
                feat_height: self.frame.feat_height,
                feat_width: self.frame.feat_width,
            }
        })
    }

    /// UNet pass with the feature tap. Returns (ε, features). It runs the same forward as
    /// the supervision steps ([`UNet2DConditionModel::record`], no autodiff), so the reference
    /// branch and the edited branch round alike: at the first supervision step the mask
    /// term is exactly zero, as in the reference implementation.
    fn forward_features(
        &self,
        unet: &UNet2DConditionModel,
        z: Tensor<4>,
        t: usize,
    ) -> Result<(Tensor<4>, Tensor<4>)> {
        let recorded = self.record_forward(unet, z, t)?;
        let features = recorded
            .features
            .expect("record returns the tapped features");
        Ok((recorded.noise_pred, features))
    }

    /// The forward of a supervision step, layer inputs kept for the backward.
    fn record_forward(
        &self,
        unet: &UNet2DConditionModel,
        z: Tensor<4>,
        t: usize,
    ) -> Result<Recorded> {
        unet.record(
            z,
            &[t as f32],
            self.ehs.clone(),
            Some(self.config.feature_up_block),
        )
    }

    /// One unit of work; returns `true` once the run is done.
    pub async fn advance(
        &mut self,
        unet: &mut UNet2DConditionModel,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<bool> {
        match self.stage {
            Stage::Reference => {
                // PARITY: the official reference trajectory runs before accelerate's autocast
                // wrap: in f32 whatever the drag's precision.
                let precision = std::mem::replace(&mut unet.precision, Precision::F32);
                let step = self.reference_step(unet, progress).await;
                unet.precision = precision;
                step?
            }
            Stage::Main => {
                let i = self.index;
                let drag_here = i < self.drag_steps()
                    && self.do_drag
                    && self.no_change != self.config.max_track_no_change;
                if self.dragged_here {
                    self.denoise_step(unet, progress).await?;
                } else if self.current.is_some() || drag_here {
                    self.drag_unit(unet, progress).await?;
                } else {
                    if self.record.z_drag_end.is_none() {
                        self.record.z_drag_end = Some(self.z.clone());
                        if self.record.stop.is_none() {
                            // A drag timestep left undragged before the last one: the idle
                            // limit was reached exactly at the previous timestep's last
                            // tracking (the loop guard, as in the official code).
                            let reason = if i < self.drag_steps() {
                                StopReason::EarlyStop
                            } else {
                                StopReason::Completed
                            };
                            self.record.stop = Some(reason);
                            if reason != StopReason::Completed {
                                progress(Progress::DragStopped { reason });
                            }
                        }
                    }
                    // docs/ALGORITHM.md §1.16: MasaCtrl from the first timestep without dragging on.
                    if self.config.masactrl {
                        self.masactrl_on = true;
                    }
                    self.denoise_step(unet, progress).await?;
                }
            }
            Stage::Done => {}
        }
        Ok(self.is_done())
    }

    /// Stage 1: one step of the unedited trajectory (docs/ALGORITHM.md §1.11).
    async fn reference_step(
        &mut self,
        unet: &mut UNet2DConditionModel,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        unet.set_mutual_self_attention(None);
        let k = self.references.len();
        let t = self.timesteps[k];
        let z = self.z_ref.clone().detach();
        let (eps, feat) = self.forward_features(unet, z.clone(), t)?;
        let feat = feat.detach();
        let g = self.geometry_for(&feat);
        let r1 = self.config.r1;
        let patches = self
            .handles_init
            .iter()
            .map(|&p| g.integer_patch(&feat, p, r1))
            .collect();
        let vectors = self
            .handles_init
            .iter()
            .map(|&p| g.vector(&feat, p))
            .collect();
        let z_prev = self.scheduler.step(eps.detach(), t, z);
        sync(&z_prev).await?;
        self.z_ref = z_prev.clone();
        self.references.push(ReferenceStep {
            z_prev,
            patches,
            vectors,
        });
        progress(Progress::Reference {
            step: k + 1,
            of: self.drag_steps(),
        });
        if self.references.len() == self.drag_steps() {
            // The edited and reference branches both restart from z_T.
            self.z_ref = self.z.clone();
            self.stage = Stage::Main;
        }
        Ok(())
    }

    async fn track_now(
        &mut self,
        feat: &Tensor<4>,
        geometry: FeatureGeometry,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let refs = &self.references[self.index].vectors;
        self.handles = tracking::track(feat, geometry, refs, &self.handles, self.config.r2).await?;
        self.record.handle_history.push(self.handles.clone());
        progress(Progress::Tracked {
            handles: self.handles_image(),
        });
        Ok(())
    }

    fn all_reached(&self) -> bool {
        self.handles.iter().zip(&self.targets).all(|(p, q)| {
            let (dr, dc) = (q[0] - p[0], q[1] - p[1]);
            (dr * dr + dc * dc).sqrt() < self.config.reach_distance
        })
    }

    /// Stage 2: one motion-supervision step at the current drag timestep (docs/ALGORITHM.md §1.15,
    /// `gooddrag_step`), or the stop that ends the drag phase.
    async fn drag_unit(
        &mut self,
        unet: &mut UNet2DConditionModel,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        unet.set_mutual_self_attention(None);
        let i = self.index;
        let t = self.timesteps[i];
        if self.current.is_none() {
            // A fresh Adam at every drag timestep (docs/ALGORITHM.md §1.13).
            self.current = Some(DragTimestep {
                adam: Adam::new(AdamConfig::adam(self.config.latent_lr)),
                first: true,
                track_num: 0,
                cur: 0,
            });
            self.record.drag_timesteps.push(i);
        }
        // 1. Stop rules (docs/ALGORITHM.md §1.15). The reference checks them after the next forward; they
        //    read only the handles, which change only at trackings, so checking before the
        //    forward gives the same decision and saves a UNet pass. At the start of a
        //    timestep the check follows the first tracking, which needs the forward.
        let first = self.current.as_ref().is_some_and(|c| c.first);
        if !first && self.stop_if_done(progress) {
            return Ok(());
        }
        // 2. Forward, keeping each layer's input for the backward by recomputation
        //    (memory: one layer's graph at a time instead of the whole UNet's).
        let recorded = self.record_forward(unet, self.z.clone(), t)?;
        let feat = recorded
            .features
            .clone()
            .expect("record returns the tapped features");
        let g = self.geometry_for(&feat);
        // 3. Track at the start of the timestep, on this timestep's features.
        if first {
            self.track_now(&feat, g, progress).await?;
            if let Some(c) = self.current.as_mut() {
                c.first = false;
            }
            if self.stop_if_done(progress) {
                return Ok(());
            }
        }
        // 4. Loss, backward (gradient to the latent only), Adam.
        let reference = &self.references[i];
        let settings = self.config.motion_settings();
        let mut drag_value = None;
        let fb = unet.backward(
            recorded,
            &mut |x| {
                let z_prev = self
                    .scheduler
                    .step(x.noise_pred.clone(), t, x.sample.clone());
                let features = x.features.as_ref().expect("tapped features");
                let loss = motion_supervision_loss(
                    &MotionInputs {
                        features,
                        geometry: g,
                        z_prev,
                        reference_prev: &reference.z_prev,
                        keep: self.keep.as_ref(),
                        reference_patches: self
                            .config
                            .information_preserving
                            .then_some(&reference.patches[..]),
                        handles: &self.handles,
                        targets: &self.targets,
                    },
                    &settings,
                );
                drag_value = loss.drag.map(|d| d.detach());
                // Nothing to pull and no mask term: the loss is constant and its gradient zero
                // (PyTorch's Adam then leaves the latent unchanged but still counts the step).
                Ok(loss.total)
            },
            &mut |_| {},
        )?;
        let loss_total = fb.loss;
        // With f16 compute, whether the latent's gradient is finite rides on the same readback.
        let grad_check =
            (unet.precision == Precision::F16).then(|| fb.sample_grad.clone().inner().abs().sum());
        let grad = Some(fb.sample_grad);
        let current = self.current.as_mut().expect("drag timestep state");
        self.z = current
            .adam
            .step(vec![self.z.clone()], vec![grad])
            .remove(0);
        // One readback for all numbers (each is a device round trip in the browser).
        let drag_value = drag_value.unwrap_or_else(|| loss_total.zeros_like());
        let mut read = vec![loss_total.inner(), drag_value.inner()];
        read.extend(grad_check);
        let values = read_f32(Tensor::cat(read, 0)).await?;
        let (total, drag) = (values[0], values[1]);
        if !total.is_finite() {
            return Err(Error::Readback(format!(
                "the drag loss became {total} at timestep {t}"
            )));
        }
        if let Some(g) = values.get(2).filter(|g| !g.is_finite()) {
            return Err(Error::Readback(format!(
                "the latent's f16 gradient overflowed ({g}) at timestep {t}; edit with f32 \
                 compute"
            )));
        }
        self.ms_steps += 1;
        self.record.losses.push(total);
        self.record.drag_losses.push(drag);
        progress(Progress::Drag {
            timestep: i + 1,
            of: self.drag_steps(),
            step: self.ms_steps,
            loss: total,
            drag_loss: drag,
            handles: self.handles_image(),
        });
        // 5. After J steps (or when every point was skipped), a drag operation ends: track.
        let r1 = self.config.r1 as f64;
        let current = self.current.as_mut().expect("drag timestep state");
        current.cur += 1;
        let threshold = self.config.drag_loss_threshold * (2.0 * r1) * (2.0 * r1);
        if current.cur == self.config.max_drag_per_track
            || (drag as f64) <= threshold
            || self.config.once_drag
        {
            current.track_num += 1;
            current.cur = 0;
            let done = current.track_num >= self.config.track_per_denoise;
            let old = self.handles.clone();
            // PARITY: tracks on the features of this step's forward, i.e. before its Adam step.
            self.track_now(&feat, g, progress).await?;
            self.no_change = if self.handles == old {
                self.no_change + 1
            } else {
                0
            };
            if done {
                self.finish_drag_timestep();
            }
        }
        Ok(())
    }

    /// Applies the stop rules; `true` when the drag phase ended here.
    fn stop_if_done(&mut self, progress: &mut dyn FnMut(Progress)) -> bool {
        let reason = if self.all_reached() {
            StopReason::Reached
        } else if self.no_change == self.config.max_track_no_change {
            StopReason::EarlyStop
        } else {
            return false;
        };
        self.do_drag = false;
        self.record.stop = Some(reason);
        progress(Progress::DragStopped { reason });
        self.finish_drag_timestep();
        true
    }

    /// The drag at the current timestep is over; its denoising step comes next.
    fn finish_drag_timestep(&mut self) {
        self.current = None;
        self.dragged_here = true;
    }

    /// One DDIM step of the edited latent (and of the reference branch): batch
    /// `[reference, edited]` with mutual self-attention once MasaCtrl is on (docs/ALGORITHM.md §1.15–1.16),
    /// else the edited latent alone with the reference taken from the precomputed trajectory.
    async fn denoise_step(
        &mut self,
        unet: &mut UNet2DConditionModel,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let i = self.index;
        let t = self.timesteps[i];
        let z = self.z.clone().detach();
        let eps = if self.masactrl_on {
            unet.set_mutual_self_attention(Some(self.config.masactrl_start_layer));
            let batch = Tensor::cat(vec![self.z_ref.clone().detach(), z.clone()], 0);
            let ehs = Tensor::cat(vec![self.ehs.clone(), self.ehs.clone()], 0);
            let eps = unet
                .forward(batch, &[t as f32], ehs, &[])
                .noise_pred
                .detach();
            unet.set_mutual_self_attention(None);
            let [_, c, h, w] = eps.dims();
            let eps_ref = eps.clone().narrow(0, 0, 1);
            let eps_edit = eps.narrow(0, 1, 1);
            debug_assert_eq!(eps_edit.dims(), [1, c, h, w]);
            self.z_ref = self.scheduler.step(eps_ref, t, self.z_ref.clone().detach());
            eps_edit
        } else {
            unet.set_mutual_self_attention(None);
            let eps = unet
                .forward(z.clone(), &[t as f32], self.ehs.clone(), &[])
                .noise_pred
                .detach();
            if let Some(r) = self.references.get(i) {
                self.z_ref = r.z_prev.clone();
            }
            eps
        };
        let dragged = self.dragged_here;
        if dragged {
            // A cheap preview of where this timestep's drag leads: x̂₀ of the edited latent.
            let a = self.scheduler.alphas_cumprod()[t];
            let x0 = (z.clone() - eps.clone().mul_scalar((1.0 - a).sqrt())).div_scalar(a.sqrt());
            let [_, _, h, w] = x0.dims();
            let values = read_f32(x0).await?;
            let p = preview::latent_preview(&values, w, h);
            progress(Progress::Preview {
                timestep: i + 1,
                width: p.width,
                height: p.height,
                rgb: p.rgb,
            });
        }
        self.z = self.scheduler.step(eps, t, z);
        sync(&self.z).await?;
        self.dragged_here = false;
        self.index += 1;
        progress(Progress::Denoise {
            step: i + 1,
            of: self.timesteps.len(),
        });
        if self.index == self.timesteps.len() {
            if self.record.z_drag_end.is_none() {
                self.record.z_drag_end = Some(self.z.clone());
                self.record.stop.get_or_insert(StopReason::Completed);
            }
            self.stage = Stage::Done;
            unet.set_mutual_self_attention(None);
        }
        Ok(())
    }
}
