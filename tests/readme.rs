//! The README's commands as written: every fenced block marked ```` ```sh tested ````
//! runs in a fresh directory and network namespace, as root and as an unprivileged
//! user, with `gatewarden` on PATH and the real Mosquitto. Its last command may
//! stay in the foreground (a broker): the block passes when it is still running
//! after a client has connected through it, or when it ends with status 0.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The blocks marked `sh tested` in README.md.
fn tested_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh tested") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    assert!(current.is_none(), "an unclosed block in README.md");
    blocks
}

fn need(tool: &str, pkg: &str) -> bool {
    if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    let msg = format!("{tool} is not installed (apt-get install {pkg}; tools/test.sh does this as root)");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}: CI must run the README's commands");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Runs `block` in `dir` inside a new network namespace (loopback up), as `uid`
/// (0: root), while a client tries to connect to the broker the block starts.
/// Returns (block's status or "running", output).
fn run_block(block: &str, dir: &Path, uid: u32) -> (String, String) {
    let path_dir = dir.join("bin");
    std::fs::create_dir_all(&path_dir).unwrap();
    std::os::unix::fs::symlink(bin(), path_dir.join("gatewarden")).unwrap();
    std::fs::write(dir.join("block.sh"), block).unwrap();
    // The client: the first node certificate the block issued, against the broker's port.
    let probe = r#"
for i in $(seq 1 100); do
  if [ -f pki/nodes/router-1.key ] && mosquitto_pub -h localhost -p 8883 --cafile pki/ca.crt \
       --cert pki/nodes/router-1.crt --key pki/nodes/router-1.key -t gatewarden/v1/router-1/probe -m x 2>probe.err; then
    echo PROBE_CONNECTED; break
  fi
  sleep 0.2
done
"#;
    std::fs::write(dir.join("probe.sh"), probe).unwrap();
    let user = if uid == 0 { String::new() } else { format!("setpriv --reuid {uid} --regid {uid} --clear-groups ") };
    let script = format!(
        "ip link set lo up\ncd {dir}\nexport PATH={bin}:$PATH HOME={dir}\n\
         {user}timeout -s TERM 60 bash -e block.sh > block.out 2>&1 &\nT=$!\n\
         {user}bash probe.sh\n\
         if kill -0 $T 2>/dev/null; then echo BLOCK_RUNNING; kill -TERM $T; wait $T; else wait $T; echo BLOCK_EXIT=$?; fi\n\
         cat block.out; cat probe.err 2>/dev/null\n",
        dir = dir.display(),
        bin = path_dir.display(),
    );
    let out = Command::new("unshare").args(["-n", "bash", "-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let status = if text.contains("BLOCK_RUNNING") {
        "running".to_string()
    } else {
        text.lines().find_map(|l| l.strip_prefix("BLOCK_EXIT=")).unwrap_or("?").to_string()
    };
    (status, text)
}

#[test]
fn the_readme_several_nodes_quick_start_runs_as_written_as_root_and_as_a_user() {
    if !netns::require_root("the README quick start") || !need("mosquitto", "mosquitto") {
        return;
    }
    if !need("mosquitto_pub", "mosquitto-clients") || !need("setpriv", "util-linux") {
        return;
    }
    let blocks = tested_blocks();
    assert!(!blocks.is_empty(), "no ```sh tested block in README.md");
    assert!(blocks.iter().any(|b| b.contains("mosquitto -c pki/mosquitto/mosquitto.conf")), "{blocks:?}");
    for block in &blocks {
        for (who, uid) in [("root", 0u32), ("nobody", 65534)] {
            let d = tempfile::tempdir().unwrap();
            std::os::unix::fs::chown(d.path(), Some(uid), Some(uid)).unwrap();
            let (status, out) = run_block(block, d.path(), uid);
            let ok = status == "0" || (status == "running" && out.contains("PROBE_CONNECTED"));
            assert!(ok, "as {who}, the README block\n{block}\nended {status}:\n{out}");
            if block.contains("mosquitto -c") {
                assert!(out.contains("PROBE_CONNECTED"), "as {who}: no client got through the broker:\n{out}");
                assert!(!out.contains("Error"), "as {who}:\n{out}");
            }
        }
    }
}

#[test]
fn as_root_a_broker_directory_mosquitto_cannot_reach_is_an_error_saying_what_to_do() {
    if !netns::require_root("mosquitto-conf as root") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let private = d.path().join("private");
    std::fs::create_dir(&private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pki = private.join("pki");
    let pki = pki.to_str().unwrap();
    let gw = |args: &[&str]| Command::new(bin()).args(args).output().unwrap();
    assert!(gw(&["pki", "init", "--dir", pki]).status.success());
    let out = gw(&["pki", "mosquitto-conf", "--dir", pki]);
    let err = String::from_utf8_lossy(&out.stderr);
    if !std::fs::read_to_string("/etc/passwd").unwrap().lines().any(|l| l.starts_with("mosquitto:")) {
        assert!(!out.status.success() && err.contains("--user"), "{err}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("private") && err.contains("mode 700") && err.contains("--user root") && err.contains("--out"),
        "{err}"
    );
    // --user root keeps the broker root: no hand-over, no error.
    let out = gw(&["pki", "mosquitto-conf", "--dir", pki, "--user", "root"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let conf = std::fs::read_to_string(private.join("pki/mosquitto/mosquitto.conf")).unwrap();
    assert!(conf.contains("\nuser root\n"), "{conf}");
}
