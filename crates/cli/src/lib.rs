//! The `choreo` command.
//!
//! # Layout
//!
//! - [`up`]: `choreo up`, the local stack of `make run`.

pub mod up;
