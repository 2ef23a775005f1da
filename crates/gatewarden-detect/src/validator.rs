//! Checks a candidate model in a child process, so that a `.tflite` that
//! makes tract panic, allocate without bound or spin cannot take the gateway
//! down (issue #14: 51 of 2 400 mutated files aborted the process, and a
//! model declaring batch 2^26 crashed the detector on every start).
//!
//! The child is this binary again (`gatewarden model --validate-worker`): it
//! reads the candidate from stdin, loads it with the batch bound, runs the
//! card's reference inputs and compares them with the card's reference
//! outputs, and prints one JSON line. Its first act is to cap its own
//! address space (`RLIMIT_AS`), CPU time (`RLIMIT_CPU`) and core dumps
//! (`RLIMIT_CORE` = 0) with `setrlimit` (rustix, no `unsafe`), from limits
//! the parent passes as arguments — before it reads the first byte of the
//! candidate, so nothing untrusted runs unlimited (a `prlimit` after spawn
//! would race the child; a `sh -c ulimit` re-exec would need a shell on the
//! image; a `pre_exec` hook would need `unsafe`). The parent kills it
//! after a wall-clock timeout. Only a candidate the child accepted is loaded
//! in process: tract parses the same bytes the same way, and the child proved
//! that this ends in a usable model within the limits.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::model::{HostModel, ModelError};
use gatewarden_proto::messages::MAX_MODEL_BYTES;

/// Validations running at once at most (each is a child process); more
/// are refused as busy rather than queued behind a slow one.
pub const MAX_CONCURRENT: usize = 2;

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Bounds on one validation (from `[detector]` in the config).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Address space of the child, MiB (`detector.model_check_memory_mb`).
    pub memory_mb: u64,
    /// Wall-clock time, seconds; also the child's CPU-time limit (`detector.model_check_timeout_s`).
    pub timeout_s: u64,
    /// Largest batch dimension accepted (`detector.model_max_batch`).
    pub max_batch: usize,
    /// The worker executable; `None`: this binary (`/proc/self/exe`).
    pub exe: Option<PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&crate::config::DetectorConfig::default())
    }
}

impl Limits {
    /// The limits the config asks for.
    pub fn from_config(d: &crate::config::DetectorConfig) -> Limits {
        Limits {
            memory_mb: d.model_check_memory_mb,
            timeout_s: d.model_check_timeout_s,
            max_batch: d.model_max_batch,
            exe: None,
        }
    }
}

/// What the validator found in an accepted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The card's model name.
    pub name: String,
    /// The model's batch dimension.
    pub batch: usize,
    /// Reference rows run.
    pub rows: usize,
    /// Largest difference from the card's reference outputs.
    pub max_err: f32,
}

/// Why a candidate was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    /// The model is invalid, crashed the validator or exceeded a limit (HTTP 422).
    #[error("{0}")]
    Invalid(String),
    /// No verdict: the validator could not run or is busy (HTTP 503; try again).
    #[error("{0}")]
    Unavailable(String),
}

/// The worker's one line of output.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    report: Option<Report>,
}

/// Holds one of the [`MAX_CONCURRENT`] validation slots.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_CONCURRENT).then_some(n + 1))
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The worker's input: the `.tflite` length (u64, little endian), the `.tflite`, the card text.
fn frame(tflite: &[u8], card: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + tflite.len() + card.len());
    v.extend_from_slice(&(tflite.len() as u64).to_le_bytes());
    v.extend_from_slice(tflite);
    v.extend_from_slice(card.as_bytes());
    v
}

/// Checks a candidate in a child process under `limits`.
pub fn validate(tflite: &[u8], card: &str, limits: &Limits) -> Result<Report, Rejected> {
    if tflite.len() + card.len() > MAX_MODEL_BYTES {
        return Err(Rejected::Invalid(format!(
            "model and card are {} bytes; at most {MAX_MODEL_BYTES}",
            tflite.len() + card.len()
        )));
    }
    let _slot = Slot::take().ok_or_else(|| {
        Rejected::Unavailable(format!(
            "{MAX_CONCURRENT} models are being validated already; try again when they are done"
        ))
    })?;
    let exe = match &limits.exe {
        Some(p) => p.clone(),
        // A unit test's own binary is not gatewarden: it would take the arguments for a test filter.
        None if cfg!(test) => {
            return Err(Rejected::Unavailable("no validator binary in unit tests (set Limits::exe)".into()))
        }
        None => validator_exe()?,
    };
    let mut cmd = Command::new(&exe);
    cmd.args(["model", "--validate-worker", "--max-batch", &limits.max_batch.to_string()])
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The child limits itself (`limit_self`) before it reads a byte of the
    // candidate: no `unsafe` pre-exec hook, and nothing untrusted runs unlimited.
    cmd.args([
        "--memory-limit-mb",
        &limits.memory_mb.to_string(),
        "--cpu-limit-s",
        &limits.timeout_s.max(1).to_string(),
    ]);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Rejected::Unavailable(format!("cannot start the model validator ({}): {e}", exe.display())))?;
    // Output is read on threads so a chatty child never blocks on a full pipe.
    let read_capped = |r: Option<Box<dyn Read + Send>>| {
        std::thread::Builder::new().name("model-check-io".into()).spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.by_ref().take(64 * 1024).read_to_end(&mut buf);
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
            buf
        })
    };
    let out = read_capped(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = read_capped(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let input = frame(tflite, card);
    if let Some(mut stdin) = child.stdin.take() {
        // A child that died early closes its end (EPIPE); its exit status says why.
        let _ = stdin.write_all(&input);
    }
    let deadline = started + Duration::from_secs(limits.timeout_s.max(1));
    let mut pause = Duration::from_millis(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Rejected::Unavailable(format!("waiting for the model validator: {e}")));
            }
        }
    };
    let stdout = out.ok().and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.ok().and_then(|h| h.join().ok()).unwrap_or_default();
    let elapsed = started.elapsed();
    let Some(status) = status else {
        return Err(Rejected::Invalid(format!(
            "validating the model took longer than {} s (detector.model_check_timeout_s); the validator was stopped",
            limits.timeout_s
        )));
    };
    tracing::debug!(?status, ms = elapsed.as_millis() as u64, "model validator finished");
    interpret(status, &stdout, &stderr, limits)
}

/// The first line of the child's stderr that says something, cleaned for a log or a page.
fn excerpt(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    // A panic's first line says where, the second what ("assertion failed: idx < self.len()").
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note:"))
        .take_while(|l| !l.starts_with("stack backtrace"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    line.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect()
}

fn interpret(
    status: std::process::ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
    limits: &Limits,
) -> Result<Report, Rejected> {
    use std::os::unix::process::ExitStatusExt;
    let answer = std::str::from_utf8(stdout)
        .ok()
        .and_then(|s| s.lines().rev().find(|l| l.starts_with('{')))
        .and_then(|l| serde_json::from_str::<Answer>(l).ok());
    match answer {
        Some(Answer { ok: true, report: Some(r), .. }) if status.success() => return Ok(r),
        Some(Answer { ok: false, reason, .. }) if !reason.is_empty() => return Err(Rejected::Invalid(reason)),
        _ => {}
    }
    let why = excerpt(stderr);
    let oom = String::from_utf8_lossy(stderr).contains("memory allocation of");
    if oom {
        return Err(Rejected::Invalid(format!(
            "the model needs more than the validator's {} MiB of memory (detector.model_check_memory_mb): {why}",
            limits.memory_mb
        )));
    }
    if let Some(sig) = status.signal() {
        if sig == libc::SIGXCPU || sig == libc::SIGKILL {
            return Err(Rejected::Invalid(format!(
                "the model used more than {} s of CPU in the validator (detector.model_check_timeout_s)",
                limits.timeout_s
            )));
        }
        let name = match sig {
            libc::SIGABRT => " SIGABRT",
            libc::SIGSEGV => " SIGSEGV",
            libc::SIGBUS => " SIGBUS",
            libc::SIGILL => " SIGILL",
            libc::SIGFPE => " SIGFPE",
            _ => "",
        };
        let tail = if why.is_empty() { String::new() } else { format!(": {why}") };
        return Err(Rejected::Invalid(format!("the model crashed the validator (signal {sig}{name}){tail}")));
    }
    if status.code() == Some(101) {
        // Builds that unwind: a panic exits with 101.
        return Err(Rejected::Invalid(format!("the model crashed the validator (panic): {why}")));
    }
    Err(Rejected::Unavailable(format!(
        "the model validator failed ({status}) without an answer: {}; check that `gatewarden model --validate-worker` runs on this node",
        if why.is_empty() { "no message" } else { &why }
    )))
}

/// Checks a candidate in this process (the worker's job; never call it on
/// untrusted bytes outside the worker).
pub fn check_here(tflite: &[u8], card: &str, max_batch: usize) -> Result<Report, String> {
    // The card is plain JSON; its hash is checked before tract sees a byte.
    let parsed = crate::model::parse_card(card, "candidate").map_err(|e| e.to_string())?;
    let digest = sha2::Sha256::digest(tflite);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    match parsed.tflite_sha256.as_deref().map(str::trim) {
        None => {
            return Err("the model card has no \"tflite_sha256\" naming the .tflite it describes; re-export it with tools/train/train.py".into())
        }
        Some(h) if !h.eq_ignore_ascii_case(&hex) => {
            return Err(format!(
                "the .tflite (sha256 {hex}) is not the file the card describes (tflite_sha256 {}); upload the pair train.py wrote together",
                h.chars().take(64).collect::<String>()
            ))
        }
        Some(_) => {}
    }
    let model = HostModel::from_parts_bounded(tflite, card, "candidate", max_batch).map_err(|e| e.to_string())?;
    let max_err = model.check_reference().map_err(|e| e.to_string())?;
    let rows = model.card().reference.as_ref().map_or(0, |r| r.inputs.len());
    Ok(Report { name: model.card().name.clone(), batch: model.batch(), rows, max_err })
}

/// The gatewarden binary that serves as the validator's child: this process
/// when it is gatewarden, else (a program linking the library: the
/// integration tests, the benches) a `gatewarden` beside it or one directory
/// up, where cargo puts the binary next to `deps/`.
fn validator_exe() -> Result<PathBuf, Rejected> {
    let me = std::env::current_exe()
        .map_err(|e| Rejected::Unavailable(format!("cannot find this binary to run the model validator: {e}")))?;
    if me.file_stem().is_some_and(|n| n == "gatewarden") {
        return Ok(me);
    }
    let dir = me.parent();
    [dir.map(|d| d.join("gatewarden")), dir.and_then(|d| d.parent()).map(|d| d.join("gatewarden"))]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Rejected::Unavailable(format!(
                "{} is not gatewarden and no gatewarden binary is beside it: the model validator needs one",
                me.display()
            ))
        })
}

/// Caps this process's address space and CPU time and turns off core
/// dumps (setrlimit through rustix's safe wrapper). The validator's child
/// calls it first, before it reads the candidate.
pub fn limit_self(memory_mb: u64, cpu_s: u64) -> std::io::Result<()> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let mem = memory_mb.saturating_mul(1024 * 1024);
    let cpu = cpu_s.max(1);
    for (res, soft, hard) in [(Resource::As, mem, mem), (Resource::Cpu, cpu, cpu + 1), (Resource::Core, 0, 0)] {
        setrlimit(res, Rlimit { current: Some(soft), maximum: Some(hard) }).map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// `gatewarden model --validate-worker`: limits itself, reads a framed
/// candidate from stdin, prints one JSON line, exits 0 (accepted) or 2 (refused).
pub fn worker_main(max_batch: usize, memory_mb: u64, cpu_s: u64) -> i32 {
    if let Err(e) = limit_self(memory_mb, cpu_s) {
        let answer = Answer { ok: false, reason: format!("the validator could not limit itself: {e}"), report: None };
        println!("{}", serde_json::to_string(&answer).unwrap_or_else(|_| "{\"ok\":false}".into()));
        return 2;
    }
    let mut input = Vec::new();
    let read = std::io::stdin().lock().take(MAX_MODEL_BYTES as u64 + 9).read_to_end(&mut input);
    let result = match read {
        Err(e) => Err(format!("reading the candidate from stdin: {e}")),
        Ok(_) if input.len() < 8 => Err("the candidate is shorter than its length prefix".into()),
        Ok(_) => {
            let (len, rest) = input.split_at(8);
            let len = u64::from_le_bytes(len.try_into().unwrap_or([0; 8]));
            match usize::try_from(len).ok().filter(|l| *l <= rest.len()) {
                None => Err(format!("the .tflite length {len} exceeds the {} bytes sent", rest.len())),
                Some(l) => {
                    let (tflite, card) = rest.split_at(l);
                    match std::str::from_utf8(card) {
                        Err(e) => Err(format!("the model card is not UTF-8: {e}")),
                        Ok(card) => check_here(tflite, card, max_batch),
                    }
                }
            }
        }
    };
    let (code, answer) = match result {
        Ok(r) => (0, Answer { ok: true, reason: String::new(), report: Some(r) }),
        Err(reason) => (2, Answer { ok: false, reason, report: None }),
    };
    println!("{}", serde_json::to_string(&answer).unwrap_or_else(|_| "{\"ok\":false}".into()));
    code
}

/// Reads `path` and the card beside it, checks them in the validator's child
/// process ([`validate`]) and only then loads them here.
pub fn load_checked(path: &std::path::Path, limits: &Limits) -> Result<HostModel, ModelError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.into(), source })?;
    let card_path = HostModel::card_path(path);
    let card =
        std::fs::read_to_string(&card_path).map_err(|source| ModelError::Read { path: card_path.clone(), source })?;
    validate(&bytes, &card, limits).map_err(|e| match e {
        Rejected::Invalid(r) => ModelError::Refused(origin.clone(), r),
        Rejected::Unavailable(r) => ModelError::Unchecked(origin.clone(), r),
    })?;
    HostModel::from_parts_bounded(&bytes, &card, &origin, limits.max_batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DEFAULT_CARD, DEFAULT_TFLITE};

    #[test]
    fn the_embedded_model_passes_its_own_reference() {
        let r = check_here(DEFAULT_TFLITE, DEFAULT_CARD, 4096).unwrap();
        assert!(r.rows >= 8 && r.max_err <= 1e-4, "{r:?}");
    }

    #[test]
    fn a_card_whose_reference_disagrees_or_is_missing_is_refused() {
        let mut card: serde_json::Value = serde_json::from_str(DEFAULT_CARD).unwrap();
        card["reference"]["outputs"][3][0] = serde_json::json!(0.5);
        card["reference"]["outputs"][3][1] = serde_json::json!(0.25);
        card["reference"]["outputs"][3][2] = serde_json::json!(0.25);
        let e = check_here(DEFAULT_TFLITE, &card.to_string(), 4096).unwrap_err();
        assert!(e.contains("reference row 3") && e.contains("does not match its card"), "{e}");
        card.as_object_mut().unwrap().remove("reference");
        let e = check_here(DEFAULT_TFLITE, &card.to_string(), 4096).unwrap_err();
        assert!(e.contains("no \"reference\""), "{e}");
    }

    #[test]
    fn a_tflite_that_is_not_the_cards_is_refused_before_tract_reads_it() {
        let mut flipped = DEFAULT_TFLITE.to_vec();
        flipped[4000] ^= 1;
        let e = check_here(&flipped, DEFAULT_CARD, 4096).unwrap_err();
        assert!(e.contains("is not the file the card describes"), "{e}");
        let mut card: serde_json::Value = serde_json::from_str(DEFAULT_CARD).unwrap();
        card.as_object_mut().unwrap().remove("tflite_sha256");
        let e = check_here(DEFAULT_TFLITE, &card.to_string(), 4096).unwrap_err();
        assert!(e.contains("no \"tflite_sha256\""), "{e}");
    }

    #[test]
    fn a_batch_above_the_bound_is_refused_before_tract_plans_it() {
        // The embedded model's batch is 64.
        let e = check_here(DEFAULT_TFLITE, DEFAULT_CARD, 32).unwrap_err();
        assert!(e.contains("batch dimension 64") && e.contains("detector.model_max_batch"), "{e}");
    }

    #[test]
    fn crashes_limits_and_refusals_become_reasons() {
        use std::os::unix::process::ExitStatusExt;
        let l = Limits::default();
        let st = |raw| std::process::ExitStatus::from_raw(raw);
        // Killed by SIGABRT (a panic under panic = "abort").
        let e = interpret(st(libc::SIGABRT), b"", b"thread 'main' panicked at x.rs:1:1:\nboom\n", &l).unwrap_err();
        assert!(
            matches!(&e, Rejected::Invalid(m) if m.contains("crashed the validator (signal 6 SIGABRT)") && m.contains("panicked")),
            "{e}"
        );
        let e = interpret(st(libc::SIGABRT), b"", b"memory allocation of 8589934592 bytes failed\n", &l).unwrap_err();
        assert!(e.to_string().contains("model_check_memory_mb"), "{e}");
        let e = interpret(st(libc::SIGXCPU), b"", b"", &l).unwrap_err();
        assert!(e.to_string().contains("s of CPU"), "{e}");
        let e = interpret(st(2 << 8), b"{\"ok\":false,\"reason\":\"bad shape\"}\n", b"", &l).unwrap_err();
        assert_eq!(e, Rejected::Invalid("bad shape".into()));
        let e = interpret(st(1 << 8), b"", b"", &l).unwrap_err();
        assert!(matches!(e, Rejected::Unavailable(_)), "{e}");
    }
}
