//! A network whose weights wait in host memory and are uploaded only while it runs.
//!
//! The CLIP text encoder runs once per distinct prompt (`model_set::PromptCache`), yet held on
//! the GPU its weights (≈ 0.3 GiB for SD 1.5: f16 matrices, f32 token table) would sit beside the
//! UNet through the whole edit and raise every later phase's peak — the VAE encode and decode
//! above all (docs/ARCHITECTURE.md §3 "Memory per phase", §7). The official code too moves its
//! text encoder (and the VAE encoder) to the CPU once inversion is done. Here the
//! loader keeps the tensors it checked and laid out ([`WeightLoader::on_host`]) and
//! [`HostModule::upload`] builds the device module from them for one use; dropping that module
//! gives the memory back. The values are bit for bit those an on-device load would upload (the
//! same [`Setter`] does it), so results do not change.
//!
//! [`WeightLoader::on_host`]: super::WeightLoader::on_host

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::load::Setter;

/// A module skeleton (parameters not initialised: no device memory) and its parameters' data
/// in host memory, by module path.
#[derive(Debug)]
pub struct HostModule<M: Module> {
    skeleton: M,
    data: HashMap<String, TensorData>,
}

impl<M: Module> HostModule<M> {
    /// `skeleton`'s parameters named in `data` are uploaded from it at each use; the others
    /// (none, for a completely loaded module) are used as the skeleton holds them.
    pub fn new(skeleton: M, data: HashMap<String, TensorData>) -> Self {
        Self { skeleton, data }
    }

    /// The module on its device with every parameter uploaded from host memory; dropping it
    /// frees that device memory. The skeleton is cloned (its lazy parameters stay
    /// uninitialised) and the data is copied tensor by tensor, so host memory holds at most one
    /// extra tensor at a time.
    pub fn upload(&self) -> M {
        let mut take = |path: &str| self.data.get(path).cloned();
        self.skeleton.clone().map(&mut Setter::new(&mut take))
    }

    /// The same module with no parameter requiring gradients (the skeleton's parameters stay
    /// uninitialised): uploads are then never tracked by autodiff.
    pub fn no_grad(self) -> Self {
        Self {
            skeleton: self.skeleton.no_grad(),
            data: self.data,
        }
    }

    /// Bytes held in host memory.
    pub fn host_bytes(&self) -> usize {
        self.data.values().map(|d| d.as_bytes().len()).sum()
    }

    /// Parameters of the module (held on the host or on the device).
    pub fn num_params(&self) -> usize {
        self.skeleton.num_params()
    }

    /// The module as the device holds it, for one without host data: loaded onto the device,
    /// or not loaded yet.
    pub(crate) fn into_module(self) -> M {
        debug_assert!(self.data.is_empty(), "host data would be lost");
        self.skeleton
    }

    /// `skeleton` (built like `module`, parameters uninitialised) with the data of every float
    /// parameter of `module`, read back from the device; `module` is dropped, freeing its
    /// device memory. For benchmarks that build a network with random weights and must hold
    /// it as the editor does. Async so that it works where reads from the GPU are (the
    /// browser).
    pub async fn read_back(skeleton: M, module: M) -> crate::Result<Self> {
        struct Collect {
            stack: Vec<(String, String)>,
            tensors: Vec<(String, Tensor<1>, Vec<usize>)>,
        }
        impl ModuleVisitor for Collect {
            super::load::track_module_path!();

            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let path = super::load::module_path(&self.stack);
                // Detached: no autodiff node may keep the device copy alive after `module`.
                let t = param.val().detach();
                let shape = t.dims().to_vec();
                let n: usize = shape.iter().product();
                self.tensors.push((path, t.reshape([n]), shape));
            }
        }
        let mut collect = Collect {
            stack: Vec::new(),
            tensors: Vec::new(),
        };
        module.visit(&mut collect);
        drop(module);
        let mut data = HashMap::with_capacity(collect.tensors.len());
        for (path, t, shape) in collect.tensors {
            let d = t
                .into_data_async()
                .await
                .map_err(|e| crate::Error::Readback(format!("{e:?}")))?;
            // Copied into plain host memory: read-back bytes may live in the device's mapped
            // staging memory (counted by its pools) for as long as they are held.
            data.insert(
                path,
                TensorData::from_bytes_vec(d.as_bytes().to_vec(), shape, d.dtype()),
            );
        }
        Ok(Self::new(skeleton, data))
    }
}
