//! File formats of the benchmarks: DragBench's pickled metadata.

pub mod pickle;
