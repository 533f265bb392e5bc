//! Evaluation as the papers do it: drag-editing datasets (GoodDrag/Drag100 and DragBench
//! layouts), their official output files, and the metrics (docs/EVALUATION.md).

pub mod dai;
#[cfg(not(target_arch = "wasm32"))]
pub mod dataset;
pub mod dift;
#[cfg(not(target_arch = "wasm32"))]
pub mod gscore;
pub mod lpips;
#[cfg(not(target_arch = "wasm32"))]
pub mod md;
pub mod shard;

/// The SHA-256 of `bytes` as lowercase hex: how reports identify weights files, prompts and
/// cached requests.
#[cfg(not(target_arch = "wasm32"))]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// The SHA-256 of a file, read in 8 MiB pieces (multi-GB weights files are never held whole).
#[cfg(not(target_arch = "wasm32"))]
pub fn sha256_file(path: &std::path::Path) -> crate::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        crate::Error::InvalidInput(format!("cannot read `{}`: {e}", path.display()))
    };
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = file.read(&mut buf).map_err(cannot)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(not(target_arch = "wasm32"))]
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
