//! How commands print: human lines (coloured only on a terminal, never
//! when `NO_COLOR` is set) or one JSON object per line with `--json`;
//! progress for long reads on stderr, only when stderr is a terminal, so
//! pipes and tests see clean output.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeZone, Utc};

/// How a command writes its results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// One JSON object per line instead of human lines.
    pub json: bool,
    /// ANSI colours in human lines.
    pub color: bool,
}

impl Output {
    /// Plain human lines, no colour: what tests and pipes get.
    pub fn plain() -> Self {
        Self::default()
    }

    /// One JSON object per line.
    pub fn json() -> Self {
        Self {
            json: true,
            color: false,
        }
    }

    /// For the real stdout: colour only on a terminal and without
    /// `NO_COLOR`.
    pub fn for_stdout(json: bool) -> Self {
        let color =
            !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self { json, color }
    }

    /// `text` in an SGR colour (`"1"` bold, `"31"` red, …) when colouring;
    /// [`printable`] either way, since what is painted is mostly data
    /// (ids, reasons) read from topics.
    pub fn paint(&self, sgr: &str, text: &str) -> String {
        let text = printable(text);
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.into_owned()
        }
    }

    /// Writes one JSON object as one line.
    pub fn json_line(
        &self,
        out: &mut impl Write,
        value: &serde_json::Value,
    ) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, value)?;
        out.write_all(b"\n")
    }
}

/// `text` safe to print on a terminal and in a log line: control characters
/// (newline, carriage return, escape sequences, DEL, C1) and invisible
/// formatting characters (bidi overrides such as U+202E) are shown as Rust
/// escapes (`\n`, `\u{1b}`, `\u{202e}`); everything else, including
/// non-ASCII letters, is left alone. Borrowed when nothing needs escaping.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || choreo_events::contract::is_invisible_format(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] of an optional value, `-` when absent.
pub fn printable_or_dash(text: Option<&str>) -> String {
    text.map_or_else(|| "-".to_owned(), |t| printable(t).into_owned())
}

/// One path segment of a URL: every byte outside the RFC 3986 unreserved
/// set (`A-Z a-z 0-9 - . _ ~`) percent-encoded, so an id holding `/`, `?`,
/// `#`, `%` or `..` stays one segment naming itself.
pub fn path_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, URL_COMPONENT).to_string()
}

/// A query parameter value, encoded like [`path_segment`].
pub fn query_value(text: &str) -> String {
    path_segment(text)
}

/// Everything but the unreserved characters.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Colour of an event type in human output: red for failures and
/// compensations, green for successes, default otherwise.
pub fn event_color(event_type: &str) -> &'static str {
    if event_type.contains("Failed")
        || event_type.contains("Cancelled")
        || event_type.contains("Released")
        || event_type.contains("Refunded")
    {
        "31"
    } else if event_type.ends_with("Confirmed") || event_type.ends_with("Completed") {
        "32"
    } else {
        "36"
    }
}

/// A progress line on stderr, redrawn at most every 100 ms, cleared when
/// done. Does nothing unless stderr is a terminal.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    enabled: bool,
    last_draw: Option<Instant>,
}

impl Progress {
    /// A progress line, shown only when stderr is a terminal.
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Self {
        Self {
            label: label.into(),
            total,
            done: 0,
            enabled: std::io::stderr().is_terminal(),
            last_draw: None,
        }
    }

    /// A progress that never draws (tests, `--json`).
    pub fn hidden() -> Self {
        let mut p = Self::new("", None);
        p.enabled = false;
        p
    }

    /// Starts a new phase: new label, count back to zero, total unknown.
    pub fn set_label(&mut self, label: impl Into<String>) {
        self.label = label.into();
        self.done = 0;
        self.total = None;
        self.draw(true);
    }

    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
        self.draw(true);
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        self.draw(false);
    }

    fn draw(&mut self, force: bool) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let text = match self.total {
            Some(total) if total > 0 => format!(
                "{} {}/{} ({}%)",
                self.label,
                self.done,
                total,
                self.done * 100 / total
            ),
            _ => format!("{} {}", self.label, self.done),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        self.last_draw = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `1h30m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return duration_from_secs(secs, text);
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}`: missing unit (ms, s, m or h)"))?;
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration like 30s, 500ms, 5m, 1h"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 30s, 500ms, 5m, 1h"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("`{text}`: unknown unit `{other}` (ms, s, m or h)")),
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    duration_from_secs(total, text)
}

fn duration_from_secs(secs: f64, text: &str) -> Result<Duration, String> {
    if secs.is_finite() && secs >= 0.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("`{text}` is not a non-negative duration"))
    }
}

/// `12 ms`, `3.4 s`, `2.5 min`, `1.2 h`: a span for people.
pub fn human_ms(ms: i64) -> String {
    let abs = ms.unsigned_abs() as f64;
    let sign = if ms < 0 { "-" } else { "" };
    if abs < 1_000.0 {
        format!("{sign}{abs} ms")
    } else if abs < 120_000.0 {
        format!("{sign}{:.1} s", abs / 1_000.0)
    } else if abs < 7_200_000.0 {
        format!("{sign}{:.1} min", abs / 60_000.0)
    } else {
        format!("{sign}{:.1} h", abs / 3_600_000.0)
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `25.00 EUR` from minor units. Assumes two decimals, which holds for
/// every currency the seeds use; the JSON output keeps the exact minor
/// units.
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_and_bidi_characters_only() {
        assert!(matches!(printable("o-1 Zoë"), Cow::Borrowed("o-1 Zoë")));
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("\u{1b}[2Jx"), "\\u{1b}[2Jx");
        assert_eq!(printable("a\rb\u{7f}"), "a\\rb\\u{7f}");
        assert_eq!(printable("evil\u{202E}gnp"), "evil\\u{202e}gnp");
        assert!(!printable("x\n2026-01-01 INFO forged").contains('\n'));
        // Painting escapes too, so a coloured id cannot smuggle escapes.
        let painted = Output {
            json: false,
            color: true,
        }
        .paint("1", "\u{1b}]0;x\u{7}");
        assert_eq!(painted.matches('\u{1b}').count(), 2, "{painted:?}");
        assert_eq!(printable_or_dash(None), "-");
    }

    #[test]
    fn path_segments_encode_everything_but_unreserved() {
        let uuid = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(path_segment(uuid), uuid);
        assert_eq!(path_segment("a/b"), "a%2Fb");
        assert_eq!(path_segment("50%"), "50%25");
        assert_eq!(path_segment("a?b#c d"), "a%3Fb%23c%20d");
        assert_eq!(path_segment("a\nb"), "a%0Ab");
        assert_eq!(path_segment("ä"), "%C3%A4");
        assert_eq!(query_value("x&limit=1"), "x%26limit%3D1");
    }

    #[test]
    fn durations_parse_in_every_spelling() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn spans_and_money_read_well() {
        assert_eq!(human_ms(12), "12 ms");
        assert_eq!(human_ms(12_345), "12.3 s");
        assert_eq!(human_ms(300_000), "5.0 min");
        assert_eq!(money(2_500, "EUR"), "25.00 EUR");
        assert_eq!(money(-5, "EUR"), "-0.05 EUR");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn colour_only_when_asked() {
        assert_eq!(Output::plain().paint("31", "x"), "x");
        let c = Output {
            json: false,
            color: true,
        };
        assert_eq!(c.paint("31", "x"), "\x1b[31mx\x1b[0m");
    }
}
