//! Fused attention on the wgpu device: `softmax(q·kᵀ·scale [+ causal mask])·v` and its gradients
//! without the score matrix ever existing (FlashAttention's online softmax and its
//! recomputing backward; Dao et al. 2022, Alg. 1–2; docs/ARCHITECTURE.md §3, "Fused
//! attention").
//!
//! At 512×512 the UNet's first self-attentions have 8 heads over 4096 tokens: the chunked path
//! ([`crate::models::attention`]) writes and reads 512 MiB of f32 scores per call in chunks, and
//! under autodiff keeps every chunk's probabilities for the backward pass. Here
//! - the forward runs one invocation per query row: it streams the row's keys and values once,
//!   keeps a running maximum, sum and output in f32 registers, and writes the output and the
//!   row's log-sum-exp (4 bytes per row, kept for the backward);
//! - the backward recomputes each probability from the log-sum-exp: one pass per query row for
//!   `dq` and one per key row for `dk` and `dv` (no atomics), after a pre-pass that forms
//!   `δᵢ = Σ dOᵢ ⊙ Oᵢ`. A gradient nobody asks for is not computed (the drag's cross-attention
//!   keys and values come from the prompt: only `dq`).
//!
//! Inputs may be f32 or f16 (f16 compute); every sum, the softmax and the log-sum-exp are f32,
//! as in FlashAttention and PyTorch's fused kernels; outputs and gradients have the inputs'
//! dtype. The tensors keep the models' `[b, tokens, heads·d]` layout: a head is a column range,
//! so no split/merge copies are made. One invocation per row keeps the kernels short and free of
//! shared memory (WebGPU's 16 KiB workgroup limit); tiling K/V through shared memory is the next
//! step for speed. At most 7 storage buffers per kernel (WebGPU guarantees 8, cubecl keeps one):
//! the backward passes the log-sum-exp and δ as one `[rows, 2]` tensor.
//!
//! [`attention`] returns `None` — the caller takes the chunked path — on the CPU device, when the
//! inputs' backends or autodiff contexts differ, for head sizes above [`MAX_HEAD_DIM`] (the VAE's
//! single 512-wide head would spill every register; its 4096² scores fit the chunked path), with
//! burn's `fusion` feature (its primitives are not cubecl tensors), and inside
//! [`chunked_only`] (benchmarks and tests comparing the two).

use std::cell::Cell;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::{Autodiff, Cube, DispatchKindConversion, DispatchTensor};
use burn::tensor::{DType, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cube::{
    attention_backward_dkdv_kernel, attention_backward_dq_kernel, attention_backward_stats_kernel,
    attention_forward_kernel,
};
use cubecl::calculate_cube_count_elemwise;
use cubecl::client::Client;
use cubecl::prelude::{CubeCount, CubeDim};

/// Largest head size (`d` and `d_v`) the fused kernels take: SD 1.5's heads are 40, 80 and 160
/// wide, CLIP's 64; each invocation holds a few rows of this many f32 values in registers.
pub const MAX_HEAD_DIM: usize = 256;

thread_local! {
    static CHUNKED_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// While the returned guard lives, [`attention`] declines on this thread, so every attention
/// takes the chunked path (benchmarks measure both; tests compare them).
pub fn chunked_only() -> ChunkedOnly {
    ChunkedOnly(CHUNKED_ONLY.with(|c| c.replace(true)))
}

/// Restores the previous choice when dropped (see [`chunked_only`]).
#[must_use = "the fused kernels are back on once the guard is dropped"]
pub struct ChunkedOnly(bool);

/// How attention runs on a device (reported by the benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AttentionKernel {
    /// The fused kernels of this module (heads up to [`MAX_HEAD_DIM`]).
    Fused,
    /// Chunks with materialised scores (`models::attention`).
    Chunked,
}

impl AttentionKernel {
    /// Whether [`attention`] takes heads of `head_dim` channels on `device` now (so no score
    /// matrix exists to be sized or kept).
    pub fn fuses(device: &burn::tensor::Device, head_dim: usize) -> bool {
        Self::on(device) == Self::Fused && head_dim <= MAX_HEAD_DIM
    }

    /// What [`attention`] does on `device` on this thread now: fused on a GPU device unless
    /// switched off (burn's `fusion` feature, [`chunked_only`]), chunked on the CPU device.
    pub fn on(device: &burn::tensor::Device) -> Self {
        if cfg!(feature = "fusion")
            || CHUNKED_ONLY.with(Cell::get)
            || crate::device::is_cpu_device(device)
        {
            Self::Chunked
        } else {
            Self::Fused
        }
    }
}

impl Drop for ChunkedOnly {
    fn drop(&mut self) {
        CHUNKED_ONLY.with(|c| c.set(self.0));
    }
}

/// The problem one launch solves.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    heads: usize,
    /// Query tokens.
    n: usize,
    /// Key/value tokens.
    m: usize,
    /// Query/key head size.
    d: usize,
    /// Value head size.
    dv: usize,
    scale: f32,
    causal: bool,
}

impl Geometry {
    fn query_rows(&self) -> usize {
        self.batch * self.heads * self.n
    }

    fn key_rows(&self) -> usize {
        self.batch * self.heads * self.m
    }
}

/// `softmax(q·kᵀ·scale [+ causal mask])·v` per head by the fused kernels, or `None` where they
/// do not apply (see the module docs; the caller then computes it in chunks).
///
/// q: `[b, n, heads·d]`, k: `[b, m, heads·d]`, v: `[b, m, heads·d_v]` → `[b, n, heads·d_v]`;
/// `causal` masks key `j > i` for query `i` (n = m). Differentiable on autodiff devices.
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    scale: f64,
    causal: bool,
) -> Option<Tensor<3>> {
    if cfg!(feature = "fusion") || CHUNKED_ONLY.with(Cell::get) {
        return None;
    }
    let ([b, n, inner], [bk, m, inner_k], [bv, mv, inner_v]) = (q.dims(), k.dims(), v.dims());
    let usable = heads > 0
        && inner.is_multiple_of(heads)
        && inner_v.is_multiple_of(heads)
        && inner == inner_k
        && (b, m) == (bk, mv)
        && b == bv
        && n > 0
        && m > 0
        && (!causal || n == m)
        && q.dtype() == k.dtype()
        && q.dtype() == v.dtype()
        && matches!(q.dtype(), DType::F32 | DType::F16);
    let geometry = Geometry {
        batch: b,
        heads,
        n,
        m,
        d: inner / heads.max(1),
        dv: inner_v / heads.max(1),
        scale: scale as f32,
        causal,
    };
    if !usable || geometry.d > MAX_HEAD_DIM || geometry.dv > MAX_HEAD_DIM {
        return None;
    }
    if let (Ok(qp), Ok(kp), Ok(vp)) = (
        q.clone().try_into_primitive::<Cube>(),
        k.clone().try_into_primitive::<Cube>(),
        v.clone().try_into_primitive::<Cube>(),
    ) {
        let (out, _) = forward(qp, kp, vp, geometry);
        return Some(Tensor::from_primitive::<Cube>(out));
    }
    on_autodiff::<BalancedCheckpointing>(&q, &k, &v, geometry)
        .or_else(|| on_autodiff::<NoCheckpointing>(&q, &k, &v, geometry))
}

/// The fused forward recorded as one autodiff operation on `Autodiff<Cube, C>` (all three
/// inputs in that context), with [`FusedAttentionBackward`] as its backward.
fn on_autodiff<C: CheckpointStrategy>(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    geometry: Geometry,
) -> Option<Tensor<3>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Cube, C>>,
{
    let q = q.clone().try_into_primitive::<Autodiff<Cube, C>>().ok()?;
    let k = k.clone().try_into_primitive::<Autodiff<Cube, C>>().ok()?;
    let v = v.clone().try_into_primitive::<Autodiff<Cube, C>>().ok()?;
    let needs = Needs {
        dq: q.is_tracked(),
        dkv: k.is_tracked() || v.is_tracked(),
    };
    let output = match FusedAttentionBackward
        .prepare::<C>([q.node(), k.node(), v.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (
                prep.checkpoint(&q),
                prep.checkpoint(&k),
                prep.checkpoint(&v),
            );
            let (out, lse) = forward(
                q.into_primitive(),
                k.into_primitive(),
                v.into_primitive(),
                geometry,
            );
            let saved = Saved {
                q: state.0,
                k: state.1,
                v: state.2,
                out: out.clone(),
                lse,
                geometry,
                needs,
            };
            prep.finish(saved, out)
        }
        OpsKind::UnTracked(prep) => {
            let (out, _) = forward(
                q.into_primitive(),
                k.into_primitive(),
                v.into_primitive(),
                geometry,
            );
            prep.finish(out)
        }
    };
    Some(Tensor::from_primitive::<Autodiff<Cube, C>>(output))
}

/// Which gradients the backward computes.
#[derive(Debug, Clone, Copy)]
struct Needs {
    dq: bool,
    dkv: bool,
}

/// What the forward keeps for the backward: the inputs (by node), the output and the rows'
/// log-sum-exp — no probabilities.
#[derive(Debug, Clone)]
struct Saved {
    q: NodeId,
    k: NodeId,
    v: NodeId,
    out: CubeTensor,
    lse: CubeTensor,
    geometry: Geometry,
    needs: Needs,
}

/// The fused attention's backward (FlashAttention-2's, without atomics).
#[derive(Debug)]
struct FusedAttentionBackward;

impl Backward<Cube, 3> for FusedAttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let saved = ops.state;
        let [parent_q, parent_k, parent_v] = ops.parents;
        let d_out: CubeTensor = grads.consume::<Cube>(&ops.node);
        let q: CubeTensor = checkpointer.retrieve_node_output(saved.q);
        let k: CubeTensor = checkpointer.retrieve_node_output(saved.k);
        let v: CubeTensor = checkpointer.retrieve_node_output(saved.v);
        let needs = Needs {
            dq: saved.needs.dq && parent_q.is_some(),
            dkv: saved.needs.dkv && (parent_k.is_some() || parent_v.is_some()),
        };
        let (dq, dk, dv) = backward(q, k, v, saved.out, saved.lse, d_out, saved.geometry, needs);
        for (parent, grad) in [(parent_q, dq), (parent_k, dk), (parent_v, dv)] {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<Cube>(node.id, grad);
            }
        }
    }
}

/// Launch size for one invocation per row.
fn grid(client: &Client, rows: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(client, rows);
    (calculate_cube_count_elemwise(client, rows, dim), dim)
}

/// Output `[b, n, heads·d_v]` and log-sum-exp `[b·heads·n]` (f32).
fn forward(q: CubeTensor, k: CubeTensor, v: CubeTensor, g: Geometry) -> (CubeTensor, CubeTensor) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let (client, device, dtype) = (q.client.clone(), q.device.clone(), q.dtype);
    let out = empty_device_contiguous_dtype(
        client.clone(),
        device.clone(),
        Shape::new([g.batch, g.n, g.heads * g.dv]),
        dtype,
    );
    let lse = empty_device_contiguous_dtype(
        client.clone(),
        device,
        Shape::new([g.query_rows()]),
        DType::F32,
    );
    let (count, dim) = grid(&client, g.query_rows());
    attention_forward_kernel::launch(
        &client,
        count,
        dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        g.heads as u32,
        g.n as u32,
        g.m as u32,
        g.scale,
        g.d,
        g.dv,
        g.causal,
        dtype_to_storage_type(dtype),
    );
    (out, lse)
}

/// `(dq, dk, dv)` in the inputs' dtype, each `None` when not asked for.
#[allow(clippy::too_many_arguments)]
fn backward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    out: CubeTensor,
    lse: CubeTensor,
    d_out: CubeTensor,
    g: Geometry,
    needs: Needs,
) -> (Option<CubeTensor>, Option<CubeTensor>, Option<CubeTensor>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let d_out = into_contiguous(d_out);
    let (client, device, dtype) = (q.client.clone(), q.device.clone(), q.dtype);
    let empty = |shape: Shape, dtype: DType| {
        empty_device_contiguous_dtype(client.clone(), device.clone(), shape, dtype)
    };
    let storage = dtype_to_storage_type(dtype);

    // Pre-pass: stats[r] = (lse_r, δ_r).
    let stats = empty(Shape::new([g.query_rows(), 2]), DType::F32);
    let (count, dim) = grid(&client, g.query_rows());
    attention_backward_stats_kernel::launch(
        &client,
        count,
        dim,
        out.into_tensor_arg(),
        d_out.clone().into_tensor_arg(),
        lse.into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        g.heads as u32,
        g.n as u32,
        g.dv,
        storage,
    );

    let dq = needs.dq.then(|| {
        let dq = empty(Shape::new([g.batch, g.n, g.heads * g.d]), dtype);
        let (count, dim) = grid(&client, g.query_rows());
        attention_backward_dq_kernel::launch(
            &client,
            count,
            dim,
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            d_out.clone().into_tensor_arg(),
            stats.clone().into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            g.heads as u32,
            g.n as u32,
            g.m as u32,
            g.scale,
            g.d,
            g.dv,
            g.causal,
            storage,
        );
        dq
    });

    let (dk, dv) = if needs.dkv {
        let dk = empty(Shape::new([g.batch, g.m, g.heads * g.d]), dtype);
        let dv = empty(Shape::new([g.batch, g.m, g.heads * g.dv]), dtype);
        let (count, dim) = grid(&client, g.key_rows());
        attention_backward_dkdv_kernel::launch(
            &client,
            count,
            dim,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            d_out.into_tensor_arg(),
            stats.into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            g.heads as u32,
            g.n as u32,
            g.m as u32,
            g.scale,
            g.d,
            g.dv,
            g.causal,
            storage,
        );
        (Some(dk), Some(dv))
    } else {
        (None, None)
    };
    (dq, dk, dv)
}

/// The kernels (cubecl's `Tensor` is not burn's: they live apart).
mod cube {
    use cubecl::prelude::*;

    /// Where row `i` of head `bh % heads` in batch `bh / heads` starts in a
    /// `[batch, rows, heads·width]` tensor (`bh` = batch·heads + head).
    #[cube]
    fn head_row(bh: usize, i: usize, rows: usize, heads: usize, #[comptime] width: usize) -> usize {
        ((bh / heads) * rows + i) * (heads * width) + (bh % heads) * width
    }

    /// `len` values of `src` from `off`, in f32, times `scale`.
    #[cube]
    fn load_row<E: Float>(
        src: &Tensor<E>,
        off: usize,
        scale: f32,
        #[comptime] len: usize,
    ) -> Array<f32> {
        let mut row = Array::<f32>::new(len);
        for t in 0..len {
            row[t] = f32::cast_from(src[off + t]) * scale;
        }
        row
    }

    /// `len` zeros.
    #[cube]
    fn zero_row(#[comptime] len: usize) -> Array<f32> {
        let mut row = Array::<f32>::new(len);
        for t in 0..len {
            row[t] = f32::new(0.0);
        }
        row
    }

    /// `Σ_t a[t] · src[off + t]` in f32.
    #[cube]
    fn dot_row<E: Float>(
        a: &Array<f32>,
        src: &Tensor<E>,
        off: usize,
        #[comptime] len: usize,
    ) -> f32 {
        let mut s = f32::new(0.0);
        for t in 0..len {
            s += a[t] * f32::cast_from(src[off + t]);
        }
        s
    }

    /// `dst[off + t] = a[t] · scale` in `dst`'s dtype.
    #[cube]
    fn store_row<E: Float>(
        dst: &mut Tensor<E>,
        off: usize,
        a: &Array<f32>,
        scale: f32,
        #[comptime] len: usize,
    ) {
        for t in 0..len {
            dst[off + t] = E::cast_from(a[t] * scale);
        }
    }

    /// One invocation per query row `r = (batch·heads + head)·n + i`: online softmax over the
    /// row's keys, output and log-sum-exp.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_forward_kernel<E: Float>(
        q: &Tensor<E>,
        k: &Tensor<E>,
        v: &Tensor<E>,
        out: &mut Tensor<E>,
        lse: &mut Tensor<f32>,
        heads: u32,
        n: u32,
        m: u32,
        scale: f32,
        #[comptime] d: usize,
        #[comptime] dv: usize,
        #[comptime] causal: bool,
        #[define(E)] _dtype: ElemType,
    ) {
        let row = ABSOLUTE_POS;
        if row >= lse.len() {
            terminate!();
        }
        let heads = heads as usize;
        let n = n as usize;
        let m = m as usize;
        let i = row % n;
        let bh = row / n;

        let qi = load_row(q, head_row(bh, i, n, heads, d), scale, d);
        let mut acc = zero_row(dv);
        // Below every score (WGSL has no −∞ literal; exp of anything this far below is 0).
        let mut running_max = f32::new(-3.0e38);
        let mut sum = f32::new(0.0);
        let mut end = m;
        if causal {
            end = i + 1;
        }
        for j in 0..end {
            let s = dot_row(&qi, k, head_row(bh, j, m, heads, d), d);
            let new_max = max(running_max, s);
            let rescale = (running_max - new_max).exp();
            let p = (s - new_max).exp();
            sum = sum * rescale + p;
            let v_off = head_row(bh, j, m, heads, dv);
            for t in 0..dv {
                acc[t] = acc[t] * rescale + p * f32::cast_from(v[v_off + t]);
            }
            running_max = new_max;
        }
        store_row(
            out,
            head_row(bh, i, n, heads, dv),
            &acc,
            f32::new(1.0) / sum,
            dv,
        );
        lse[row] = running_max + sum.ln();
    }

    /// One invocation per query row: `stats[r] = (lse_r, δ_r = Σ dO_r ⊙ O_r)`.
    #[cube(launch)]
    pub(super) fn attention_backward_stats_kernel<E: Float>(
        out: &Tensor<E>,
        d_out: &Tensor<E>,
        lse: &Tensor<f32>,
        stats: &mut Tensor<f32>,
        heads: u32,
        n: u32,
        #[comptime] dv: usize,
        #[define(E)] _dtype: ElemType,
    ) {
        let row = ABSOLUTE_POS;
        if row >= lse.len() {
            terminate!();
        }
        let n = n as usize;
        let off = head_row(row / n, row % n, n, heads as usize, dv);
        let mut delta = f32::new(0.0);
        for t in 0..dv {
            delta += f32::cast_from(d_out[off + t]) * f32::cast_from(out[off + t]);
        }
        stats[2 * row] = lse[row];
        stats[2 * row + 1] = delta;
    }

    /// One invocation per query row: `dq_i = scale · Σ_j p_ij (dO_i·v_j − δ_i) k_j`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_backward_dq_kernel<E: Float>(
        q: &Tensor<E>,
        k: &Tensor<E>,
        v: &Tensor<E>,
        d_out: &Tensor<E>,
        stats: &Tensor<f32>,
        dq: &mut Tensor<E>,
        heads: u32,
        n: u32,
        m: u32,
        scale: f32,
        #[comptime] d: usize,
        #[comptime] dv: usize,
        #[comptime] causal: bool,
        #[define(E)] _dtype: ElemType,
    ) {
        let row = ABSOLUTE_POS;
        if row >= stats.shape(0) {
            terminate!();
        }
        let heads = heads as usize;
        let n = n as usize;
        let m = m as usize;
        let i = row % n;
        let bh = row / n;
        let q_off = head_row(bh, i, n, heads, d);
        let lse = stats[2 * row];
        let delta = stats[2 * row + 1];

        let qi = load_row(q, q_off, scale, d);
        let doi = load_row(d_out, head_row(bh, i, n, heads, dv), f32::new(1.0), dv);
        let mut acc = zero_row(d);
        let mut end = m;
        if causal {
            end = i + 1;
        }
        for j in 0..end {
            let k_off = head_row(bh, j, m, heads, d);
            let p = (dot_row(&qi, k, k_off, d) - lse).exp();
            let dp = dot_row(&doi, v, head_row(bh, j, m, heads, dv), dv);
            let ds = p * (dp - delta);
            for t in 0..d {
                acc[t] += ds * f32::cast_from(k[k_off + t]);
            }
        }
        store_row(dq, q_off, &acc, scale, d);
    }

    /// One invocation per key row `(batch·heads + head)·m + j`:
    /// `dv_j = Σ_i p_ij dO_i`, `dk_j = scale · Σ_i p_ij (dO_i·v_j − δ_i) q_i`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_backward_dkdv_kernel<E: Float>(
        q: &Tensor<E>,
        k: &Tensor<E>,
        v: &Tensor<E>,
        d_out: &Tensor<E>,
        stats: &Tensor<f32>,
        dk: &mut Tensor<E>,
        dv_out: &mut Tensor<E>,
        heads: u32,
        n: u32,
        m: u32,
        scale: f32,
        #[comptime] d: usize,
        #[comptime] dv: usize,
        #[comptime] causal: bool,
        #[define(E)] _dtype: ElemType,
    ) {
        let heads = heads as usize;
        let n = n as usize;
        let m = m as usize;
        let key_row = ABSOLUTE_POS;
        if key_row >= stats.shape(0) / n * m {
            terminate!();
        }
        let j = key_row % m;
        let bh = key_row / m;
        let k_off = head_row(bh, j, m, heads, d);
        let v_off = head_row(bh, j, m, heads, dv);

        let kj = load_row(k, k_off, scale, d);
        let vj = load_row(v, v_off, f32::new(1.0), dv);
        let mut dk_acc = zero_row(d);
        let mut dv_acc = zero_row(dv);
        // Causal: only queries i ≥ j see key j.
        let mut start = j;
        if !causal {
            start = 0usize;
        }
        for i in start..n {
            let row = bh * n + i;
            let q_off = head_row(bh, i, n, heads, d);
            let o_off = head_row(bh, i, n, heads, dv);
            let p = (dot_row(&kj, q, q_off, d) - stats[2 * row]).exp();
            let mut dp = f32::new(0.0);
            for t in 0..dv {
                let g = f32::cast_from(d_out[o_off + t]);
                dp += g * vj[t];
                dv_acc[t] += p * g;
            }
            let ds = p * (dp - stats[2 * row + 1]);
            for t in 0..d {
                dk_acc[t] += ds * f32::cast_from(q[q_off + t]);
            }
        }
        store_row(dk, k_off, &dk_acc, scale, d);
        store_row(dv_out, v_off, &dv_acc, f32::new(1.0), dv);
    }
}
