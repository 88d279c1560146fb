//! Mappings.
pub mod graph;
pub mod pidf;
