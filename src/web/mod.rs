//! The wasm-bindgen boundary (thin): the JS API the Web Worker calls. Everything here converts
//! between JS values and the core; errors become JS `Error`s with the core's message and its
//! kind as `code` ([`Error::kind`]: the worker branches on it, never on the text), and no panic is
//! allowed to cross (the panic hook only makes a bug visible in the console).
//!
//! burn's WebGPU runtime can be initialised once per page, so the device lives in a
//! thread-local (a worker is single-threaded) and `init()` is idempotent.

use std::cell::RefCell;

use burn::tensor::Device;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

mod bench;
mod editor;

use crate::device::AdapterReport;
use crate::{Error, probe};

enum Engine {
    Empty,
    Initialising,
    Ready(Device, AdapterReport),
}

thread_local! {
    static ENGINE: RefCell<Engine> = const { RefCell::new(Engine::Empty) };
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// This build's id (build.rs: a hash of the web sources and the wasm inputs).
const BUILD_ID: &str = env!("GOODDRAG_BUILD_ID");

/// The same id as a `gooddrag-build-id` custom section of the module, which
/// `scripts/build-web.sh` reads to write `pkg/build-id.js` without running the engine.
#[unsafe(link_section = "gooddrag-build-id")]
#[used]
static BUILD_ID_SECTION: [u8; 16] = *include_bytes!(concat!(env!("OUT_DIR"), "/build-id"));

/// This build's id; the worker refuses to run an engine whose id differs from the page's
/// `pkg/build-id.js` (files from two deployments).
#[wasm_bindgen(js_name = buildId)]
pub fn build_id() -> String {
    BUILD_ID.into()
}

/// A JS `Error` with `message` and `code` (a kebab-case error kind).
fn coded_error(message: &str, code: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    // Setting a property on a fresh Error object cannot fail.
    let _ = js_sys::Reflect::set(&error, &"code".into(), &code.into());
    error.into()
}

/// The core's error as a JS `Error` whose `code` is [`Error::kind`].
fn js_error(e: Error) -> JsValue {
    coded_error(&e.to_string(), e.kind())
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| {
            coded_error(
                &format!("could not convert the result for JavaScript: {e}"),
                "internal",
            )
        })
}

/// Asks the browser for a WebGPU adapter before burn does, so a missing API or a refused
/// adapter becomes a clear error instead of a failure deep inside wgpu.
async fn check_webgpu() -> Result<(), Error> {
    let global = js_sys::global();
    let navigator =
        js_sys::Reflect::get(&global, &"navigator".into()).map_err(|_| Error::NoWebGpu)?;
    let gpu = js_sys::Reflect::get(&navigator, &"gpu".into()).map_err(|_| Error::NoWebGpu)?;
    if gpu.is_undefined() || gpu.is_null() {
        let secure = js_sys::Reflect::get(&global, &"isSecureContext".into())
            .map(|v| v.as_bool() != Some(false))
            .unwrap_or(true);
        return Err(if secure {
            Error::NoWebGpu
        } else {
            Error::InsecureContext
        });
    }
    let request: js_sys::Function = js_sys::Reflect::get(&gpu, &"requestAdapter".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or(Error::NoWebGpu)?;
    let promise: js_sys::Promise = request
        .call0(&gpu)
        .ok()
        .and_then(|p| p.dyn_into().ok())
        .ok_or(Error::NoAdapter)?;
    let adapter = JsFuture::from(promise)
        .await
        .map_err(|_| Error::NoAdapter)?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err(Error::NoAdapter);
    }
    Ok(())
}

/// Initialises burn's WebGPU device (once per page; later calls return the same report) and
/// resolves to the adapter report: `{ name, backend, deviceType, shaderF16, maxBufferSize,
/// maxStorageBufferBindingSize }`.
#[wasm_bindgen]
pub async fn init() -> Result<JsValue, JsValue> {
    let state = ENGINE.with_borrow(|engine| match engine {
        Engine::Empty => None,
        Engine::Initialising => Some(Err(Error::InitInProgress)),
        Engine::Ready(_, report) => Some(Ok(report.clone())),
    });
    if let Some(ready) = state {
        return to_js(&ready.map_err(js_error)?);
    }
    ENGINE.set(Engine::Initialising);
    let result = async {
        check_webgpu().await?;
        Device::wgpu_options()
            .init_with_setup_async()
            .await
            .map(|(device, setup)| (device, AdapterReport::from_setup(&setup)))
            .map_err(|e| Error::DeviceInit(e.to_string()))
    }
    .await;
    match result {
        Ok((device, report)) => {
            ENGINE.set(Engine::Ready(device, report.clone()));
            to_js(&report)
        }
        Err(e) => {
            ENGINE.set(Engine::Empty);
            Err(js_error(e))
        }
    }
}

fn report() -> Result<AdapterReport, JsValue> {
    ENGINE.with_borrow(|engine| match engine {
        Engine::Ready(_, report) => Ok(report.clone()),
        Engine::Initialising => Err(js_error(Error::InitInProgress)),
        Engine::Empty => Err(js_error(Error::NotInitialised)),
    })
}

fn device() -> Result<Device, JsValue> {
    ENGINE.with_borrow(|engine| match engine {
        Engine::Ready(device, _) => Ok(device.clone()),
        Engine::Initialising => Err(js_error(Error::InitInProgress)),
        Engine::Empty => Err(js_error(Error::NotInitialised)),
    })
}

/// Runs the device probe (GroupNorm → SiLU → Conv2d → attention, forward and backward to the
/// input) on the WebGPU device and resolves to `{ config, output, loss, inputGrad }`.
#[wasm_bindgen(js_name = runProbe)]
pub async fn run_probe() -> Result<JsValue, JsValue> {
    let device = device()?;
    let result = probe::run(&device, probe::ProbeConfig::default())
        .await
        .map_err(js_error)?;
    to_js(&result)
}
