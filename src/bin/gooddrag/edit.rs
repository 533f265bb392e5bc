//! `gooddrag edit`: one drag edit of one image, its official output files, and a JSON line on
//! stdout. Background: docs/ARCHITECTURE.md.

use std::path::{Path, PathBuf};

use clap::Args;
use gooddrag::edit::{EditInput, LoraChoice};
use gooddrag::image::RgbImage;
use gooddrag::image::working::WorkingSize;
use gooddrag::lora::parse_lora;
use gooddrag::{Error, Result, imageio};

use crate::common::{
    ModelArgs, edit_sample, load_config, load_models, print_json, read_bytes, read_points,
};

/// `gooddrag edit`'s flags.
#[derive(Args)]
pub struct EditArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The photo (PNG or JPEG).
    #[arg(long)]
    image: PathBuf,
    /// points.json: {"points": [[x, y], …]}, handle/target alternating, image pixels.
    #[arg(long)]
    points: PathBuf,
    /// Editable region (white/non-zero = may change), the image's size.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Use this LoRA file instead of training one.
    #[arg(long, conflicts_with = "no_lora")]
    lora: Option<PathBuf>,
    /// Edit with the base model (no LoRA).
    #[arg(long)]
    no_lora: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// The size the edit runs at: a long side in pixels (a multiple of 8 from 64 to 1024;
    /// more than 512 needs more memory and leaves SD 1.5's training resolution) or `native`
    /// (the photo's own size, as the official benchmark; refused over 1024×1024 pixels).
    /// `output_image.png` is the edit at this size, `output_full.png` the photo at its own size
    /// with the edited region composited in.
    #[arg(long, default_value = "512", value_name = "PIXELS|native")]
    size: WorkingSize,
    /// Also write the run's tensors (z0, zT, drag_loss, handles, z_drag_end, z_final) here.
    #[arg(long)]
    dump: Option<PathBuf>,
}

/// Runs `gooddrag edit`.
pub fn run(args: EditArgs) -> Result<()> {
    let config = load_config(&args.model)?;
    let image = imageio::load_rgb(&args.image)?;
    let points = read_points(&args.points)?;
    let mask = match &args.mask {
        Some(path) => Some(load_mask(path, &image)?),
        None => None,
    };
    let lora = lora_choice(args.lora.as_deref(), args.no_lora)?;
    let (mut models, device) = load_models(&args.model)?;
    let input = EditInput {
        image,
        mask,
        points,
        config,
        lora,
        size: args.size,
    };
    let (output, timings) =
        edit_sample(&mut models, &device, input, &args.out, args.dump.as_deref())?;
    print_json(&serde_json::json!({
        "out": args.out,
        "final_handles": output.final_handles,
        "stop": output.record.stop,
        "supervision_steps": output.record.losses.len(),
        "timings": timings,
        "size": {"asked": args.size.to_string(), "working": output.size.working, "photo": output.size.original},
    }));
    Ok(())
}

/// The mask file, which must be the image's size.
fn load_mask(path: &Path, image: &RgbImage) -> Result<Vec<u8>> {
    let (w, h, m) = imageio::load_mask(path)?;
    if (w, h) != (image.width, image.height) {
        return Err(Error::InvalidInput(format!(
            "the mask is {w}×{h} but the image is {}×{}; use a mask of the image's size",
            image.width, image.height
        )));
    }
    Ok(m)
}

/// `--lora` (read now), `--no-lora`, or train one.
fn lora_choice(lora: Option<&Path>, no_lora: bool) -> Result<LoraChoice> {
    Ok(match (lora, no_lora) {
        (Some(path), _) => {
            LoraChoice::Use(parse_lora(&path.display().to_string(), &read_bytes(path)?)?)
        }
        (None, true) => LoraChoice::None,
        (None, false) => LoraChoice::Train,
    })
}
