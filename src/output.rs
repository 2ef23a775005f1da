//! How every command reports: its result as JSON with `--json`, and its
//! errors and warnings on stderr, as `error: ...` lines for people or as one
//! JSON object each for scripts, with the same exit codes either way.

use crate::config::ConfigError;
use crate::exit::{EXIT_BAD_INPUT, EXIT_FAILURE};

/// Whether `--json` was given: results as JSON on stdout, errors as one JSON object on stderr.
pub(crate) static JSON_MODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this run prints JSON (`--json` anywhere on the command line).
pub(crate) fn json_mode() -> bool {
    JSON_MODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reports an error on stderr and returns `code`: `error: ...` for people, or with `--json` one
/// object `{"error": "...", "exit_code": N}` (plus `"hint"` when there is advice apart from the
/// message) that a script can parse; the exit code is the same either way.
pub(crate) fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    fail_with(code, message, None, serde_json::Map::new())
}

/// [`fail`] with advice kept apart (`hint`) and extra fields for the JSON form.
pub(crate) fn fail_with(
    code: i32,
    message: impl std::fmt::Display,
    hint: Option<&str>,
    extra: serde_json::Map<String, serde_json::Value>,
) -> i32 {
    if json_mode() {
        let mut o = serde_json::Map::new();
        o.insert("error".into(), message.to_string().into());
        if let Some(h) = hint {
            o.insert("hint".into(), h.into());
        }
        o.insert("exit_code".into(), code.into());
        o.extend(extra);
        eprintln!("{}", serde_json::Value::Object(o));
    } else {
        match hint {
            Some(h) => eprintln!("error: {message}\n{h}"),
            None => eprintln!("error: {message}"),
        }
    }
    code
}

/// A warning on stderr: `warning: ...`, or with `--json` one line `{"warning": "..."}`.
pub(crate) fn warn(message: impl std::fmt::Display) {
    if json_mode() {
        eprintln!("{}", serde_json::json!({ "warning": message.to_string() }));
    } else {
        eprintln!("warning: {message}");
    }
}

/// Prints `v` on stdout as pretty JSON (the result of a command run with `--json`).
pub(crate) fn print_json(v: impl serde::Serialize) -> i32 {
    match serde_json::to_string_pretty(&v) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => fail(EXIT_FAILURE, format!("cannot encode the result as JSON: {e}")),
    }
}

/// A config error for `fail_with`: with `--json`, each invalid value as `problems[]`.
pub(crate) fn config_fail(e: ConfigError) -> i32 {
    let mut extra = serde_json::Map::new();
    if let ConfigError::Invalid { errors, path } = &e {
        extra.insert("file".into(), path.display().to_string().into());
        extra.insert(
            "problems".into(),
            errors.iter().map(|v| serde_json::json!({"key": v.key, "message": v.to_string()})).collect(),
        );
    }
    fail_with(EXIT_BAD_INPUT, e, None, extra)
}
