//! Hostile input: model uploads (issue #14). An administrator's token (or a
//! stolen one) uploads thousands of mutated `.tflite` files, made from the
//! shipped model with a seeded RNG: every one that is not a usable model is
//! refused with a reason (422), the gateway never crashes, and the shipped
//! model uploaded afterwards is still accepted (the refusals were not
//! blanket). A poisoned model left in `detector.model_store` does not stop
//! the node from starting: it falls back to the embedded model and says so.
//!
//! Before the fix, 51 of 2 400 such files aborted the process inside tract,
//! and a model declaring batch 2^26 was stored and then crashed the detector
//! at every start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64ct::Encoding;
use serde_json::Value;
use sha2::Digest;

use crate::common::{bin, free_port, request, root, wait_for, wait_http_ok, Guard};

/// Byte offsets of the shape vectors (`[len, dims…]`, i32 little endian) in
/// models/host-mlp.tflite that tract reads: the input `[64, 30]`, the three
/// weight matrices and the three bias vectors. (Intermediate and output
/// tensors declare shapes too, but tract infers those, so patching them makes
/// no different model.) Checked against the file by [`shape_vectors`].
const INPUT_SHAPE: usize = 8328;
const WEIGHT_SHAPES: [(usize, [i32; 2]); 3] = [(7900, [32, 30]), (7976, [16, 32]), (8052, [3, 16])];
const BIAS_SHAPES: [(usize, i32); 3] = [(7828, 32), (8236, 16), (8132, 3)];
/// Every `[64, x]` shape vector: patched together they make a consistent model of another batch size.
const BATCH_SHAPES: [usize; 5] = [7336, 7448, 7588, 7724, 8328];

/// Batch sizes no gateway should accept (above `detector.model_max_batch`, or nonsense).
const ABSURD_BATCH: [i32; 9] = [0, -1, -64, 4097, 8192, 100_000, 1 << 20, 1 << 26, i32::MAX];

/// xorshift64*: seeded, so a failure names a reproducible mutant.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn shipped() -> (Vec<u8>, Value) {
    let tflite = std::fs::read(root().join("models/host-mlp.tflite")).unwrap();
    let card =
        serde_json::from_str(&std::fs::read_to_string(root().join("models/host-mlp.card.json")).unwrap()).unwrap();
    (tflite, card)
}

fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn put_i32(b: &mut [u8], off: usize, v: i32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Fails when the shipped model was re-exported and the offsets above moved.
fn shape_vectors(t: &[u8]) {
    let vec2 = |off: usize| (i32_at(t, off), i32_at(t, off + 4), i32_at(t, off + 8));
    assert_eq!(vec2(INPUT_SHAPE), (2, 64, 30), "input shape offset moved: update tests/hostile/model.rs");
    for (off, [a, b]) in WEIGHT_SHAPES {
        assert_eq!(vec2(off), (2, a, b), "weight shape at {off} moved");
    }
    for (off, n) in BIAS_SHAPES {
        assert_eq!((i32_at(t, off), i32_at(t, off + 4)), (1, n), "bias shape at {off} moved");
    }
    for off in BATCH_SHAPES {
        assert_eq!(vec2(off).0, 2);
        assert_eq!(vec2(off).1, 64);
    }
}

/// The card for `tflite`: what an attacker who writes both files sends
/// (`tflite_sha256` recomputed, so the bytes reach the model parser).
fn rehashed(card: &Value, tflite: &[u8]) -> Value {
    let mut c = card.clone();
    let hex: String = sha2::Sha256::digest(tflite).iter().map(|b| format!("{b:02x}")).collect();
    c["tflite_sha256"] = Value::from(hex);
    c
}

/// One mutant: what it is (for a failure message), the file, the card, and
/// whether it must be refused (false: random corruption an attacker paired
/// with a matching card; it may happen to be a working model).
struct Mutant {
    what: String,
    tflite: Vec<u8>,
    card: Value,
    must_refuse: bool,
}

/// `n` mutants of the shipped model, a seeded mix of every kind.
fn mutants(seed: u64, n: usize) -> Vec<Mutant> {
    let (t, card) = shipped();
    shape_vectors(&t);
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let m = match i % 6 {
            // Truncated, with the card rehashed (reaches tract) or as shipped.
            0 => {
                let len = rng.below(t.len());
                let b = t[..len].to_vec();
                let c = if rng.below(4) == 0 { card.clone() } else { rehashed(&card, &b) };
                Mutant { what: format!("truncated to {len} bytes"), tflite: b, card: c, must_refuse: true }
            }
            // Bit flips with the shipped card: corruption in transit or at rest.
            1 => {
                let mut b = t.clone();
                let flips = 1 + rng.below(8);
                for _ in 0..flips {
                    let p = rng.below(b.len());
                    b[p] ^= 1 << rng.below(8);
                }
                if b == t {
                    b[0] ^= 0x80;
                }
                Mutant {
                    what: format!("{flips} bit flips, shipped card"),
                    tflite: b,
                    card: card.clone(),
                    must_refuse: true,
                }
            }
            // An absurd dimension in a shape tract reads (input, weights, biases).
            2 | 3 => {
                let mut b = t.clone();
                let (off, orig) = match rng.below(7) {
                    0 => (INPUT_SHAPE + 4, 64),
                    1 => (INPUT_SHAPE + 8, 30),
                    k @ 2..=4 => {
                        let (o, dims) = WEIGHT_SHAPES[k - 2];
                        let d = rng.below(2);
                        (o + 4 + 4 * d, dims[d])
                    }
                    k => (BIAS_SHAPES[k - 5].0 + 4, BIAS_SHAPES[k - 5].1),
                };
                let v = loop {
                    let v = match rng.below(4) {
                        0 => ABSURD_BATCH[rng.below(ABSURD_BATCH.len())],
                        1 => -(rng.below(1000) as i32),
                        2 => rng.next() as i32,
                        _ => rng.below(200) as i32,
                    };
                    // Another input batch size of 1..=4096 is a consistent, usable model, not an absurd one.
                    let usable_batch = off == INPUT_SHAPE + 4 && (1..=4096).contains(&v);
                    if v != orig && !usable_batch {
                        break v;
                    }
                };
                put_i32(&mut b, off, v);
                let c = rehashed(&card, &b);
                Mutant { what: format!("shape value at {off}: {orig} -> {v}"), tflite: b, card: c, must_refuse: true }
            }
            // A consistent model with an absurd batch (2^26 is the crash loop).
            4 => {
                let mut b = t.clone();
                let batch = ABSURD_BATCH[rng.below(ABSURD_BATCH.len())];
                for off in BATCH_SHAPES {
                    put_i32(&mut b, off + 4, batch);
                }
                let c = rehashed(&card, &b);
                Mutant { what: format!("batch {batch}"), tflite: b, card: c, must_refuse: true }
            }
            // Bit flips with a matching card: tract parses random corruption (this is what panicked).
            _ => {
                let mut b = t.clone();
                let flips = 1 + rng.below(4);
                for _ in 0..flips {
                    let p = rng.below(b.len());
                    b[p] ^= 1 << rng.below(8);
                }
                let c = rehashed(&card, &b);
                Mutant { what: format!("{flips} bit flips, rehashed card"), tflite: b, card: c, must_refuse: false }
            }
        };
        out.push(m);
    }
    out
}

struct Gateway {
    gw: Guard,
    addr: String,
    admin: String,
    viewer: String,
}

fn config(dir: &Path, addr: &str, store: &Path) -> PathBuf {
    let p = dir.join("gatewarden.toml");
    std::fs::write(
        &p,
        format!(
            "node_id = \"mon\"\n[http]\nlisten = \"{addr}\"\nrate_limit_per_s = 100000\nrate_limit_burst = 100000\n\
             [detector]\nmodel_store = \"{}\"\n[monitor]\ndata_dir = \"{}\"\n",
            store.display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    p
}

fn token(cfg: &Path, role: &str) -> String {
    let out = Command::new(bin())
        .args(["token", "issue", "--role", role, "--ttl", "2h", "--sub", role, "-c"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "token issue: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `gatewarden run --role all` (monitor + detector in one process) with a model store.
fn start(dir: &Path, store: &Path) -> Gateway {
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(dir, &addr, store);
    let gw = Guard::spawn(
        Command::new(bin())
            .args(["run", "--role", "all", "-c"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("gatewarden.log")).unwrap()),
    );
    assert!(wait_http_ok(&addr, "/healthz", Duration::from_secs(30)), "the gateway did not start");
    Gateway { gw, admin: token(&cfg, "admin"), viewer: token(&cfg, "viewer"), addr }
}

impl Gateway {
    fn upload(&self, tflite: &[u8], card: &Value) -> (u16, String) {
        let body =
            serde_json::json!({"tflite_base64": base64ct::Base64::encode_string(tflite), "card": card}).to_string();
        let (code, _, body) = request("POST", &self.addr, "/api/model", Some(&self.admin), Some(&body))
            .unwrap_or_else(|e| panic!("the gateway stopped answering uploads: {e}"));
        (code, body)
    }

    fn get(&self, path: &str) -> Value {
        let (_, _, body) = request("GET", &self.addr, path, Some(&self.viewer), None).unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
    }

    fn alive(&mut self) -> bool {
        self.gw.child().try_wait().unwrap().is_none()
    }
}

/// Uploads `n` mutants, then the shipped model; returns a summary line.
fn upload_mutants(seed: u64, n: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models");
    let mut gw = start(dir.path(), &store);
    let started = Instant::now();
    let (mut refused, mut accepted, mut crashes) = (0usize, 0usize, 0usize);
    for (i, m) in mutants(seed, n).into_iter().enumerate() {
        let (code, body) = gw.upload(&m.tflite, &m.card);
        let reason = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["error"].as_str().map(String::from));
        match code {
            422 => {
                let reason = reason.unwrap_or_else(|| panic!("mutant {i} ({}): 422 without a reason: {body}", m.what));
                assert!(reason.len() > 20, "mutant {i} ({}): a reason that says nothing: {reason}", m.what);
                crashes += usize::from(reason.contains("crashed the validator"));
                refused += 1;
            }
            200 if !m.must_refuse => accepted += 1,
            _ => panic!("mutant {i} ({}): {code} {body}", m.what),
        }
        if i % 200 == 199 {
            assert!(gw.alive(), "the gateway died after mutant {i} ({})", m.what);
        }
    }
    let took = started.elapsed();
    assert!(gw.alive(), "the gateway died");
    // Random corruption a matching card vouches for reaches tract; some of it panics there.
    assert!(crashes > 0 || n < 600, "no mutant crashed the validator: tract was never stressed");
    // The refusals were not blanket: the shipped model is accepted and runs.
    let (t, card) = shipped();
    let mut renamed = card.clone();
    renamed["name"] = Value::from("host-mlp-after-the-storm");
    let (code, body) = gw.upload(&t, &renamed);
    assert_eq!(code, 200, "the shipped model after {n} mutants: {body}");
    let mut last = Value::Null;
    let running = crate::common::wait_until(Duration::from_secs(30), || {
        last = gw.get("/api/model");
        last["model"]["name"] == "host-mlp-after-the-storm" && last["upload"]["results"]["mon"]["ok"] == true
    });
    assert!(running, "the detector runs the shipped model again: {last}");
    assert!(gw.alive());
    let summary = format!(
        "{n} mutants (seed {seed:#x}) in {:.1} s ({:.1} ms each): {refused} refused with a reason ({crashes} crashed the validator), \
         {accepted} working models from random flips accepted",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / n as f64
    );
    eprintln!("{summary}");
    summary
}

#[test]
fn mutated_model_uploads_are_refused_with_a_reason_and_the_gateway_lives() {
    upload_mutants(0x6a7e_3a9d_5eed_0014, 1200);
}

/// All 2 400 (the count). About a minute here with a debug build;
/// `cargo test --test hostile model:: -- --ignored`.
#[test]
#[ignore]
fn all_2400_mutated_model_uploads() {
    upload_mutants(0x6a7e_3a9d_5eed_0014, 2400);
}

/// Writes `tflite` and a card for it as the stored upload in `store`.
fn poison(store: &Path, tflite: &[u8]) {
    let (_, card) = shipped();
    let mut card = rehashed(&card, tflite);
    card["name"] = Value::from("poisoned");
    std::fs::create_dir_all(store).unwrap();
    std::fs::write(store.join("uploaded.tflite"), tflite).unwrap();
    std::fs::write(store.join("uploaded.card.json"), card.to_string()).unwrap();
}

fn falls_back(poisoned: &[u8], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models");
    poison(&store, poisoned);
    let mut gw = start(dir.path(), &store);
    assert!(gw.alive());
    let model = gw.get("/api/model");
    assert_eq!(model["model"]["name"], "gatewarden-host-mlp", "the embedded model runs: {model}");
    let mut alerts = Value::Null;
    wait_for("a system alert about the stored model", Duration::from_secs(20), || {
        alerts = gw.get("/api/alerts?kind=system");
        alerts.to_string().contains("failed validation at start")
    });
    let text = alerts.to_string();
    assert!(text.contains("the embedded model") && text.contains(expect), "{text}");
    // Set aside, not deleted: the next start neither crashes nor alerts again.
    assert!(!store.join("uploaded.tflite").exists());
    assert_eq!(std::fs::read(store.join("uploaded.tflite.rejected")).unwrap(), poisoned);
    assert!(text.contains("uploaded.tflite.rejected"), "the alert says where it went: {text}");
    drop(gw);
    let mut gw = start(dir.path(), &store);
    assert!(gw.alive());
    assert_eq!(gw.get("/api/model")["model"]["name"], "gatewarden-host-mlp");
}

#[test]
fn a_stored_model_with_batch_2_pow_26_falls_back_to_the_embedded_model_with_an_alert() {
    let (mut t, _) = shipped();
    for off in BATCH_SHAPES {
        put_i32(&mut t, off + 4, 1 << 26);
    }
    falls_back(&t, "batch dimension 67108864");
}

#[test]
fn a_stored_model_that_panics_the_parser_falls_back_to_the_embedded_model_with_an_alert() {
    // One bit of a flatbuffer offset: tract's flatbuffers reader asserts (a panic, an abort in release).
    let (mut t, _) = shipped();
    t[6909] ^= 1;
    falls_back(&t, "crashed the validator");
}

#[test]
fn the_validators_memory_limit_holds_when_the_batch_bound_is_lifted() {
    // Batch 2^26 with the bound lifted (a hidden flag of `gatewarden model`),
    // planned padded to that batch as a graph that hard-codes it would be:
    // tract asks for 8 GB, the child's RLIMIT_AS (512 MiB by default) refuses
    // it, the child aborts, and the parent names the limit.
    let (mut t, card) = shipped();
    for off in BATCH_SHAPES {
        put_i32(&mut t, off + 4, 1 << 26);
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("huge.tflite");
    std::fs::write(&model, &t).unwrap();
    std::fs::write(dir.path().join("huge.card.json"), rehashed(&card, &t).to_string()).unwrap();
    let lifted = || {
        let mut c = Command::new(bin());
        c.arg("model").arg(&model).args(["--max-batch", "134217728"]);
        c
    };
    let out = lifted().env(gatewarden::detect::model::PLAN_ENV, "padded").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs more than the validator's 512 MiB") && err.contains("model_check_memory_mb"), "{err}");
    // Planned for the rows it is given (what an MLP gets), the same file costs
    // only what its reference rows need, inside the same limit.
    let out = lifted().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // With the bound in place it never gets that far.
    let out = Command::new(bin()).arg("model").arg(&model).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch dimension 67108864 exceeds the limit of 4096"), "{err}");
}
