//! The log level filter (`log.level`, `RUST_LOG`): read here, where both
//! the config's validation and the logger's set-up reach it without
//! importing each other.

use tracing_subscriber::filter::Targets;

/// Reads a level filter: `info`, or per-target levels such as
/// `gatewarden=debug,warn` (`target=level` pairs and one bare default level,
/// comma-separated; a target matches every module path it prefixes).
/// `tracing-subscriber`'s `Targets` rather than its `EnvFilter`: the span and
/// field directives `EnvFilter` adds need a regex engine, which cost the
/// appliance binary more than 300 KB (issue #16) for a feature nobody used.
pub fn parse_filter(s: &str) -> Result<Targets, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty filter".into());
    }
    if s.contains(['[', '{', '/']) {
        return Err(format!(
            "{s:?}: span and field filters ([span{{field}}], /regex/) are not supported; use levels per target such as \"gatewarden=debug,warn\""
        ));
    }
    let help = || format!("{s:?} is not a level filter; use e.g. \"info\" or \"gatewarden=debug,warn\"");
    // `Targets` reads a bare word as a target at TRACE, so a mistyped level
    // ("verbose") would silently log nothing: every part must be a level or
    // `target=level`.
    for part in s.split(',') {
        let level =
            part.rsplit_once('=').map_or(part, |(target, level)| if target.trim().is_empty() { "" } else { level });
        if level.trim().parse::<tracing_subscriber::filter::LevelFilter>().is_err() {
            return Err(format!("{}: {part:?} is not a level (error, warn, info, debug, trace, off)", help()));
        }
    }
    s.parse::<Targets>().map_err(|e| format!("{} ({e})", help()))
}
