//! The `choreo` command.
//!
//! # Layout
//!
//! - [`init`]: `choreo init`, create topics and register schemas.
//! - [`up`]: `choreo up`, the local stack of `make run`.

pub mod init;
pub mod up;
