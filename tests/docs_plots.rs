//! The plots in docs/ are drawn from the measured tables beside them
//! (`tools/plot_docs.py`): a plot that no longer matches its table is a
//! picture of figures nobody measured, so the suite refuses it.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn check(dir: &Path) -> std::process::Output {
    Command::new("python3")
        .arg(dir.join("tools/plot_docs.py"))
        .arg("--check")
        .output()
        .expect("python3 runs (tools/test.sh installs it)")
}

#[test]
fn every_plot_in_docs_matches_the_table_it_is_drawn_from() {
    let out = check(root());
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A copy of the tree's script, docs and plots with one figure of a table
/// changed: the check names the stale plot and what to run.
#[test]
fn a_changed_figure_makes_its_plot_stale_and_the_check_says_what_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["tools", "docs", "docs/plots"] {
        std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
    }
    std::fs::copy(root().join("tools/plot_docs.py"), tmp.path().join("tools/plot_docs.py")).unwrap();
    for entry in std::fs::read_dir(root().join("docs/plots")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join("docs/plots").join(entry.file_name())).unwrap();
    }
    for doc in ["DETECTION.md", "PERFORMANCE.md"] {
        std::fs::copy(root().join("docs").join(doc), tmp.path().join("docs").join(doc)).unwrap();
    }
    assert!(check(tmp.path()).status.success(), "the copy checks out as the tree does");

    let perf = tmp.path().join("docs/PERFORMANCE.md");
    let text = std::fs::read_to_string(&perf).unwrap();
    let changed = text.replacen("| host statistics (router) | 325 |", "| host statistics (router) | 160 |", 1);
    assert_ne!(changed, text, "the instructions table has the row this test changes");
    std::fs::write(&perf, changed).unwrap();
    let out = check(tmp.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stale plot passed the check");
    assert!(
        err.contains("docs/plots/instructions-per-frame.svg") && err.contains("run `python3 tools/plot_docs.py`"),
        "{err}"
    );

    // A table whose marker is gone is an error that names the marker.
    let text = std::fs::read_to_string(&perf).unwrap();
    std::fs::write(&perf, text.replace("<!-- plot:instructions-per-frame -->", "")).unwrap();
    let err = String::from_utf8_lossy(&check(tmp.path()).stderr).into_owned();
    assert!(err.contains("<!-- plot:instructions-per-frame -->"), "{err}");
}
