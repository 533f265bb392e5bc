//! The one error type at the edges of the core (device set-up, readback, input validation).
//! Every message is written for the person who has to act on it; in the browser it crosses the
//! wasm boundary as a `JsError` carrying exactly this text.

/// Errors the core reports instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The browser exposes no `navigator.gpu` at all.
    #[error(
        "WebGPU is not available in this browser. GoodDrag runs Stable Diffusion on your GPU \
         through WebGPU: use a current Chrome, Edge or another browser with WebGPU enabled."
    )]
    NoWebGpu,
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
    /// An argument from the user or a caller is invalid.
    #[error("{0}")]
    InvalidInput(String),
}

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
