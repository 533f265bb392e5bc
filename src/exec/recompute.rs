//! Forward + backward through the UNet by layer-wise recomputation (gradient checkpointing at
//! the granularity of one resnet, transformer, resampler), for the two gradient passes of
//! GoodDrag: LoRA fine-tuning (gradients to the adapters, §3.1) and motion supervision
//! (gradient to the latent, §3.3).
//!
//! A plain autodiff backward keeps every activation of the forward until the backward ends —
//! 13 GiB at 512×512 in f32, 8.5 GiB with burn's balanced checkpointing, far over what a
//! browser tab gets. Here the forward runs without autodiff (on the module's `valid()` twin)
//! and keeps only each layer's input (the `x` between layers,
//! about 70 tensors of ≤ 5 MiB at 64×64 latent); the backward walks the layers in reverse,
//! recomputes one layer with autodiff from its saved input, and pulls the upstream gradient
//! through it (`Σ out · g_out`), so at most one layer's graph is alive at a time. The skip
//! connections of the UNet are bookkept by index: an up resnet's gradient for the skip it
//! consumed is added to the gradient of the layer output that produced it.
//!
//! The UNet's [`BackwardPlan`](crate::models::unet_2d_condition::BackwardPlan) trades that memory
//! back for work where the device has it: the layers it keeps run with autodiff already in the
//! recorded forward (from leaves, so each graph stays separate) and their graphs wait for the
//! backward, which then only pulls the gradient through them. `recompute` keeps none (one more
//! UNet forward per backward), `recompute-top` keeps every layer below the latent's full
//! resolution (the full-resolution level, with the self-attention over h·w tokens, is
//! recomputed), `autodiff` keeps all (no extra forward).
//!
//! With f16 compute ([`Precision::F16`]) the layer inputs, graphs and the gradients between
//! layers are f16; the loss and its leaves stay f32. The gradient entering the UNet is scaled by
//! (about) a power of two that brings its largest element to [1, 2) (computed on the device, no
//! readback), so the f16 gradients between layers neither underflow (a drag loss's gradient per
//! feature is ~1e-5, near f16's smallest normal 6e-5) nor, with 2¹⁵ of headroom, overflow; the
//! latent's gradient is unscaled in f32, and parameter gradients carry the scale
//! ([`ForwardBackward::grad_scale`]). PyTorch's GradScaler plays this part in the official code
//! with a fixed 2¹⁶ that it halves after an overflow, skipping that step; a scale from the
//! gradient itself needs no skipped steps.
//!
//! Both this forward and the plain one walk the UNet's single layer description,
//! [`UNet2DConditionModel::layer_sequence`]. The maths is the same as
//! [`UNet2DConditionModel::forward`] followed by `backward`; only
//! the summation order of gradients that meet at a skip differs (f32 rounding).

use burn::module::Module;
use burn::tensor::{Gradients, Tensor};

use crate::kernels::flash_attention::AttentionKernel;
use crate::kernels::precision::{self, Precision};
use crate::models::unet_2d_blocks::Transformer2DModel;
use crate::models::unet_2d_condition::{LayerStep, Stage, UNet2DConditionModel, UNetLayer};
use crate::{Error, Result};

/// A layer as run: its saved input, the skip it consumed, whether its output is pushed as a
/// skip, whether its output is the tapped feature map, and its graph when the plan keeps it.
struct Step {
    layer: UNetLayer,
    input: Tensor<4>,
    consumed_skip: Option<usize>,
    upsample_size: Option<[usize; 2]>,
    pushes_skip: Option<usize>,
    tapped: bool,
    kept: Option<Kept>,
}

/// A layer run with autodiff during the recorded forward
/// ([`BackwardPlan`](crate::models::unet_2d_condition::BackwardPlan)): its output with
/// the graph behind it, back to leaves for its input and the skip it consumed.
struct Kept {
    output: Tensor<4>,
    input: Tensor<4>,
    skip: Option<Tensor<4>>,
}

/// Runs a layer with autodiff when the plan keeps its graph: `(step, input, consumed skip,
/// upsample size)` → the kept graph, or `None` to run it plainly.
type KeepLayer<'a> =
    dyn FnMut(&LayerStep, &Tensor<4>, Option<&Tensor<4>>, Option<[usize; 2]>) -> Option<Kept> + 'a;

/// The leaves a loss is computed from: each requires grad and is detached from the UNet.
pub struct LossInputs {
    /// The UNet input.
    pub sample: Tensor<4>,
    /// The noise prediction.
    pub noise_pred: Tensor<4>,
    /// The tapped up-block output, when a tap was asked for.
    pub features: Option<Tensor<4>>,
}

/// A forward pass that kept each layer's input, ready for [`UNet2DConditionModel::backward`].
pub struct Recorded {
    steps: Vec<Step>,
    sample: Tensor<4>,
    emb: Tensor<2>,
    encoder_hidden_states: Tensor<3>,
    /// The noise prediction (detached).
    pub noise_pred: Tensor<4>,
    /// The output of the tapped up block (detached).
    pub features: Option<Tensor<4>>,
}

/// What [`UNet2DConditionModel::backward`] returns.
pub struct ForwardBackward {
    /// The loss value (detached).
    pub loss: Tensor<1>,
    /// The noise prediction (detached).
    pub noise_pred: Tensor<4>,
    /// The tapped features (detached).
    pub features: Option<Tensor<4>>,
    /// ∂loss/∂sample in f32 (zeros when the loss does not depend on it).
    pub sample_grad: Tensor<4>,
    /// `[1]`: the factor on the parameter gradients `on_grads` saw for the recomputed layers
    /// (they are those of `grad_scale · loss`; divide by it). 1 with f32 compute.
    pub grad_scale: Tensor<1>,
}

impl UNet2DConditionModel {
    /// The forward pass layer by layer without autodiff (`self` should be the
    /// [`valid`](Module::valid) twin, `sample`, `emb`, `ehs` plain tensors), so no graph is
    /// recorded even when LoRA weights require grad — except for the layers `keep` runs itself
    /// (with autodiff, returning the plain output and the graph). Returns the steps (inputs
    /// saved as plain tensors), the noise prediction and the tapped features.
    fn forward_steps(
        &self,
        sample: Tensor<4>,
        emb: &Tensor<2>,
        ehs: &Tensor<3>,
        tap: Option<usize>,
        keep: &mut KeepLayer<'_>,
    ) -> (Vec<Step>, Tensor<4>, Option<Tensor<4>>) {
        let mut kept: Vec<Option<Kept>> = Vec::new();
        let mut apply = |index: usize,
                         step: &LayerStep,
                         x: Tensor<4>,
                         skip: Option<Tensor<4>>,
                         size: Option<[usize; 2]>| {
            if kept.len() <= index {
                kept.resize_with(index + 1, || None);
            }
            match keep(step, &x, skip.as_ref(), size) {
                Some(k) => {
                    let out = k.output.clone().inner();
                    kept[index] = Some(k);
                    out
                }
                None => self.apply_layer(step.layer, x, skip, size, emb, ehs),
            }
        };
        let mut steps: Vec<Step> = Vec::new();
        let mut features = None;
        let noise_pred = self.walk_with(sample, emb, ehs, &mut apply, &mut |visit| {
            let tapped = tap.is_some_and(|i| visit.step.ends_block == Some((Stage::Up, i)));
            if tapped {
                features = Some(visit.output.clone());
            }
            steps.push(Step {
                layer: visit.step.layer,
                input: visit.input,
                consumed_skip: visit.consumed_skip,
                upsample_size: visit.upsample_size,
                pushes_skip: visit.step.pushes_skip.then_some(visit.index),
                tapped,
                kept: None,
            });
        });
        for (step, k) in steps.iter_mut().zip(kept) {
            step.kept = k;
        }
        (steps, noise_pred, features)
    }

    /// The forward pass, keeping each layer's input for [`backward`](Self::backward); the
    /// same outputs as [`forward`](Self::forward) with `taps = [tap]`. `sample` is detached.
    pub fn record(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        encoder_hidden_states: Tensor<3>,
        tap: Option<usize>,
    ) -> Result<Recorded> {
        if let Some(i) = tap
            && i >= self.up_blocks.len()
        {
            return Err(Error::InvalidInput(format!(
                "the UNet has no up block {i} to read features from"
            )));
        }
        let sample = sample.detach();
        let [b, _, _, _] = sample.dims();
        let emb = self.time_emb(timesteps, b, &sample.device()).detach();
        let encoder_hidden_states = self.in_compute_dtype(encoder_hidden_states).detach();
        // The forward without autodiff: nothing of it is kept but the layer inputs, and the
        // graphs of the layers the plan keeps (run here on the autodiff model from leaves).
        let plain = self.valid();
        let plan = self.backward_plan;
        let [_, _, latent_height, _] = sample.dims();
        let mut keep = |step: &LayerStep,
                        x: &Tensor<4>,
                        skip: Option<&Tensor<4>>,
                        size: Option<[usize; 2]>|
         -> Option<Kept> {
            let [_, _, height, _] = x.dims();
            if !plan.keeps(height, latent_height) {
                return None;
            }
            let input = on_device_of(x.clone(), &sample).require_grad();
            let skip = skip.map(|s| on_device_of(s.clone(), &sample).require_grad());
            let output = self.apply_layer(
                step.layer,
                input.clone(),
                skip.clone(),
                size,
                &emb,
                &encoder_hidden_states,
            );
            Some(Kept {
                output,
                input,
                skip,
            })
        };
        let (steps, noise_pred, features) = plain.forward_steps(
            self.in_compute_dtype(sample.clone()).inner(),
            &emb.clone().inner(),
            &encoder_hidden_states.clone().inner(),
            tap,
            &mut keep,
        );
        let noise_pred = on_device_of(precision::to_f32(noise_pred), &sample);
        let features = features.map(|f| on_device_of(precision::to_f32(f), &sample));
        Ok(Recorded {
            steps,
            sample,
            emb,
            encoder_hidden_states,
            noise_pred,
            features,
        })
    }

    /// [`record`](Self::record) then [`backward`](Self::backward).
    pub fn forward_backward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        encoder_hidden_states: Tensor<3>,
        tap: Option<usize>,
        loss: &mut dyn FnMut(&LossInputs) -> Result<Tensor<1>>,
        on_grads: &mut dyn FnMut(&Gradients),
    ) -> Result<ForwardBackward> {
        let recorded = self.record(sample, timesteps, encoder_hidden_states, tap)?;
        self.backward(recorded, loss, on_grads)
    }

    /// The loss on a recorded forward, and its backward by layer-wise recomputation (see the
    /// module docs).
    ///
    /// `loss` gets leaves for the sample, the noise prediction and (with a tap) the output of
    /// the tapped up block, and returns a scalar. `on_grads` sees the gradients of the loss and
    /// of every recomputed layer (to collect LoRA weight gradients: a weight's gradient arrives
    /// once per layer it is used in, so sum them). Peak memory: the saved layer inputs plus
    /// one layer's graph.
    pub fn backward(
        &self,
        recorded: Recorded,
        loss: &mut dyn FnMut(&LossInputs) -> Result<Tensor<1>>,
        on_grads: &mut dyn FnMut(&Gradients),
    ) -> Result<ForwardBackward> {
        let Recorded {
            steps,
            sample,
            emb,
            encoder_hidden_states,
            noise_pred,
            features,
        } = recorded;
        // The loss on leaves.
        let inputs = LossInputs {
            sample: sample.clone().require_grad(),
            noise_pred: noise_pred.clone().require_grad(),
            features: features.clone().map(Tensor::require_grad),
        };
        let value = loss(&inputs)?;
        if !value.is_tracked() {
            // The loss does not depend on the UNet or the sample (e.g. no point left to drag
            // and no mask term): every gradient is zero.
            return Ok(ForwardBackward {
                loss: value.detach(),
                sample_grad: sample.zeros_like(),
                grad_scale: unit_scale(&sample).inner(),
                noise_pred,
                features,
            });
        }
        let grads = value.backward();
        on_grads(&grads);
        let direct = inputs.sample.grad(&grads);
        let g_pred = inputs.noise_pred.grad(&grads);
        let g_features = inputs.features.as_ref().and_then(|f| f.grad(&grads));
        drop(grads);
        // Into the layers' dtype, scaled (f16) so the largest element is in [1, 2).
        let grad_scale = match self.precision {
            Precision::F32 => None,
            Precision::F16 => power_of_two_scale(g_pred.iter().chain(&g_features)),
        }
        .unwrap_or_else(|| unit_scale(&sample).inner());
        let into_layers = |g: Tensor<4>| match self.precision {
            Precision::F32 => g,
            Precision::F16 => self.in_compute_dtype(g * grad_scale.clone().unsqueeze::<4>()),
        };
        let mut g_x = g_pred.map(into_layers);
        let g_features = g_features.map(into_layers);

        // The layers in reverse.
        let mut g_skips: Vec<Option<Tensor<4>>> = vec![None; steps.len()];
        let add = |a: Option<Tensor<4>>, b: Option<Tensor<4>>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        let add3 = |a: Option<Tensor<3>>, b: Option<Tensor<3>>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        let mut steps = steps;
        for index in (0..steps.len()).rev() {
            let mut g_out = g_x.take();
            if steps[index].tapped {
                g_out = add(g_out, g_features.clone());
            }
            if let Some(k) = steps[index].pushes_skip {
                g_out = add(g_out, g_skips[k].take());
            }
            let Some(g_out) = g_out else {
                // Nothing downstream depends on this layer's output.
                continue;
            };
            let consumed_skip = steps[index].consumed_skip;
            if steps[index].kept.is_none()
                && let Some(transformer) = self.transformer(steps[index].layer)
                && let Some(bands) = attention_bands(transformer, steps[index].input.dims())
            {
                // A transformer whose self-attention scores are large: pulled through band
                // by band, one band's graph alive at a time. The keys and values over all
                // tokens are computed once; the bands take them as leaves, and their summed
                // gradients go back through the keys' and values' graph at the end.
                let input = on_device_of(steps[index].input.clone(), &sample).require_grad();
                let (k, v) = transformer
                    .self_attention_kv(input.clone())
                    .expect("attention_bands checked the transformer can be banded");
                let (k_leaf, v_leaf) = (
                    k.clone().detach().require_grad(),
                    v.clone().detach().require_grad(),
                );
                let (mut g_in, mut g_k, mut g_v) = (None, None, None);
                for band in bands {
                    let out = transformer
                        .forward_rows(
                            input.clone(),
                            &encoder_hidden_states,
                            band,
                            (k_leaf.clone(), v_leaf.clone()),
                        )
                        .expect("attention_bands checked the transformer can be banded");
                    let g_band = g_out.clone().narrow(2, band.0, band.1);
                    let grads = (out * g_band).sum().backward();
                    on_grads(&grads);
                    g_in = add(g_in, input.grad(&grads));
                    g_k = add3(g_k, k_leaf.grad(&grads));
                    g_v = add3(g_v, v_leaf.grad(&grads));
                }
                if let (Some(g_k), Some(g_v)) = (g_k, g_v) {
                    let grads = (k * g_k + v * g_v).sum().backward();
                    on_grads(&grads);
                    g_in = add(g_in, input.grad(&grads));
                }
                g_x = g_in;
                continue;
            }
            let (out, input, skip_value) = match steps[index].kept.take() {
                // The plan kept this layer's graph: no recomputation.
                Some(k) => (k.output, k.input, k.skip),
                None => {
                    let step = &steps[index];
                    let input = on_device_of(step.input.clone(), &sample).require_grad();
                    let skip_value = consumed_skip.map(|k| {
                        // The consumed skip is the input of the step after the one that
                        // produced it.
                        on_device_of(steps[k + 1].input.clone(), &sample).require_grad()
                    });
                    let out = self.apply_layer(
                        step.layer,
                        input.clone(),
                        skip_value.clone(),
                        step.upsample_size,
                        &emb,
                        &encoder_hidden_states,
                    );
                    (out, input, skip_value)
                }
            };
            let grads = (out * g_out).sum().backward();
            on_grads(&grads);
            g_x = input.grad(&grads);
            if let (Some(k), Some(s)) = (consumed_skip, &skip_value) {
                g_skips[k] = add(g_skips[k].take(), s.grad(&grads));
            }
        }
        let g_x = g_x.map(|g| match self.precision {
            Precision::F32 => g,
            Precision::F16 => precision::to_f32(g) / grad_scale.clone().unsqueeze::<4>(),
        });
        let sample_grad = add(g_x, direct).unwrap_or_else(|| sample.zeros_like());
        Ok(ForwardBackward {
            loss: value.detach(),
            noise_pred,
            features,
            sample_grad,
            grad_scale,
        })
    }
}

/// The row bands `(y0, rows)` a recomputed transformer's backward is split into, so that one
/// band's self-attention scores (f32, for the softmax) fit [`BAND_SCORE_SHARE`] of the attention
/// chunk budget: `None` when all of them do, when the fused attention kernels run (they keep
/// no scores: the transformer is recomputed whole), or when the transformer cannot be banded
/// (see [`Transformer2DModel::forward_rows`]). At 512×512 the first level's 4,096-token
/// self-attention has 512 MiB of scores: 16 bands of 4 rows. The keys and values are computed
/// once for all bands; each band recomputes only GroupNorm's statistics (a few kernels).
fn attention_bands(
    t: &Transformer2DModel,
    [b, _, h, w]: [usize; 4],
) -> Option<Vec<(usize, usize)>> {
    let attn = &t.bandable_block()?.attn1;
    let [_, inner] = attn.to_q.weight.dims();
    if AttentionKernel::fuses(&attn.to_q.weight.device(), inner / attn.heads.max(1)) {
        return None;
    }
    let row_bytes = b * attn.heads * w * (h * w) * std::mem::size_of::<f32>();
    let rows = (attn.max_bytes / BAND_SCORE_SHARE / row_bytes.max(1)).max(1);
    if rows >= h {
        return None;
    }
    Some(
        (0..h)
            .step_by(rows)
            .map(|y0| (y0, rows.min(h - y0)))
            .collect(),
    )
}

/// A band's attention scores get this fraction of the attention chunk budget: a band's graph
/// holds its scores several times over (f16 scores, the f32 softmax and its output, f16
/// probabilities), so a quarter keeps it near one chunk.
const BAND_SCORE_SHARE: usize = 4;

/// `[1]` = 1 on `like`'s device (plain).
fn unit_scale(like: &Tensor<4>) -> Tensor<1> {
    Tensor::ones([1], &like.device())
}

/// `[1]`: `2^−⌊log₂ max|g|⌋` over all of `grads` (f32, detached), which brings their largest
/// element into [1, 2); kept within 2^±100 so an all-zero gradient gives a finite scale.
/// Computed on the device (no readback) as `exp(−k·ln 2)`, so it is a power of two to within
/// an f32 rounding — immaterial: the same value scales and unscales, and the cast to f16
/// rounds far more. `None` without gradients (a
/// loss on the sample alone sends nothing into the UNet).
fn power_of_two_scale<'a>(grads: impl Iterator<Item = &'a Tensor<4>>) -> Option<Tensor<1>> {
    let max = grads
        .map(|g| g.clone().detach().abs().max().reshape([1]))
        .reduce(|a, b| a.max_pair(b))?;
    let ln2 = std::f64::consts::LN_2;
    let exponent = (max.clamp(2f64.powi(-100), 2f64.powi(100)).log() / ln2).floor();
    Some((exponent * -ln2).exp())
}

/// A plain tensor back on the autodiff device of `like` (same gradient-checkpointing strategy,
/// which operations require of their operands).
fn on_device_of<const D: usize>(t: Tensor<D>, like: &Tensor<4>) -> Tensor<D> {
    let t = t.autodiff();
    match like.gradient_checkpointing_strategy() {
        Some(strategy) => t.with_gradient_checkpointing_strategy(strategy),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn scale_of(values: &[&[f32]]) -> Option<f32> {
        let device = Device::flex();
        let grads: Vec<Tensor<4>> = values
            .iter()
            .map(|v| Tensor::from_data(TensorData::new(v.to_vec(), [1, 1, 1, v.len()]), &device))
            .collect();
        power_of_two_scale(grads.iter()).map(|s| s.into_data().try_to_vec::<f32>().unwrap()[0])
    }

    #[test]
    fn gradient_scale_brings_the_largest_element_into_one_to_two() {
        let near = |a: Option<f32>, b: f32| (a.unwrap() / b - 1.0).abs() < 1e-6;
        assert!(near(scale_of(&[&[3.0, -1.0]]), 0.5));
        assert!(near(scale_of(&[&[0.25], &[-1.5e-5, 1e-6]]), 4.0));
        // A drag loss's typical gradient (~1e-5, below f16's smallest normal) lands in [1, 2).
        let s = scale_of(&[&[1e-5, -2e-6]]);
        assert!(near(s, 131_072.0), "{s:?}");
        assert!((1.0..2.0).contains(&(1e-5 * s.unwrap())));
        // All zeros: a finite scale (2^100), so 0·scale stays 0.
        let zero = scale_of(&[&[0.0, 0.0]]).unwrap();
        assert!(zero.is_finite() && zero > 1e29, "{zero}");
        assert_eq!(scale_of(&[]), None);
    }
}
