//! The store against real database files: every op round-trips through a reopened file, a
//! batch is all or nothing, the schema is created from nothing, and a batch survives the
//! process being killed right after it was applied.

mod crash;
mod ops;
mod schema;
mod support;
