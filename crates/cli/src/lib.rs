//! The `choreo` command: run the local stack, and follow a purchase on the
//! topics alone.
//!
//! Everything the saga did is on its topics (every event carries its
//! order id, producer and causation), so watching, tracing, finding stuck
//! orders and the dead-letter tools read Kafka and the schema registry and
//! never a service's database. Only `order place` and `reconcile` use the
//! services' HTTP APIs, as any client would.
//!
//! Each command is a library function that writes to an `impl Write`, so
//! tests drive the same code the binary runs; `main.rs` only dispatches.
//!
//! # Layout
//!
//! - [`init`]: `choreo init`, create topics and register schemas.
//! - [`up`]: `choreo up`, the local stack of `make run`.
//! - [`conn`]: the global `--brokers` / `--registry` flags.
//! - [`output`]: human or JSON lines, colours on a TTY, progress on stderr,
//!   durations.
//! - [`reader`]: group-less topic reading (assign every partition, from the
//!   beginning or the end, optionally stop at the high watermarks).
//! - [`decode`]: Confluent-Avro through the registry, topic-agnostic too.
//! - [`render`]: one event as one line (the fields that matter).
//! - [`saga`]: pure analysis of one order's events — timeline, causation,
//!   outcome, the step it waits on.
//! - [`watch`], [`trace`] (with `stuck`), [`wire`] (`encode` / `decode`),
//!   [`dlq`], [`order`], [`reconcile`]: the commands.
//! - [`ui`]: `choreo ui`, the saga monitor in the browser (started by
//!   `choreo up` too).

pub mod bench;
pub mod bench_bus;
pub mod conn;
pub mod decode;
pub mod dlq;
pub mod init;
pub mod order;
pub mod output;
pub mod reader;
pub mod reconcile;
pub mod render;
pub mod saga;
pub mod trace;
pub mod ui;
pub mod up;
pub mod watch;
pub mod wire;

pub use conn::Connection;
pub use output::Output;
