//! Benchmarks over drag-editing datasets (native): reading sample folders in the GoodDrag /
//! Drag100 layout (docs/EVALUATION.md §1.1: `original.jpg|png`, `mask.png`, `points.json`) and the DragBench
//! layout (docs/EVALUATION.md §1.3: `original_image.png`, `meta_data.pkl`), writing an edit's result files in the
//! official layout (docs/ALGORITHM.md §1.17), the `--dump` tensors, and DAI over a results folder
//! (docs/EVALUATION.md §2.1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::drag::PointsFile;
use crate::edit::EditOutput;
use crate::error::{Error, Result};
use crate::eval::dai::{DAI_GAMMAS, FloatImage, dai_official, dai_paper};
use crate::image::RgbImage;
use crate::image::resample::Resampler;
use crate::image::working::WorkingSize;
use crate::imageio::{draw_points, load_mask, load_rgb, save_rgb};
use crate::pickle::{Value, parse_pickle};
use crate::tensor_io::read_f32;
use crate::weights::{F32Tensor, write_f32_safetensors};

/// Which dataset layout a sample folder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `original.jpg|png`, `mask.png`, `points.json`.
    GoodDrag,
    /// `original_image.png`, `meta_data.pkl`.
    DragBench,
}

/// One benchmark sample, loaded.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Path relative to the dataset root (`cat_2`, `animals/JH_2023-09-14-1820-16`).
    pub name: String,
    /// Layout it was read from.
    pub layout: Layout,
    /// The photo.
    pub image: RgbImage,
    /// Editable mask (> 0), `None` when absent or empty.
    pub mask: Option<Vec<u8>>,
    /// Handle, target, … in image `[x, y]`.
    pub points: Vec<[f64; 2]>,
    /// DragBench's prompt (GoodDrag's bench ignores it and uses "").
    pub prompt: String,
}

/// The original photo of a sample folder: `original.jpg`, `.png`, `.jpeg` or DragBench's
/// `original_image.png`, the first that exists.
pub fn original_path(dir: &Path) -> Option<PathBuf> {
    [
        "original.jpg",
        "original.png",
        "original.jpeg",
        "original_image.png",
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

/// Every sample folder under `root` (any depth), sorted by name: folders with `points.json`
/// or `meta_data.pkl`.
pub fn discover(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !root.is_dir() {
        return Err(Error::InvalidInput(format!(
            "`{}` is not a folder",
            root.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::InvalidInput(format!("cannot list `{}`: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() || name.starts_with('.') {
                continue;
            }
            if path.join("points.json").is_file() || path.join("meta_data.pkl").is_file() {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, path));
            } else {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn mask_from(
    width: usize,
    height: usize,
    mw: usize,
    mh: usize,
    mask: Vec<u8>,
    what: &str,
) -> Result<Option<Vec<u8>>> {
    if (mw, mh) != (width, height) {
        return Err(Error::InvalidInput(format!(
            "{what} is {mw}×{mh} but the image is {width}×{height}; the mask must have the image's size"
        )));
    }
    Ok(mask.iter().any(|&v| v > 0).then_some(mask))
}

/// Loads a sample folder in either layout.
pub fn load_sample(name: &str, dir: &Path) -> Result<Sample> {
    let original = original_path(dir).ok_or_else(|| {
        Error::InvalidInput(format!(
            "`{}` has no original.jpg/.png or original_image.png",
            dir.display()
        ))
    })?;
    let image = load_rgb(&original)?;
    let (w, h) = (image.width, image.height);
    if dir.join("points.json").is_file() {
        let json = std::fs::read_to_string(dir.join("points.json")).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read points.json in `{}`: {e}",
                dir.display()
            ))
        })?;
        let points = PointsFile::from_json(&json)?.points;
        let mask_path = dir.join("mask.png");
        let mask = if mask_path.is_file() {
            let (mw, mh, m) = load_mask(&mask_path)?;
            mask_from(w, h, mw, mh, m, "mask.png")?
        } else {
            None
        };
        return Ok(Sample {
            name: name.into(),
            layout: Layout::GoodDrag,
            image,
            mask,
            points,
            prompt: String::new(),
        });
    }
    let bytes = std::fs::read(dir.join("meta_data.pkl")).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot read meta_data.pkl in `{}`: {e}",
            dir.display()
        ))
    })?;
    let meta = parse_pickle(&bytes)?;
    let prompt = match meta.get("prompt") {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    };
    let points = meta
        .get("points")
        .and_then(Value::items)
        .ok_or_else(|| Error::InvalidInput("meta_data.pkl has no `points` list".into()))?
        .iter()
        .map(|p| {
            let xy = p.items().filter(|v| v.len() == 2).ok_or_else(|| {
                Error::InvalidInput("meta_data.pkl: a point is not [x, y]".into())
            })?;
            match (xy[0].as_f64(), xy[1].as_f64()) {
                (Some(x), Some(y)) => Ok([x, y]),
                _ => Err(Error::InvalidInput(
                    "meta_data.pkl: a point coordinate is not a number".into(),
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mask = match meta.get("mask") {
        Some(Value::Array(a)) if a.shape.len() == 2 => {
            let values = a.to_f64()?;
            let m: Vec<u8> = values
                .iter()
                .map(|&v| if v > 0.0 { 255 } else { 0 })
                .collect();
            mask_from(w, h, a.shape[1], a.shape[0], m, "the meta_data.pkl mask")?
        }
        Some(Value::Array(a)) => {
            return Err(Error::InvalidInput(format!(
                "meta_data.pkl: the mask has shape {:?}, expected H×W",
                a.shape
            )));
        }
        _ => None,
    };
    Ok(Sample {
        name: name.into(),
        layout: Layout::DragBench,
        image,
        mask,
        points,
        prompt,
    })
}

/// Per-phase times etc. written as `timings.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timings {
    /// Milliseconds per phase.
    pub phases_ms: BTreeMap<String, f64>,
    /// Sum of the phases.
    pub total_ms: f64,
    /// Adapter that ran it.
    pub device: String,
    /// The UNet's compute dtype in the LoRA, drag and denoising phases (`f32`, `f16`; the
    /// inversion and reference trajectory always run in f32).
    pub dtype: String,
    /// The working size asked for (`native` or a long side) and the `[width, height]` the edit
    /// ran at.
    #[serde(default)]
    pub working_size: String,
    /// See `working_size`.
    #[serde(default)]
    pub working_dims: [usize; 2],
    /// The backward plan of the gradient passes (`recompute`, `recompute-top`, `autodiff`).
    #[serde(default)]
    pub backward_plan: String,
}

/// Writes `output_image.png` (the edit at the working size, as the official code writes it),
/// `output_full.png` (the photo at its own size with the edit composited in),
/// `new_points.json` (photo pixels), `image_with_new_points.png` (drawn on the working-size
/// result), `timings.json`.
pub fn write_edit_outputs(
    dir: &Path,
    out: &EditOutput,
    device: &str,
    size: WorkingSize,
) -> Result<Timings> {
    let io = |e: std::io::Error| {
        Error::InvalidInput(format!("cannot write to `{}`: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    save_rgb(&dir.join("output_image.png"), &out.image)?;
    save_rgb(&dir.join("output_full.png"), &out.full)?;
    let working_points: Vec<[f64; 2]> = out
        .new_points
        .iter()
        .map(|&p| out.size.to_working(p))
        .collect();
    save_rgb(
        &dir.join("image_with_new_points.png"),
        &draw_points(&out.image, &working_points),
    )?;
    let points = serde_json::to_string(&PointsFile {
        points: out.new_points.clone(),
    })
    .unwrap_or_default();
    std::fs::write(dir.join("new_points.json"), points).map_err(io)?;
    let phases_ms: BTreeMap<String, f64> = out
        .timings
        .iter()
        .map(|t| (t.phase.clone(), t.millis))
        .collect();
    let timings = Timings {
        total_ms: phases_ms.values().sum(),
        phases_ms,
        device: device.to_string(),
        dtype: out.precision.name().into(),
        working_size: size.to_string(),
        working_dims: [out.size.working.0, out.size.working.1],
        backward_plan: out.backward_plan.name().into(),
    };
    std::fs::write(
        dir.join("timings.json"),
        serde_json::to_string_pretty(&timings).unwrap_or_default(),
    )
    .map_err(io)?;
    Ok(timings)
}

async fn tensor(name: &str, t: Tensor<4>) -> Result<F32Tensor> {
    Ok(F32Tensor {
        name: name.into(),
        shape: t.dims().to_vec(),
        data: read_f32(t).await?,
    })
}

/// The `--dump` file: `z0`, `zT`, `drag_loss` `[n]` (loss at every supervision step),
/// `drag_term` `[n]` (its drag part), `handles` `[n_track+1, l, 2]` (tracked handles in image
/// `[x, y]`, first row = initial), `z_drag_end`, `z_final`; all f32.
pub async fn dump_bytes(out: &EditOutput) -> Result<Vec<u8>> {
    let l = out.record.handle_history.first().map_or(0, Vec::len);
    let handles: Vec<f32> = out
        .record
        .handle_history
        .iter()
        .flat_map(|row| {
            row.iter()
                .flat_map(|&p| out.frame.to_image(p).map(|v| v as f32))
        })
        .collect();
    let tensors = vec![
        tensor("z0", out.z0.clone()).await?,
        tensor("zT", out.z_t.clone()).await?,
        F32Tensor {
            name: "drag_loss".into(),
            shape: vec![out.record.losses.len()],
            data: out.record.losses.clone(),
        },
        F32Tensor {
            name: "drag_term".into(),
            shape: vec![out.record.drag_losses.len()],
            data: out.record.drag_losses.clone(),
        },
        F32Tensor {
            name: "handles".into(),
            shape: vec![out.record.handle_history.len(), l, 2],
            data: handles,
        },
        tensor(
            "z_drag_end",
            out.record
                .z_drag_end
                .clone()
                .unwrap_or_else(|| out.z_final.clone()),
        )
        .await?,
        tensor("z_final", out.z_final.clone()).await?,
    ];
    write_f32_safetensors(
        &tensors,
        &BTreeMap::from([("format".to_string(), "gooddrag-dump".to_string())]),
    )
}

/// DAI of one image at every γ, both variants (`None` where the official one is undefined).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaiScores {
    /// γ → paper's Eq. 8.
    pub paper: BTreeMap<usize, f64>,
    /// γ → `compute_DAI.py`'s value.
    pub official: BTreeMap<usize, Option<f64>>,
}

/// DAI of `result` against `original` for the sample's points at γ ∈ {1, 5, 10, 20}.
pub fn dai_scores(
    original: &RgbImage,
    result: &RgbImage,
    points: &[[f64; 2]],
) -> Result<DaiScores> {
    let a = FloatImage::from_rgb8(original.width, original.height, &original.rgb);
    let b = FloatImage::from_rgb8(result.width, result.height, &result.rgb);
    let mut paper = BTreeMap::new();
    let mut official = BTreeMap::new();
    for g in DAI_GAMMAS {
        paper.insert(g, dai_paper(&a, &b, points, g)?);
        official.insert(g, dai_official(&a, &b, points, g).ok());
    }
    Ok(DaiScores { paper, official })
}

/// Mean of each γ over samples (official: over the samples where it is defined).
pub fn mean_scores<'a>(scores: impl IntoIterator<Item = &'a DaiScores>) -> DaiScores {
    let mut paper: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    let mut official: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for s in scores {
        for (g, v) in &s.paper {
            let e = paper.entry(*g).or_default();
            e.0 += v;
            e.1 += 1;
        }
        for (g, v) in &s.official {
            let e = official.entry(*g).or_default();
            if let Some(v) = v {
                e.0 += v;
                e.1 += 1;
            }
        }
    }
    let mean = |(s, n): (f64, usize)| if n == 0 { None } else { Some(s / n as f64) };
    DaiScores {
        paper: paper
            .into_iter()
            .filter_map(|(g, v)| mean(v).map(|m| (g, m)))
            .collect(),
        official: official.into_iter().map(|(g, v)| (g, mean(v))).collect(),
    }
}

/// The files a result may be in, for sample `name` under `results`, in the order they are
/// tried: ours and GoodDrag's (`output_image.png`), DragBench's (`dragged_image.png`), flat.
fn result_candidates(results: &Path, name: &str) -> [PathBuf; 3] {
    [
        results.join(name).join("output_image.png"),
        results.join(name).join("dragged_image.png"),
        results.join(format!("{name}.png")),
    ]
}

/// A sample's result found in a results folder.
#[derive(Debug, Clone)]
pub struct FoundResult {
    /// The file read.
    pub path: PathBuf,
    /// The result at the original's size.
    pub image: RgbImage,
    /// Whether it had another size and was resampled to the original's (DragBench resizes the
    /// same way, with PIL's bilinear filter).
    pub resized: bool,
}

/// The result of `sample` in `results` (see [`result_candidates`]), at the original's size. A
/// `gooddrag bench` run at a working size wrote `output_image.png` at that size and
/// `output_full.png` at the photo's: the latter is then used, as `bench` scores it. Any other
/// size mismatch is resampled (antialiased triangle filter, PIL's `BILINEAR`), as DragBench's
/// scripts resize the result to the original's size.
pub fn find_result(sample: &Sample, results: &Path) -> Result<FoundResult> {
    let candidates = result_candidates(results, &sample.name);
    let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::InvalidInput(format!(
            "no result for `{}`: expected one of {}",
            sample.name,
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let (w, h) = (sample.image.width, sample.image.height);
    let mut found = FoundResult {
        image: load_rgb(path)?,
        path: path.clone(),
        resized: false,
    };
    if (found.image.width, found.image.height) == (w, h) {
        return Ok(found);
    }
    let full = results.join(&sample.name).join("output_full.png");
    if full.is_file() {
        let image = load_rgb(&full)?;
        if (image.width, image.height) == (w, h) {
            return Ok(FoundResult {
                path: full,
                image,
                resized: false,
            });
        }
    }
    let from = (found.image.width, found.image.height);
    found.image = RgbImage {
        width: w,
        height: h,
        rgb: Resampler::new(from, (w, h), 3).resample_u8(&found.image.rgb),
    };
    found.resized = true;
    Ok(found)
}

/// DAI of one sample's result in `results` ([`find_result`]).
pub fn dai_for_result(sample: &Sample, results: &Path) -> Result<DaiScores> {
    let found = find_result(sample, results)?;
    dai_scores(&sample.image, &found.image, &sample.points)
}

/// A Markdown table of mean DAI per γ.
pub fn dai_table(mean: &DaiScores, samples: usize) -> String {
    let mut s = format!(
        "| DAI (mean of {samples} images) | γ=1 | γ=5 | γ=10 | γ=20 |\n|---|---|---|---|---|\n"
    );
    let row = |name: &str, vals: Vec<Option<f64>>| {
        let cells: Vec<String> = vals
            .into_iter()
            .map(|v| v.map_or("–".into(), |v| format!("{v:.4}")))
            .collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    s += &row(
        "paper Eq. 8",
        DAI_GAMMAS
            .iter()
            .map(|g| mean.paper.get(g).copied())
            .collect(),
    );
    s += &row(
        "compute_DAI.py",
        DAI_GAMMAS
            .iter()
            .map(|g| mean.official.get(g).copied().flatten())
            .collect(),
    );
    s
}
