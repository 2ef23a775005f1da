//! The layering of issue #16 as a test: `tools/check-layers.py` passes on
//! the tree, and fails on a copy of it with an upward crate edge or a module
//! cycle planted (so a check that passes everything cannot hide here).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(dir: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(root().join("tools/check-layers.py"))
        .current_dir(dir)
        .output()
        .expect("python3 runs tools/check-layers.py (tools/test.sh installs it)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The manifests and sources `cargo metadata --no-deps` and the check read.
fn copy_tree(to: &Path) {
    let status = Command::new("cp")
        .args(["-r", "Cargo.toml", "Cargo.lock", "src", "crates", "benches", "tests"])
        .arg(to)
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_tree_keeps_its_layers() {
    let (ok, out) = check(&root());
    assert!(ok, "{out}");
    assert!(out.contains("gatewarden-core: ") && out.contains("no cycle"), "{out}");
}

#[test]
fn an_upward_crate_edge_fails_the_check() {
    let d = tempfile::tempdir().unwrap();
    copy_tree(d.path());
    // A "secure" crate that reaches up into the wire types: secure may use core only.
    let c = d.path().join("crates/gatewarden-secure");
    if !c.exists() {
        std::fs::create_dir_all(c.join("src")).unwrap();
        std::fs::write(c.join("src/lib.rs"), "#![forbid(unsafe_code)]\n").unwrap();
    }
    let manifest = c.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|_| {
        "[package]\nname = \"gatewarden-secure\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n".into()
    });
    std::fs::write(
        &manifest,
        text.replacen("[dependencies]\n", "[dependencies]\ngatewarden-proto = { path = \"../gatewarden-proto\" }\n", 1),
    )
    .unwrap();
    let (ok, out) = check(d.path());
    assert!(!ok, "{out}");
    assert!(out.contains("gatewarden-secure depends on gatewarden-proto"), "{out}");
}

#[test]
fn a_module_cycle_inside_a_crate_fails_the_check() {
    let d = tempfile::tempdir().unwrap();
    copy_tree(d.path());
    let src = d.path().join("crates/gatewarden-core/src");
    std::fs::write(src.join("ping.rs"), "pub fn ping() { crate::pong::pong() }\n").unwrap();
    std::fs::write(src.join("pong.rs"), "use crate::ping;\npub fn pong() {}\npub fn back() { ping::ping() }\n")
        .unwrap();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    std::fs::write(src.join("lib.rs"), format!("{lib}pub mod ping;\npub mod pong;\n")).unwrap();
    let (ok, out) = check(d.path());
    assert!(!ok, "{out}");
    assert!(out.contains("gatewarden-core: modules import each other: ping <-> pong"), "{out}");
}
