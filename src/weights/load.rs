//! Weights into modules: tensors from a safetensors file (whole, or one planned chunk at a
//! time) are matched to the model's parameters by key and uploaded tensor by tensor.
//!
//! The model structs follow diffusers' weight keys, so matching is a walk over the module
//! tree. The few differences between burn's modules and the PyTorch layout, and the legacy key
//! names, live here and only here:
//!
//! * burn `Linear` weights are `[in, out]`, PyTorch's `[out, in]`: transposed on the host.
//!   A `[out, in, 1, 1]` tensor (legacy VAE attention stored as 1×1 convolutions) is accepted.
//! * burn `GroupNorm`/`LayerNorm` name their affine parameters `gamma`/`beta`: key
//!   `weight`/`bias`.
//! * enum variants (e.g. the UNet transformer's `proj_in`, a 1×1 convolution or a Linear) are
//!   not part of the key.
//! * a `Vec` of parameters named `weight` inside a [`SplitEmbedding`](crate::models::clip::SplitEmbedding)
//!   is one tensor in the file, split by rows.
//! * renames per component ([`canonical_key`]): VAE attention `query`/`key`/`value`/`proj_attn`
//!   (diffusers < 0.14) → `to_q`/`to_k`/`to_v`/`to_out.0`; CLIP keys without the `text_model.`
//!   prefix (transformers 5) get it; `text_model.embeddings.position_ids` is ignored.
//!
//! Every expected key must arrive exactly once and every key in the file must be expected;
//! otherwise loading fails with an error naming the tensor, the file and the shapes.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use super::convert::tensor_to_f32;
use super::host::HostModule;
use super::plan::{MAX_CHUNK_BYTES, plan_chunks};
use super::reader::chunk_tensors;
use super::safetensors::{Dtype, Header, TensorInfo};
use crate::error::{Error, Result};

/// Which network a weights file belongs to (selects the key renames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `unet/`.
    Unet,
    /// `vae/`.
    Vae,
    /// `text_encoder/`.
    TextEncoder,
}

/// What to do with a key from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    /// Load it under this (canonical) key.
    Load(String),
    /// A known buffer the model does not need.
    Ignore,
}

/// The one rename table: a file's key → the model's key.
pub fn canonical_key(component: Component, key: &str) -> KeyAction {
    match component {
        Component::Unet => KeyAction::Load(key.to_string()),
        Component::Vae => {
            const OLD: [(&str, &str); 4] = [
                (".query.", ".to_q."),
                (".key.", ".to_k."),
                (".value.", ".to_v."),
                (".proj_attn.", ".to_out.0."),
            ];
            if key.contains(".attentions.") {
                for (old, new) in OLD {
                    if let Some(pos) = key.rfind(old) {
                        return KeyAction::Load(format!(
                            "{}{}{}",
                            &key[..pos],
                            new,
                            &key[pos + old.len()..]
                        ));
                    }
                }
            }
            KeyAction::Load(key.to_string())
        }
        Component::TextEncoder => {
            let key = if key.starts_with("text_model.") {
                key.to_string()
            } else {
                format!("text_model.{key}")
            };
            if key == "text_model.embeddings.position_ids" {
                KeyAction::Ignore
            } else {
                KeyAction::Load(key)
            }
        }
    }
}

/// How a file tensor is laid out relative to the parameter(s) it fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Same shape.
    Same,
    /// burn Linear weight `[in, out]` from PyTorch `[out, in]`.
    LinearWeight,
    /// Row blocks of one `[rows, d]` tensor.
    RowSplit,
}

#[derive(Debug, Clone)]
struct Part {
    /// burn module path of the parameter (`.`-joined, enum variants left out).
    path: String,
    /// burn shape of the parameter.
    shape: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Slot {
    layout: Layout,
    parts: Vec<Part>,
    loaded: bool,
}

impl Slot {
    /// The shape the file must have, in the file's (PyTorch) layout.
    fn file_shape(&self) -> Vec<usize> {
        match self.layout {
            Layout::Same => self.parts[0].shape.clone(),
            Layout::LinearWeight => self.parts[0].shape.iter().rev().copied().collect(),
            Layout::RowSplit => {
                let rows = self.parts.iter().map(|p| p.shape[0]).sum();
                let mut s = self.parts[0].shape.clone();
                s[0] = rows;
                s
            }
        }
    }
}

/// Collects every float parameter's key, layout and shape without initialising it.
struct Collector {
    stack: Vec<(String, String)>,
    slots: BTreeMap<String, Slot>,
}

/// `enter_module`/`exit_module` for a visitor or mapper with a `stack: Vec<(String, String)>`
/// field: the names and container types from the root to the current module.
macro_rules! track_module_path {
    () => {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.stack
                .push((name.to_string(), container_type.to_string()));
        }

        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.pop();
        }
    };
}
pub(crate) use track_module_path;

/// A parameter's module path from the visitor's stack of `(name, container type)`: names
/// `.`-joined, enum variants left out (they are not part of the weight keys).
pub(crate) fn module_path(stack: &[(String, String)]) -> String {
    stack
        .iter()
        .filter(|(_, container)| !container.starts_with("Enum:"))
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

impl ModuleVisitor for Collector {
    track_module_path!();

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = module_path(&self.stack);
        let shape = param.lazy_shape().to_vec();
        let n = self.stack.len();
        let last = self.stack.last().cloned().unwrap_or_default();
        let parent = if n >= 2 {
            self.stack[n - 2].clone()
        } else {
            Default::default()
        };
        let part = Part {
            path: path.clone(),
            shape,
        };

        // A row block of a split embedding: key = path without the block index.
        if last.1 == "Vec" && parent.0 == "weight" && parent.1 == "Struct:SplitEmbedding" {
            let key = path
                .rsplit_once('.')
                .map_or(path.clone(), |(k, _)| k.to_string());
            self.slots
                .entry(key)
                .or_insert_with(|| Slot {
                    layout: Layout::RowSplit,
                    parts: Vec::new(),
                    loaded: false,
                })
                .parts
                .push(part);
            return;
        }
        let (key, layout) = match (last.0.as_str(), last.1.as_str()) {
            ("weight", "Struct:Linear") => (path.clone(), Layout::LinearWeight),
            ("gamma", "Struct:GroupNorm" | "Struct:LayerNorm") => {
                (replace_last(&path, "weight"), Layout::Same)
            }
            ("beta", "Struct:GroupNorm" | "Struct:LayerNorm") => {
                (replace_last(&path, "bias"), Layout::Same)
            }
            _ => (path.clone(), Layout::Same),
        };
        self.slots.insert(
            key,
            Slot {
                layout,
                parts: vec![part],
                loaded: false,
            },
        );
    }
}

fn replace_last(path: &str, last: &str) -> String {
    match path.rsplit_once('.') {
        Some((head, _)) => format!("{head}.{last}"),
        None => last.to_string(),
    }
}

/// Replaces each parameter for which `source` yields data (looked up by module path) with
/// that data uploaded to the parameter's device; the others are left as they are.
pub(crate) struct Setter<'a> {
    stack: Vec<(String, String)>,
    source: &'a mut dyn FnMut(&str) -> Option<TensorData>,
    /// Parameters replaced so far.
    pub(crate) uploaded: usize,
}

impl<'a> Setter<'a> {
    pub(crate) fn new(source: &'a mut dyn FnMut(&str) -> Option<TensorData>) -> Self {
        Self {
            stack: Vec::new(),
            source,
            uploaded: 0,
        }
    }
}

impl ModuleMapper for Setter<'_> {
    track_module_path!();

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match (self.source)(&module_path(&self.stack)) {
            Some(data) => {
                let device = param.lazy_device();
                // f16 storage needs an adapter with shader-f16; elsewhere widen on the host.
                let data = if data.dtype() == DType::F16 && !device.supports_dtype(FloatDType::F16)
                {
                    data.convert::<f32>()
                } else {
                    data
                };
                // The data's own dtype (f16 kept, f32 stays f32), not the device default.
                let dtype = data.dtype();
                let tensor = Tensor::<D>::from_data(data, (&device, dtype));
                let id = param.id;
                self.uploaded += 1;
                param.transform_for_load(tensor, id)
            }
            None => param,
        }
    }
}

/// Fills a module's parameters from safetensors tensors, a batch (typically one downloaded
/// chunk) at a time, and checks at the end that every parameter was filled.
///
/// Parameters stay uninitialised (no memory, no random init) until their tensor arrives.
pub struct WeightLoader<M: Module> {
    module: Option<M>,
    component: Component,
    file: String,
    slots: BTreeMap<String, Slot>,
    /// Where the tensors go instead of the device, for a module kept in host memory
    /// ([`Self::on_host`]).
    host: Option<HashMap<String, TensorData>>,
}

impl<M: Module> WeightLoader<M> {
    /// Prepares to load `module` from the file shown to users as `file` (e.g.
    /// "`unet/diffusion_pytorch_model.fp16.safetensors`").
    pub fn new(module: M, component: Component, file: impl Into<String>) -> Self {
        let mut collector = Collector {
            stack: Vec::new(),
            slots: BTreeMap::new(),
        };
        module.visit(&mut collector);
        Self {
            module: Some(module),
            component,
            file: file.into(),
            slots: collector.slots,
            host: None,
        }
    }

    /// Keeps the tensors in host memory instead of uploading them: [`Self::finish_on_host`]
    /// then gives a [`HostModule`] that is uploaded only while it is used (the text encoder,
    /// which runs once per new prompt). Checks and layouts are the same as on the device.
    pub fn on_host(mut self) -> Self {
        self.host.get_or_insert_with(HashMap::new);
        self
    }

    /// The keys (file layout) and shapes the model expects, sorted by key.
    pub fn expected(&self) -> Vec<(String, Vec<usize>)> {
        self.slots
            .iter()
            .map(|(k, s)| (k.clone(), s.file_shape()))
            .collect()
    }

    /// Keys not loaded yet.
    pub fn missing(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| !s.loaded)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Loads a batch of tensors `(info, bytes)` (e.g. the output of
    /// [`chunk_tensors`](super::reader::chunk_tensors)): checks key, shape and dtype of each,
    /// converts to f32 on the host, then uploads them all in one walk over the module.
    pub fn load_tensors<'a, I>(&mut self, tensors: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a TensorInfo, &'a [u8])>,
    {
        let mut pending = HashMap::new();
        let mut keys = Vec::new();
        for (info, bytes) in tensors {
            let key = match canonical_key(self.component, &info.name) {
                KeyAction::Ignore => continue,
                KeyAction::Load(key) => key,
            };
            let slot = self
                .slots
                .get(&key)
                .ok_or_else(|| Error::UnexpectedTensor {
                    file: self.file.clone(),
                    tensor: info.name.clone(),
                })?;
            if slot.loaded || keys.contains(&key) {
                return Err(Error::Safetensors {
                    file: self.file.clone(),
                    problem: format!(
                        "tensor `{}` (model key `{key}`) is supplied twice",
                        info.name
                    ),
                });
            }
            let expected = slot.file_shape();
            let shape_ok = info.shape == expected
                || (slot.layout == Layout::LinearWeight
                    && info.shape.len() == 4
                    && info.shape[2..] == [1, 1]
                    && info.shape[..2] == expected[..]);
            if !shape_ok {
                return Err(Error::WeightShape {
                    file: self.file.clone(),
                    tensor: info.name.clone(),
                    expected: format!("{expected:?}"),
                    found: format!("{:?}", info.shape),
                });
            }
            let values = tensor_to_f32(info, bytes)?;
            match slot.layout {
                Layout::Same => {
                    pending.insert(
                        slot.parts[0].path.clone(),
                        self.stored(
                            &slot.parts[0].path,
                            values,
                            slot.parts[0].shape.clone(),
                            info.dtype,
                        ),
                    );
                }
                Layout::LinearWeight => {
                    let (out, inp) = (expected[0], expected[1]);
                    let mut t = vec![0f32; values.len()];
                    for o in 0..out {
                        for i in 0..inp {
                            t[i * out + o] = values[o * inp + i];
                        }
                    }
                    pending.insert(
                        slot.parts[0].path.clone(),
                        self.stored(
                            &slot.parts[0].path,
                            t,
                            slot.parts[0].shape.clone(),
                            info.dtype,
                        ),
                    );
                }
                Layout::RowSplit => {
                    let d: usize = expected[1..].iter().product();
                    let mut row = 0;
                    for part in &slot.parts {
                        let rows = part.shape[0];
                        let block = values[row * d..(row + rows) * d].to_vec();
                        pending.insert(
                            part.path.clone(),
                            TensorData::new(block, part.shape.clone()),
                        );
                        row += rows;
                    }
                }
            }
            keys.push(key);
        }
        if pending.is_empty() {
            return Ok(());
        }
        match &mut self.host {
            // Kept in host memory: uploaded each time the module is used (`HostModule`).
            Some(host) => host.extend(pending),
            None => {
                let expected = pending.len();
                let module = self.module.take().expect("module present between loads");
                let mut take = |path: &str| pending.remove(path);
                let mut setter = Setter::new(&mut take);
                let module = module.map(&mut setter);
                debug_assert_eq!(setter.uploaded, expected, "every collected path is visited");
                self.module = Some(module);
            }
        }
        for key in keys {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.loaded = true;
            }
        }
        Ok(())
    }

    /// The device data for one parameter: matrices and kernels (Linear and Conv2d weights)
    /// that arrive as F16 stay F16 (half the memory; widened exactly to f32 where they are
    /// used, see `kernels::layers`); vectors and embedding tables are f32. (Values here came
    /// from F16, so narrowing them back is exact.)
    fn stored(
        &self,
        path: &str,
        values: Vec<f32>,
        shape: Vec<usize>,
        file_dtype: Dtype,
    ) -> TensorData {
        if file_dtype == Dtype::F16 && shape.len() >= 2 && !path.contains("embedding") {
            TensorData::new(
                values
                    .into_iter()
                    .map(half::f16::from_f32)
                    .collect::<Vec<_>>(),
                shape,
            )
        } else {
            TensorData::new(values, shape)
        }
    }

    /// Gives the module back without checking completeness (to restart loading it).
    pub fn into_module(mut self) -> M {
        self.module.take().expect("module present")
    }

    /// The loaded module, or an error listing the weights that never arrived. A loader
    /// [`on_host`](Self::on_host) uploads its tensors now.
    pub fn finish(self) -> Result<M> {
        let host = self.host.is_some();
        let module = self.finish_on_host()?;
        Ok(if host {
            module.upload()
        } else {
            module.into_module()
        })
    }

    /// The loaded module in host memory ([`on_host`](Self::on_host)), or an error listing the
    /// weights that never arrived. Without `on_host` the weights are already on the device: the
    /// result holds them there and [`HostModule::upload`] gives them back as they are.
    pub fn finish_on_host(mut self) -> Result<HostModule<M>> {
        let missing = self.missing();
        if !missing.is_empty() {
            let examples = missing
                .iter()
                .take(5)
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::MissingTensors {
                file: self.file,
                count: missing.len(),
                examples,
            });
        }
        let module = self.module.take().expect("module present");
        Ok(HostModule::new(
            module,
            self.host.take().unwrap_or_default(),
        ))
    }
}

/// Loads a whole safetensors file held in memory, chunk by chunk exactly as the browser does
/// (≤ 64 MiB planned chunks). `file` is the name shown in errors.
pub fn load_safetensors<M: Module>(
    module: M,
    component: Component,
    file: &str,
    bytes: &[u8],
) -> Result<M> {
    let on_device = |m, c, f: String| WeightLoader::new(m, c, f);
    filled(on_device, module, component, file, bytes)?.finish()
}

impl<M: Module> HostModule<M> {
    /// [`load_safetensors`] into host memory ([`WeightLoader::on_host`]).
    pub fn load(module: M, component: Component, file: &str, bytes: &[u8]) -> Result<Self> {
        let on_host = |m, c, f: String| WeightLoader::new(m, c, f).on_host();
        filled(on_host, module, component, file, bytes)?.finish_on_host()
    }
}

/// A loader made by `new` with every planned chunk of the file `bytes` loaded.
fn filled<M: Module>(
    new: impl FnOnce(M, Component, String) -> WeightLoader<M>,
    module: M,
    component: Component,
    file: &str,
    bytes: &[u8],
) -> Result<WeightLoader<M>> {
    let header = Header::parse_named(file, bytes, Some(bytes.len() as u64))?;
    let mut loader = new(module, component, header.file_label());
    for chunk in plan_chunks(&header, MAX_CHUNK_BYTES) {
        let data = &bytes[chunk.start as usize..chunk.end as usize];
        loader.load_tensors(chunk_tensors(&header, &chunk, data)?)?;
    }
    Ok(loader)
}

/// A weights file's name (as shown in errors) and bytes, read from disk (native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_weights_file(path: &std::path::Path) -> Result<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Safetensors {
        file: format!("`{}`", path.display()),
        problem: format!("it cannot be read ({e})"),
    })?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((name, bytes))
}

/// Reads and loads a safetensors file from disk (native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_safetensors_file<M: Module>(
    module: M,
    component: Component,
    path: &std::path::Path,
) -> Result<M> {
    let (name, bytes) = read_weights_file(path)?;
    load_safetensors(module, component, &name, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::unet_2d_blocks::Transformer2DConfig;
    use burn::tensor::Device;

    #[test]
    fn renames_are_per_component() {
        use KeyAction::*;
        assert_eq!(
            canonical_key(
                Component::Vae,
                "encoder.mid_block.attentions.0.query.weight"
            ),
            Load("encoder.mid_block.attentions.0.to_q.weight".into())
        );
        assert_eq!(
            canonical_key(
                Component::Vae,
                "decoder.mid_block.attentions.0.proj_attn.bias"
            ),
            Load("decoder.mid_block.attentions.0.to_out.0.bias".into())
        );
        assert_eq!(
            canonical_key(Component::Vae, "decoder.conv_in.weight"),
            Load("decoder.conv_in.weight".into())
        );
        assert_eq!(
            canonical_key(Component::TextEncoder, "encoder.layers.0.mlp.fc1.bias"),
            Load("text_model.encoder.layers.0.mlp.fc1.bias".into())
        );
        assert_eq!(
            canonical_key(Component::TextEncoder, "text_model.embeddings.position_ids"),
            Ignore
        );
        assert_eq!(
            canonical_key(Component::TextEncoder, "embeddings.position_ids"),
            Ignore
        );
        assert_eq!(
            canonical_key(Component::Unet, "conv_in.weight"),
            Load("conv_in.weight".into())
        );
    }

    #[test]
    fn expected_keys_follow_diffusers_layout() {
        let device = Device::flex();
        for linear in [false, true] {
            let t = Transformer2DConfig {
                in_channels: 16,
                heads: 2,
                dim_head: 8,
                layers: 1,
                cross_attention_dim: 32,
                norm_num_groups: 4,
                use_linear_projection: linear,
                max_bytes: 1 << 20,
            }
            .init(&device);
            let loader = WeightLoader::new(t, Component::Unet, "t");
            let keys: BTreeMap<_, _> = loader.expected().into_iter().collect();
            assert_eq!(keys["norm.weight"], [16]);
            assert_eq!(keys["norm.bias"], [16]);
            assert_eq!(
                keys["proj_in.weight"],
                if linear {
                    vec![16, 16]
                } else {
                    vec![16, 16, 1, 1]
                }
            );
            assert_eq!(keys["transformer_blocks.0.attn2.to_k.weight"], [16, 32]);
            assert_eq!(keys["transformer_blocks.0.ff.net.0.proj.weight"], [128, 16]);
            assert_eq!(keys["transformer_blocks.0.ff.net.2.weight"], [16, 64]);
            assert_eq!(keys["transformer_blocks.0.norm3.bias"], [16]);
            assert!(!keys.contains_key("transformer_blocks.0.attn1.to_q.bias"));
            assert_eq!(keys.len(), 26);
            assert_eq!(loader.missing().len(), 26);
        }
    }
}
