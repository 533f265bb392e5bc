//! Performance tooling: synthetic full-size benchmarks of every phase of an edit (time, memory,
//! largest buffer) and the profiler that attributes a UNet pass to operations and layers
//! (docs/ARCHITECTURE.md §5). Numbers are printed by benchmarks, never asserted by timed tests.
//!
//! [`profiler`] and [`work`] are leaves (they import nothing of the crate but `device`-level
//! types) so the kernels and models below can open their scopes; [`synthetic`] sits above
//! everything it runs.

pub mod profiler;
pub mod synthetic;
pub mod work;
