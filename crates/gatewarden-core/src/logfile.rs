//! Append-only log files that rotate by size: `name` → `name.1` → … →
//! `name.<keep>`, the oldest deleted, so a node that logs forever (e.g. the
//! secure channel's rejection audit log) never fills its disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// A size-rotated log file.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingLog {
    /// Opens `path` for appending; rotates when it would exceed `max_bytes`, keeping `keep` old files.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> anyhow::Result<RotatingLog> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingLog { path: path.to_path_buf(), file, size, max_bytes: max_bytes.max(1024), keep })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0).with_context(|| format!("truncating {}", self.path.display()))?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))
                .with_context(|| format!("rotating {}", self.path.display()))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("reopening {}", self.path.display()))?;
        }
        self.size = 0;
        Ok(())
    }

    /// Appends one line (a newline is added).
    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        let len = text.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        // One write per line: a crash leaves at most this line half-written.
        let mut buf = Vec::with_capacity(text.len() + 1);
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
        if let Err(e) = self.file.write_all(&buf) {
            // A write that failed part-way (disk full, a size limit) left a
            // fragment without its newline; the next line would be glued to
            // it and both lost at the next read, although the next write said
            // it succeeded. Cut the file back to where this line began.
            let _ = self.file.set_len(self.size);
            return Err(e).with_context(|| format!("writing {}", self.path.display()));
        }
        self.size += len;
        Ok(())
    }
}

impl RotatingLog {
    /// Appends one line in two writes with `pause` between them, so a crash
    /// test can kill the process while a line is half on disk. Fault
    /// injection only (see `GATEWARDEN_TEST_TORN_WRITE_MS` in the alert store).
    #[doc(hidden)]
    pub fn line_in_two_writes(&mut self, text: &str, pause: std::time::Duration) -> anyhow::Result<()> {
        let len = text.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let half = text.len() / 2;
        let half = (0..=half).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        self.file.write_all(&text.as_bytes()[..half]).and_then(|_| self.file.sync_data())?;
        std::thread::sleep(pause);
        let mut rest = text.as_bytes()[half..].to_vec();
        rest.push(b'\n');
        self.file.write_all(&rest).with_context(|| format!("writing {}", self.path.display()))?;
        self.size += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Red-team finding: a write that fails part-way (here a file-size
    /// limit, as a full disk does) left a fragment, the next line was glued
    /// to it, and both were unreadable after a restart although the second
    /// write had succeeded. The child process writes under `prlimit
    /// --fsize` with SIGXFSZ ignored, so the second line only partly fits.
    #[test]
    fn a_line_that_did_not_fit_leaves_no_fragment_for_the_next_one() {
        if let Some(dir) = std::env::var_os("GATEWARDEN_TEST_FSIZE_DIR") {
            let p = std::path::Path::new(&dir).join("alerts.json");
            let mut log = RotatingLog::open(&p, 1 << 20, 1).unwrap();
            log.line(&"a".repeat(1000)).unwrap();
            assert!(log.line(&"b".repeat(3000)).is_err(), "the second line cannot fit under the limit");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let test = "logfile::tests::a_line_that_did_not_fit_leaves_no_fragment_for_the_next_one";
        let out = std::process::Command::new("sh")
            .args(["-c", "trap '' XFSZ; exec prlimit --fsize=2048 \"$0\" --exact \"$1\" --nocapture"])
            .arg(&exe)
            .arg(test)
            .env("GATEWARDEN_TEST_FSIZE_DIR", d.path())
            .output()
            .expect("prlimit (util-linux) runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let p = d.path().join("alerts.json");
        let mut log = RotatingLog::open(&p, 1 << 20, 1).unwrap();
        log.line("c").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{} bytes", text.len());
        assert_eq!((lines[0].len(), lines[1]), (1000, "c"), "the line after the failed one is whole");
    }

    #[test]
    fn rotates_by_size_and_keeps_the_count() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("channel.log");
        let mut log = RotatingLog::open(&p, 1024, 3).unwrap();
        for i in 0..200 {
            log.line(&format!("{i:04} {}", "x".repeat(95))).unwrap();
        }
        let mut names: Vec<String> =
            std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["channel.log", "channel.log.1", "channel.log.2", "channel.log.3"]);
        for n in &names {
            assert!(std::fs::metadata(d.path().join(n)).unwrap().len() <= 1024);
        }
        let newest = std::fs::read_to_string(&p).unwrap();
        assert!(newest.lines().last().unwrap().starts_with("0199"));
    }
}
