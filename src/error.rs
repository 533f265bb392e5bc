//! The one error type at the edges of the core (device set-up, readback, input validation).
//! Every message is written for the person who has to act on it; in the browser it crosses the
//! wasm boundary as a JS `Error` carrying exactly this text and, as `code`, [`Error::kind`], so
//! the page decides by the kind, never by matching the text (docs/ARCHITECTURE.md §10).

/// Errors the core reports instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The browser exposes no `navigator.gpu` at all.
    #[error(
        "WebGPU is not available in this browser. GoodDrag runs Stable Diffusion on your GPU \
         through WebGPU: use a current Chrome, Edge or another browser with WebGPU enabled."
    )]
    NoWebGpu,
    /// The page is not a secure context (plain `http://` on a host other than localhost), and
    /// browsers expose WebGPU only to secure contexts.
    #[error(
        "WebGPU is only available on secure pages: open GoodDrag over https:// (or from \
         localhost). This page was served over plain http from another host."
    )]
    InsecureContext,
    /// `navigator.gpu` exists but `requestAdapter()` returned no adapter.
    #[error(
        "WebGPU is present but no GPU adapter is available (it may be disabled, blocklisted \
         or unsupported on this machine). Check chrome://gpu, enable hardware acceleration, \
         or try another browser."
    )]
    NoAdapter,
    /// The GPU device could not be created or registered.
    #[error("could not start the GPU device: {0}")]
    DeviceInit(String),
    /// A second initialisation was attempted while the first is still running.
    #[error("the GPU device is already being initialised; wait for the first init() to finish")]
    InitInProgress,
    /// An operation needs the device but `init()` has not completed.
    #[error("the GPU device is not initialised; call init() first")]
    NotInitialised,
    /// Reading a tensor back from the device failed (device lost, out of memory, …).
    #[error("reading results back from the device failed: {0}")]
    Readback(String),
    /// The GPU refused an allocation: out of memory, or one buffer over the adapter's limit.
    #[error(
        "The GPU ran out of memory for this step ({0}). Nothing is lost: close other tabs or \
         apps that use the GPU and run again, or use a device with more GPU memory."
    )]
    OutOfMemory(String),
    /// The GPU device was lost (driver reset, GPU process crash, another tab took the GPU).
    #[error(
        "The GPU device was lost ({0}). Restart the engine (or reload the page): the model \
         reloads from this browser's cache and your photo, mask and points stay."
    )]
    DeviceLost(String),
    /// An argument from the user or a caller is invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// The user cancelled a long phase; nothing that was loaded is lost.
    #[error("cancelled")]
    Cancelled,
    /// A LoRA file that cannot be applied to this UNet.
    #[error(
        "{file} cannot be used as a LoRA for this model: {problem}. GoodDrag applies LoRAs \
         that adapt the UNet's attention projections (to_q, to_k, to_v, to_out.0) of a Stable \
         Diffusion 1.5-shaped model, in the diffusers, older diffusers (attention processor) \
         or kohya-ss layout."
    )]
    Lora { file: String, problem: String },
    /// A safetensors weights file is malformed, truncated or uses a layout GoodDrag cannot read.
    #[error(
        "{file} is not a usable safetensors file: {problem}. If it was downloaded, clear the \
         cached weights and download it again; otherwise pick the original diffusers \
         `.safetensors` file."
    )]
    Safetensors {
        /// The file, as shown to the user (e.g. "`unet/diffusion_pytorch_model.fp16.safetensors`").
        file: String,
        /// What is wrong, naming the tensor where there is one.
        problem: String,
    },
    /// A weights file lacks a tensor the model needs.
    #[error(
        "{file} has no tensor `{tensor}`. The file does not belong to this model part or \
         is not in the diffusers layout: pick the matching `.safetensors` file of a diffusers \
         Stable Diffusion 1.5 repository."
    )]
    MissingTensor {
        /// The file, as shown to the user.
        file: String,
        /// The diffusers weight key that was looked up.
        tensor: String,
    },
    /// The bytes handed in for one planned chunk of a weights file do not match the plan.
    #[error(
        "chunk {chunk} of {file} does not match its download plan: {problem}. The cached copy \
         is incomplete or belongs to another version of the file: clear the cached weights and \
         download them again."
    )]
    WeightsChunk {
        /// The file, as shown to the user.
        file: String,
        /// Index of the chunk in the plan.
        chunk: usize,
        /// What does not match.
        problem: String,
    },
    /// A tensor's bytes cannot be converted to f32.
    #[error(
        "{tensor} cannot be read as f32: {problem}. GoodDrag reads F16, BF16 and F32 weights: \
         use the diffusers fp16 or fp32 `.safetensors` files."
    )]
    TensorData {
        /// The tensor, as shown to the user (e.g. "tensor `conv_in.weight`").
        tensor: String,
        /// What is wrong with its data.
        problem: String,
    },
    /// The CLIP tokenizer files (`vocab.json`, `merges.txt`, tokenizer config) are unusable.
    #[error(
        "`{file}` is not a usable CLIP tokenizer file: {problem}. Use the `tokenizer/` folder \
         (vocab.json, merges.txt) of a diffusers Stable Diffusion repository, unmodified."
    )]
    Tokenizer {
        /// The tokenizer file name (`vocab.json`, `merges.txt`, `tokenizer_config.json`, …).
        file: String,
        /// What is wrong, naming the entry or line.
        problem: String,
    },
    /// A weights tensor's shape differs from what the model built from `config.json` needs.
    #[error(
        "{file}: tensor `{tensor}` has shape {found} but the model built from config.json needs \
         {expected}. The weights file and config.json belong to different models: use the \
         config.json from the same folder of the same diffusers repository."
    )]
    WeightShape {
        /// The file, as shown to the user.
        file: String,
        /// The weight key as written in the file.
        tensor: String,
        /// The shape the model needs (in the file's layout, e.g. `[320, 4, 3, 3]`).
        expected: String,
        /// The shape in the file.
        found: String,
    },
    /// A weights file has a tensor the model does not have.
    #[error(
        "{file} has a tensor `{tensor}` that the model built from config.json does not have. \
         The file belongs to another model or model part: pick the matching diffusers \
         `.safetensors` file and its config.json."
    )]
    UnexpectedTensor {
        /// The file, as shown to the user.
        file: String,
        /// The weight key as written in the file.
        tensor: String,
    },
    /// After loading, some of the model's weights were never supplied.
    #[error(
        "{file} lacks {count} tensor(s) the model needs, e.g. {examples}. The file is incomplete \
         or belongs to another model: download it again or pick the matching file."
    )]
    MissingTensors {
        /// The file, as shown to the user.
        file: String,
        /// How many weights are missing.
        count: usize,
        /// The first few missing weight keys, quoted.
        examples: String,
    },
}

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kind of error as a stable kebab-case code (`out-of-memory`, `device-lost`,
    /// `cancelled`, `invalid-input`, …): what the page and embedders branch on.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NoWebGpu => "no-webgpu",
            Error::InsecureContext => "insecure-context",
            Error::NoAdapter => "no-adapter",
            Error::DeviceInit(_) => "device-init",
            Error::InitInProgress => "init-in-progress",
            Error::NotInitialised => "not-initialised",
            Error::Readback(_) => "readback",
            Error::OutOfMemory(_) => "out-of-memory",
            Error::DeviceLost(_) => "device-lost",
            Error::InvalidInput(_) => "invalid-input",
            Error::Cancelled => "cancelled",
            Error::Lora { .. } => "lora",
            Error::Safetensors { .. }
            | Error::MissingTensor { .. }
            | Error::WeightsChunk { .. }
            | Error::TensorData { .. }
            | Error::WeightShape { .. }
            | Error::UnexpectedTensor { .. }
            | Error::MissingTensors { .. } => "weights",
            Error::Tokenizer { .. } => "tokenizer",
        }
    }

    /// Classifies a failure reported by the device runtime while work ran or was read back:
    /// a refused allocation becomes [`Error::OutOfMemory`] (with the buffer size when the
    /// runtime names it), a lost device [`Error::DeviceLost`], anything else
    /// [`Error::Readback`].
    pub fn from_device_failure(detail: String) -> Self {
        const REFUSED: &str = "can't allocate buffer of size: ";
        let lower = detail.to_lowercase();
        if let Some(i) = lower.find(REFUSED) {
            let digits: String = lower[i + REFUSED.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let what = match digits.parse::<u64>() {
                Ok(bytes) => format!(
                    "a buffer of {:.0} MiB was refused",
                    bytes as f64 / (1u64 << 20) as f64
                ),
                Err(_) => "a buffer was refused".into(),
            };
            return Error::OutOfMemory(what);
        }
        if lower.contains("out of memory") || lower.contains("outofmemory") {
            return Error::OutOfMemory("the device reported out of memory".into());
        }
        if lower.contains("device lost")
            || lower.contains("device is lost")
            || lower.contains("devicelost")
        {
            return Error::DeviceLost("the device reported it was lost".into());
        }
        Error::Readback(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_failures_are_classified_with_actionable_messages() {
        let e = Error::from_device_failure(
            "An error happened during execution\nCaused by:\n  can't allocate buffer of size: 268435456\n".into(),
        );
        assert!(matches!(e, Error::OutOfMemory(_)), "{e:?}");
        assert!(e.to_string().contains("256 MiB was refused"), "{e}");
        assert!(matches!(
            Error::from_device_failure("Validation: Out of memory".into()),
            Error::OutOfMemory(_)
        ));
        let lost = Error::from_device_failure("Parent device is lost: Device lost".into());
        assert!(
            lost.to_string().starts_with("The GPU device was lost"),
            "{lost}"
        );
        assert!(matches!(
            Error::from_device_failure("something else".into()),
            Error::Readback(_)
        ));
    }
}
