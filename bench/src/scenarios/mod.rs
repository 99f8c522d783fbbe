//! One module per BENCH.md scenario.

pub mod store;
