//! Compute devices: the pure-Rust CPU device for tests, burn's wgpu device natively (Vulkan;
//! lavapipe on machines without a GPU) and WebGPU in the browser, plus a report of what the
//! adapter offers (name, backend, shader-f16, buffer limits) so callers can size work to it.
//!
//! burn's wgpu runtime may be initialised only once per process/page ("A server is still
//! registered"), so the native device lives in a process-wide `OnceLock`; the browser keeps its
//! own in `web/`.

#[cfg(not(target_arch = "wasm32"))]
use burn::tensor::Device;
use burn::tensor::wgpu::WgpuSetup;
use serde::{Deserialize, Serialize};

/// What the adapter behind a device is and what it allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterReport {
    /// Adapter name as the driver/browser reports it (may be empty in browsers).
    pub name: String,
    /// Graphics API: `Vulkan`, `Metal`, `Dx12`, `Gl`, `BrowserWebGpu` — or `Cpu` for the flex device.
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu` (software adapters such as lavapipe and SwiftShader), …
    pub device_type: String,
    /// Whether the adapter can run f16 shaders (WebGPU `shader-f16`).
    pub shader_f16: bool,
    /// Largest buffer the adapter allows (`maxBufferSize`).
    pub max_buffer_size: u64,
    /// Largest buffer one shader binding may see (`maxStorageBufferBindingSize`); burn's memory
    /// pages are at most this large, so no single tensor can exceed it.
    pub max_storage_buffer_binding_size: u64,
}

impl AdapterReport {
    /// Whether the adapter renders in software on the CPU (lavapipe/llvmpipe, SwiftShader,
    /// Microsoft's WARP, the CPU device): by its type where the driver reports one, by its name
    /// where the browser reports none.
    pub fn is_software(&self) -> bool {
        let name = self.name.to_ascii_lowercase();
        self.device_type == "Cpu"
            || [
                "swiftshader",
                "llvmpipe",
                "lavapipe",
                "softpipe",
                "basic render",
                "warp",
            ]
            .iter()
            .any(|s| name.contains(s))
    }

    /// Reads the report from an initialised wgpu setup. The limits are the device's: cubecl
    /// requests every limit the adapter supports (not WebGPU's defaults), so a GPU that allows
    /// 2 GiB buffers gets them; the editor's own chunk budgets stay ≤ 128 MiB by choice
    /// (`models::attention::attention_budget`).
    pub fn from_setup(setup: &WgpuSetup) -> Self {
        let info = setup.adapter.get_info();
        let limits = setup.device.limits();
        let features = setup.adapter.features();
        Self {
            name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            shader_f16: features.contains(burn::tensor::wgpu::wgpu::Features::SHADER_F16),
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        }
    }
}

/// The autodiff twin of `device` that every gradient pass (LoRA fine-tuning, motion
/// supervision) runs on: burn's balanced gradient checkpointing recomputes memory-bound ops
/// (GroupNorm, SiLU, elementwise) in backward instead of keeping their outputs. Measured on SD 1.5
/// at 512×512 (`gooddrag bench-unet --dry-run`): one UNet forward + backward to the latent needs
/// 8.2 GiB of device memory instead of 13.0 GiB; results are unchanged (the parity tests run on
/// this device).
pub fn training(device: &burn::tensor::Device) -> burn::tensor::Device {
    device.clone().autodiff().gradient_checkpointing()
}

/// Whether `device` (or the device an autodiff device wraps) is burn-flex.
pub fn is_cpu_device(device: &burn::tensor::Device) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        device.clone().inner() == burn::tensor::Device::flex()
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = device;
        false
    }
}

/// The pure-Rust CPU device (reference results in tests): burn-flex with SIMD kernels on
/// rayon's pool, one thread per core unless `RAYON_NUM_THREADS` says otherwise; the name says
/// how many threads it has.
#[cfg(not(target_arch = "wasm32"))]
pub fn cpu() -> (Device, AdapterReport) {
    let report = AdapterReport {
        name: format!("burn-flex (CPU, {} threads)", rayon::current_num_threads()),
        backend: "Cpu".into(),
        device_type: "Cpu".into(),
        shader_f16: true,
        max_buffer_size: u64::MAX,
        max_storage_buffer_binding_size: u64::MAX,
    };
    (Device::flex(), report)
}

/// The native wgpu device, initialised once per process and cloned afterwards.
///
/// On a machine without a GPU this is Mesa's lavapipe (install `mesa-vulkan-drivers`).
#[cfg(not(target_arch = "wasm32"))]
pub fn wgpu() -> crate::Result<(Device, AdapterReport)> {
    use std::sync::OnceLock;
    static WGPU: OnceLock<Result<(Device, AdapterReport), String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        Device::wgpu_options()
            .init_with_setup()
            .map(|(device, setup)| (device, AdapterReport::from_setup(&setup)))
            .map_err(|e| format!("{e} (no Vulkan/Metal/DX12 adapter? on Linux without a GPU install mesa-vulkan-drivers for lavapipe)"))
    })
    .clone()
    .map_err(crate::Error::DeviceInit)
}

/// Whether a wgpu adapter is real hardware: software rasterisers (lavapipe, SwiftShader,
/// WARP) report the `Cpu` device type.
pub fn is_hardware(report: &AdapterReport) -> bool {
    report.device_type != "Cpu"
}

/// The device to use when none is named: a hardware wgpu adapter when there is one, else the
/// CPU device. A software wgpu adapter is never chosen: on a 2-core machine the tiny model's
/// edit takes ~424 s on lavapipe and ~13 s on the CPU device.
#[cfg(not(target_arch = "wasm32"))]
pub fn auto() -> (Device, AdapterReport) {
    match wgpu() {
        Ok((device, report)) if is_hardware(&report) => (device, report),
        _ => cpu(),
    }
}

/// A device chosen by name on the command line or in tests: `auto`, `cpu`, `wgpu` (the
/// preferred adapter) or `wgpu:N` (the N-th discrete GPU, from 0: one process per GPU on a
/// multi-GPU machine).
#[cfg(not(target_arch = "wasm32"))]
pub fn by_name(name: &str) -> crate::Result<(Device, AdapterReport)> {
    match name {
        "auto" => Ok(auto()),
        "cpu" => Ok(cpu()),
        "wgpu" => wgpu(),
        other => match other.strip_prefix("wgpu:").map(str::parse::<usize>) {
            Some(Ok(index)) => discrete_gpu(index),
            _ => Err(crate::Error::InvalidInput(format!(
                "unknown device `{other}`: use `auto`, `cpu`, `wgpu` or `wgpu:N` (the N-th \
                 discrete GPU, from 0)"
            ))),
        },
    }
}

/// The `index`-th discrete GPU through wgpu (not cached: a process uses one device).
#[cfg(not(target_arch = "wasm32"))]
fn discrete_gpu(index: usize) -> crate::Result<(Device, AdapterReport)> {
    Device::wgpu_options()
        .device_kind(burn::tensor::DeviceKind::DiscreteGpu(index))
        .init_with_setup()
        .map(|(device, setup)| (device, AdapterReport::from_setup(&setup)))
        .map_err(|e| crate::Error::DeviceInit(format!("discrete GPU {index}: {e}")))
}
