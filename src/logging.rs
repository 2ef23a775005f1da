//! Human logs by default, JSON lines for machines; levels by a RUST_LOG-style filter.
//!
//! Peer-supplied text (a claimed node name, an error quoting its input) ends up
//! in log fields, and `%` Display fields are written as they are. A newline in
//! such a field would start a forged log line, an escape sequence would drive
//! the operator's terminal. So both formats escape control characters *at the
//! formatter*, where no call site can forget: the human format through
//! [`EscapedFields`], the JSON format through [`JsonEscaping`] (serde_json
//! already escapes U+0000–U+001F; the wrapper adds DEL, the C1 controls, line
//! separators and bidirectional overrides).

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::Targets;

pub use crate::log_filter::parse_filter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Installs the global logger. `RUST_LOG`, when set, overrides `level`; a
/// `RUST_LOG` that is not a filter is said on stderr and `level` is used.
/// Colours only on a terminal (and never with `NO_COLOR`): on the appliance
/// stderr goes to syslog, where escape codes would garble `logread`.
pub fn init(level: &str, format: LogFormat) {
    init_to(level, format, None);
}

/// [`init`], writing to `file` instead of stderr when given (no colours there).
pub fn init_to(level: &str, format: LogFormat, file: Option<Arc<LogFile>>) {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = match from_env.as_deref().map(parse_filter) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            eprintln!("warning: RUST_LOG: {e}; using log.level {level:?}");
            parse_filter(level).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
        }
        None => parse_filter(level).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO)),
    };
    let ansi = file.is_none() && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let writer = match file {
        Some(f) => BoxMakeWriter::new(LogFileWriter(f)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let _ = subscriber(filter, format, ansi, writer).try_init();
}

/// The logger [`init_to`] installs: `filter` decides every level. The fmt
/// subscriber's own ceiling is lifted to TRACE, or it would drop DEBUG and
/// TRACE (its default is INFO) before `filter` saw them.
fn subscriber(
    filter: Targets,
    format: LogFormat,
    ansi: bool,
    writer: BoxMakeWriter,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let builder =
        tracing_subscriber::fmt().with_ansi(ansi).with_max_level(tracing_subscriber::filter::LevelFilter::TRACE);
    match format {
        LogFormat::Human => Box::new(builder.fmt_fields(EscapedFields).with_writer(writer).finish().with(filter)),
        LogFormat::Json => {
            Box::new(builder.json().flatten_event(true).with_writer(JsonEscaping(writer)).finish().with(filter))
        }
    }
}

/// The log file of `[log] file`: appended to, and reopened at the same path on
/// request (SIGHUP), so logrotate can rename it away and the next line starts
/// a new file instead of following the old one.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    /// Opens (creates, with its directory) `path` for appending.
    pub fn open(path: &Path) -> anyhow::Result<Arc<LogFile>> {
        Ok(Arc::new(LogFile { path: path.to_path_buf(), file: Mutex::new(Self::open_file(path)?) }))
    }

    fn open_file(path: &Path) -> anyhow::Result<File> {
        use anyhow::Context;
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)
                .with_context(|| format!("creating the log directory {} (log.file)", d.display()))?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the log file {} (log.file)", path.display()))
    }

    /// Opens the path again; lines written from now on go to the new file.
    /// On failure the old file is kept (nothing is lost; the error says why).
    pub fn reopen(&self) -> anyhow::Result<()> {
        let f = Self::open_file(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = f;
        Ok(())
    }

    /// Reopens the file whenever the process gets SIGHUP (logrotate's
    /// `postrotate kill -HUP`), from a thread of its own.
    pub fn reopen_on_sighup(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
        let me = self.clone();
        std::thread::Builder::new().name("sighup".into()).spawn(move || {
            for _ in signals.forever() {
                match me.reopen() {
                    Ok(()) => tracing::info!(file = %me.path.display(), "SIGHUP: log file reopened"),
                    Err(e) => tracing::error!("SIGHUP: {e:#}; still writing to the file opened before"),
                }
            }
        })?;
        Ok(())
    }
}

/// With no log file, SIGHUP is logged and otherwise ignored (its default
/// action would stop the daemon when logrotate or an operator sends it).
pub fn ignore_sighup() -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new().name("sighup".into()).spawn(move || {
        for _ in signals.forever() {
            tracing::info!("SIGHUP: logging to stderr, nothing to reopen");
        }
    })?;
    Ok(())
}

/// Hands out the [`LogFile`] to the formatter, one locked write per event.
#[derive(Debug, Clone)]
pub struct LogFileWriter(pub Arc<LogFile>);

impl<'a> MakeWriter<'a> for LogFileWriter {
    type Writer = LockedLogFile<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LockedLogFile(self.0.file.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The log file, locked for one event's write.
#[derive(Debug)]
pub struct LockedLogFile<'a>(MutexGuard<'a, File>);

impl std::io::Write for LockedLogFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Whether `c` must not reach a log line or an alert raw: control characters
/// (C0, DEL, C1), line and paragraph separators, and the bidirectional
/// controls that reorder what a reader sees.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A `fmt::Write` that escapes [`needs_escape`] characters as `\n`, `\r`,
/// `\t`, `\x1b` or `\u{2028}` on their way to the inner writer.
pub struct Escaper<'a, W: fmt::Write + ?Sized>(pub &'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaper<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(needs_escape) {
            self.0.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if (c as u32) < 0x100 => write!(self.0, "\\x{:02x}", c as u32)?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// `s` with control characters escaped (see [`Escaper`]).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let _ = Escaper(&mut out).write_str(s);
    out
}

/// Peer-supplied text made fit for an alert or a log line: escaped, and cut
/// to at most `max_chars` characters of the input with the length it had.
pub fn sanitize(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => escape(s),
        Some((cut, _)) => format!("{}…({} bytes)", escape(&s[..cut]), s.len()),
    }
}

/// The human format's field formatter: like tracing-subscriber's default
/// (`message` bare, then `name=value`, `log.*` fields of bridged `log`
/// records left out), but every value goes through [`Escaper`], so a `%`
/// field with a newline or an escape sequence stays on its line and inert.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut v = EscapingVisitor { writer: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut v);
        v.result
    }
}

struct EscapingVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for EscapingVisitor<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}").and_then(|_| write!(Escaper(&mut *self.writer), "{value:?}"))
        } else {
            write!(self.writer, "{sep}{}=", field.name()).and_then(|_| write!(Escaper(&mut *self.writer), "{value:?}"))
        };
    }
}

/// Wraps the JSON format's writer and replaces the characters serde_json
/// leaves raw (DEL, C1 controls, U+2028/2029, bidi controls) with `\uXXXX`
/// escapes. They can only occur inside JSON strings, so the line stays valid
/// JSON; the newline that ends each line is kept.
#[derive(Debug, Clone, Copy)]
pub struct JsonEscaping<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JsonEscaping<M> {
    type Writer = JsonEscapingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        JsonEscapingWriter(self.0.make_writer())
    }
}

/// The writer [`JsonEscaping`] hands out.
#[derive(Debug)]
pub struct JsonEscapingWriter<W>(W);

impl<W: std::io::Write> std::io::Write for JsonEscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if !text.chars().any(|c| c != '\n' && needs_escape(c)) && matches!(text, std::borrow::Cow::Borrowed(_)) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = String::with_capacity(text.len() + 16);
        for c in text.chars() {
            if c != '\n' && needs_escape(c) {
                // Everything needs_escape matches lies in the Basic Multilingual Plane.
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                out.push(c);
            }
        }
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    const FORGED: &str = "mallory\n2026-12-04T00:00:00Z INFO forged line\x1b[31m\u{202e}\u{85}";

    fn log_everything() {
        tracing::warn!(peer = %FORGED, debug = ?FORGED, plain = FORGED, "refused {FORGED}");
        let span = tracing::info_span!("conn", who = %FORGED);
        let _g = span.enter();
        tracing::warn!("inside");
    }

    fn assert_one_line_per_event(out: &str, events: usize) {
        assert_eq!(out.matches('\n').count(), events, "{out:?}");
        assert!(out.ends_with('\n'), "{out:?}");
        for bad in ['\x1b', '\r', '\u{202e}', '\u{85}'] {
            assert!(!out.contains(bad), "raw {bad:?} in {out:?}");
        }
    }

    #[test]
    fn human_format_escapes_control_characters_in_every_field() {
        let cap = Capture::default();
        let sub =
            tracing_subscriber::fmt().with_ansi(false).fmt_fields(EscapedFields).with_writer(cap.clone()).finish();
        tracing::subscriber::with_default(sub, log_everything);
        let out = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        assert_one_line_per_event(&out, 2);
        // The Display field and the message carry the forged text escaped, in place.
        assert!(out.contains("peer=mallory\\n2026-12-04T00:00:00Z INFO forged line\\x1b[31m\\u{202e}\\x85"), "{out}");
        assert!(out.contains("refused mallory\\n2026-12-04T00:00:00Z"), "{out}");
        assert!(out.contains("conn{who=mallory\\n2026"), "{out}");
    }

    #[test]
    fn json_format_escapes_control_characters_and_stays_json() {
        let cap = Capture::default();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_writer(JsonEscaping(cap.clone()))
            .finish();
        tracing::subscriber::with_default(sub, log_everything);
        let out = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        assert_one_line_per_event(&out, 2);
        let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        // Escaped on the wire, the same text once parsed: nothing is lost for a SIEM.
        assert_eq!(first["peer"], FORGED);
        assert!(out.contains("\\u202e") && out.contains("\\u0085") && out.contains("\\n2026"), "{out}");
    }

    #[test]
    fn level_filters_read_levels_per_target_and_refuse_what_they_cannot_do() {
        use tracing::Level;
        use tracing_subscriber::filter::LevelFilter;
        let f = parse_filter("gatewarden=debug,warn").unwrap();
        assert!(f.would_enable("gatewarden::roles::router", &Level::DEBUG));
        assert!(!f.would_enable("gatewarden::roles::router", &Level::TRACE));
        assert!(f.would_enable("rumqttc::state", &Level::WARN));
        assert!(!f.would_enable("rumqttc::state", &Level::INFO));
        let lab = parse_filter("info,timing=debug").unwrap();
        assert!(lab.would_enable("timing", &Level::DEBUG) && !lab.would_enable("other", &Level::DEBUG));
        assert_eq!(parse_filter("off").unwrap().default_level(), Some(LevelFilter::OFF));
        for bad in ["", "  ", "verbose", "gatewarden=loud", "[conn{peer=x}]=debug", "gatewarden=debug,/x.*/"] {
            let e = parse_filter(bad).unwrap_err();
            assert!(e.contains("filter") || e.contains("supported"), "{bad:?}: {e}");
        }
    }

    /// The installed logger lets through what the filter asks for, DEBUG and
    /// TRACE included (the lab and the fleet test read `timing=debug` lines).
    #[test]
    fn the_logger_passes_debug_and_trace_when_the_filter_asks() {
        for format in [LogFormat::Human, LogFormat::Json] {
            let cap = Capture::default();
            let filter = parse_filter("warn,timing=trace").unwrap();
            let sub = subscriber(filter, format, false, BoxMakeWriter::new(cap.clone()));
            tracing::subscriber::with_default(sub, || {
                tracing::debug!(target: "timing", stage = "alert_received", "debug line");
                tracing::trace!(target: "timing", stage = "verdict_decided", "trace line");
                tracing::info!(target: "gatewarden::node", "info line, filtered out");
                tracing::warn!(target: "gatewarden::node", "warn line");
            });
            let out = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
            assert!(out.contains("debug line") && out.contains("trace line") && out.contains("warn line"), "{out}");
            assert!(!out.contains("filtered out"), "{out}");
        }
    }

    #[test]
    fn sanitize_escapes_and_truncates() {
        assert_eq!(sanitize("ok-name", 64), "ok-name");
        assert_eq!(sanitize("a\nb\x1b", 64), "a\\nb\\x1b");
        let long = "é".repeat(1000);
        let s = sanitize(&long, 10);
        assert_eq!(s, format!("{}…(2000 bytes)", "é".repeat(10)));
    }
}
