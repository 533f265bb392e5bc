//! Progress bars on stderr for the CLI: one line per phase, redrawn in place.

use std::io::Write;

use gooddrag::progress::Progress;

/// Draws [`Progress`] events as `phase [#####-----] step/of extra`.
pub struct ProgressBar {
    phase: &'static str,
    tty: bool,
}

impl ProgressBar {
    /// A bar on stderr (plain lines every 10 % when stderr is not a terminal).
    pub fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            phase: "",
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn draw(&mut self, phase: &'static str, step: usize, of: usize, extra: String) {
        if phase != self.phase && !self.phase.is_empty() && self.tty {
            eprintln!();
        }
        self.phase = phase;
        let width = 24;
        let filled = (step * width)
            .checked_div(of)
            .map_or(width, |f| f.min(width));
        let line = format!(
            "{phase:<9} [{}{}] {step:>4}/{of:<4} {extra}",
            "#".repeat(filled),
            "-".repeat(width - filled)
        );
        if self.tty {
            eprint!("\r{line:<100}");
            let _ = std::io::stderr().flush();
        } else if of == 0 || step == of || step.is_multiple_of((of / 10).max(1)) {
            eprintln!("{line}");
        }
    }

    /// Shows one event.
    pub fn update(&mut self, p: &Progress) {
        match p {
            Progress::Lora { step, of, loss } => {
                self.draw("lora", *step, *of, format!("loss {loss:.4}"))
            }
            Progress::Invert { step, of } => self.draw("invert", *step, *of, String::new()),
            Progress::Reference { step, of } => self.draw("reference", *step, *of, String::new()),
            Progress::Drag {
                timestep,
                of,
                step,
                loss,
                handles,
                ..
            } => self.draw(
                "drag",
                *timestep,
                *of,
                format!("step {step} loss {loss:.3} handles {handles:?}"),
            ),
            Progress::Denoise { step, of } => self.draw("denoise", *step, *of, String::new()),
            Progress::DragStopped { reason } => {
                // `reached` or `early-stop`: the reason's serialised spelling.
                let reason = serde_json::to_value(reason).unwrap_or_default();
                let reason = reason.as_str().unwrap_or_default();
                self.draw("drag", 1, 1, format!("stopped: {reason}"))
            }
            Progress::Decode => self.draw("decode", 1, 1, String::new()),
            Progress::Tracked { .. } | Progress::Preview { .. } => {}
        }
    }

    /// Ends the current line.
    pub fn finish(&mut self) {
        if self.tty && !self.phase.is_empty() {
            eprintln!();
        }
        self.phase = "";
    }
}
