//! W3C trace context through Kafka headers.
//!
//! Each message carries `traceparent`; the consumer loop runs the handler
//! inside [`scope`], and every event the handler emits carries a child of
//! that context, so one trace id spans the whole saga of an order. Written
//! here rather than pulling in an OpenTelemetry SDK: the format is one line.

use std::future::Future;

use rand::Rng;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// `00-<trace-id>-<parent-id>-<flags>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    pub sampled: bool,
}

impl TraceContext {
    pub fn new_root() -> Self {
        let mut rng = rand::thread_rng();
        Self {
            trace_id: format!("{:032x}", rng.gen::<u128>() | 1),
            span_id: format!("{:016x}", rng.gen::<u64>() | 1),
            sampled: true,
        }
    }

    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: format!("{:016x}", rand::thread_rng().gen::<u64>() | 1),
            sampled: self.sampled,
        }
    }

    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if version != "00" || !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
            return None;
        }
        if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self {
            trace_id: trace_id.to_ascii_lowercase(),
            span_id: span_id.to_ascii_lowercase(),
            sampled: u8::from_str_radix(flags, 16).ok()? & 1 == 1,
        })
    }

    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// Runs `fut` with `ctx` as the current trace context.
pub async fn scope<F: Future>(ctx: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// The context for an outgoing message: a child of the current one, or a
/// new root when nothing is in scope (an HTTP request, a timer).
pub fn outgoing() -> TraceContext {
    CURRENT
        .try_with(TraceContext::child)
        .unwrap_or_else(|_| TraceContext::new_root())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::parse(h).unwrap();
        assert_eq!(t.header(), h);
        assert!(TraceContext::parse("00-0000-00f067aa0ba902b7-01").is_none());
        assert!(TraceContext::parse("garbage").is_none());
    }

    #[tokio::test]
    async fn children_keep_the_trace_id() {
        let root = TraceContext::new_root();
        let child = scope(root.clone(), async { outgoing() }).await;
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_ne!(outgoing().trace_id, root.trace_id);
    }
}
