//! Blocks that outlive the process: the block sets' contents with their
//! absolute expiry, kept in `enforce.state_file` so a restart (SIGTERM,
//! kill -9, power cut, reboot) comes back with the same blocks and the same
//! remaining time. An attacker who can crash or reboot the gateway must not
//! be unblocked by it.
//!
//! The kernel's sets are the truth; the file is a snapshot of them. Every
//! writer (the router's enforcement thread, the `gatewarden block` CLI)
//! lists the kernel and replaces the file under one lock, so the last
//! snapshot written is also the newest. The file is replaced atomically
//! (unique temporary file, fsync, rename, fsync of the directory): a power
//! cut leaves the old snapshot or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::ruleset::Origin;

/// Format version of the state file; other versions are refused, not guessed at.
pub const STATE_VERSION: u32 = 1;
/// Largest state file read back (three full sets of 65 536 entries fit many times over).
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// Longest timeout a restored block is given: ten years, longer than any
/// block this binary writes, far below what the kernel refuses (about 584
/// years of milliseconds, `nf_msecs_to_jiffies64`). A file edited by hand or
/// by an attacker with a larger one must not make the restore transaction
/// fail, and with it the table every other block comes back in.
pub const MAX_RESTORED_TIMEOUT_MS: u64 = 10 * 365 * 86_400_000;

/// The `origin` of a contained MAC in the state file (its target is the MAC).
pub use gatewarden_proto::messages::block_origin::CONTAIN as CONTAIN_ORIGIN;

/// One block as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBlock {
    /// An address, a CIDR or an `a-b` range (feeds).
    pub target: String,
    /// `detector`, `admin`, `feed` or `contain` (a MAC in `contain_mac`).
    pub origin: String,
    /// The timeout it was given, milliseconds.
    pub timeout_ms: u64,
    /// When it ends, Unix milliseconds.
    pub expires_unix_ms: u64,
    /// The element's comment (why it was blocked).
    pub reason: String,
    /// A feed range imported with `--allow-wide`: restored even when wider
    /// than a feed may be without it. Absent (files written before it was
    /// kept, or edited) is `false`: the range must pass the width and
    /// coverage limits again. The LAN and the allowlist hold either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_wide: bool,
    /// A detector block: the node ids of the detectors whose verdicts wrote
    /// it (at most two). Kept so that after a restart each block is still
    /// in its sender's share of a full set (see `Blocker::block_verdict`).
    /// Absent (files written before it was kept, other origins) is empty:
    /// the block's sender is unknown, and such blocks share one "unknown"
    /// share. What is no node id is left out at the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<String>,
}

impl SavedBlock {
    /// Its origin, if it names one this binary knows.
    pub fn origin(&self) -> Option<Origin> {
        Origin::ALL.into_iter().find(|o| o.as_str() == self.origin)
    }

    /// Milliseconds left at `now_unix_ms` (0 once expired).
    pub fn remaining_ms(&self, now_unix_ms: u64) -> u64 {
        self.expires_unix_ms.saturating_sub(now_unix_ms)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    version: u32,
    saved_unix_ms: u64,
    blocks: Vec<SavedBlock>,
}

/// The state file and its lock.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    /// Largest file written or read ([`MAX_STATE_BYTES`]; smaller in tests).
    max_bytes: u64,
}

impl StateFile {
    /// The file at `path` (its directory is created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into(), max_bytes: MAX_STATE_BYTES }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> anyhow::Result<std::fs::File> {
        let mut name = self.path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".lock");
        let lock_path = self.path.with_file_name(name);
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating {} for enforce.state_file; make it writable or change the path", dir.display())
            })?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        Ok(f)
    }

    /// The blocks still running at `now_unix_ms`. A missing file is no
    /// blocks; a file that cannot be read or parsed is an error (the caller
    /// keeps it aside and says so: it may hold an operator's blocks).
    pub fn load(&self, now_unix_ms: u64) -> anyhow::Result<Vec<SavedBlock>> {
        let _lock = self.lock()?;
        let bytes = match std::fs::File::open(&self.path) {
            Ok(f) => {
                let mut buf = Vec::new();
                use std::io::Read;
                f.take(self.max_bytes + 1)
                    .read_to_end(&mut buf)
                    .with_context(|| format!("reading {}", self.path.display()))?;
                anyhow::ensure!(
                    buf.len() as u64 <= self.max_bytes,
                    "{} is larger than {} MiB: not a gatewarden state file",
                    self.path.display(),
                    self.max_bytes >> 20
                );
                buf
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", self.path.display())),
        };
        let doc: StateDoc = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a gatewarden block state file", self.path.display()))?;
        anyhow::ensure!(
            doc.version == STATE_VERSION,
            "{} has format version {} (this binary reads {STATE_VERSION})",
            self.path.display(),
            doc.version
        );
        Ok(doc
            .blocks
            .into_iter()
            .filter(|b| b.remaining_ms(now_unix_ms) > 0 && (b.origin().is_some() || b.origin == CONTAIN_ORIGIN))
            .map(|mut b| {
                if b.timeout_ms > MAX_RESTORED_TIMEOUT_MS {
                    tracing::warn!(
                        target = %b.target,
                        timeout_ms = b.timeout_ms,
                        "a saved block's timeout is beyond any this gateway writes: restored for ten years"
                    );
                    b.timeout_ms = MAX_RESTORED_TIMEOUT_MS;
                }
                b
            })
            .collect())
    }

    /// Replaces the file with `blocks` (expired ones left out).
    pub fn save(&self, blocks: &[SavedBlock], now_unix_ms: u64) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        self.save_locked(blocks, now_unix_ms)
    }

    /// Lists with `list` and saves what it returns, both under the lock, so
    /// two writers cannot put an older listing over a newer one. `unchanged`
    /// may spare the write. Returns the listing and whether it was written.
    pub fn snapshot<E: std::fmt::Display>(
        &self,
        now_unix_ms: impl Fn() -> u64,
        list: impl FnOnce(u64) -> Result<Vec<SavedBlock>, E>,
        unchanged: impl FnOnce(&[SavedBlock]) -> bool,
    ) -> anyhow::Result<(Vec<SavedBlock>, bool)> {
        let _lock = self.lock()?;
        let now = now_unix_ms();
        let blocks = list(now).map_err(|e| anyhow::anyhow!("listing the block sets: {e}"))?;
        if unchanged(&blocks) && self.path.exists() {
            return Ok((blocks, false));
        }
        self.save_locked(&blocks, now)?;
        Ok((blocks, true))
    }

    /// Writes the running blocks, never a file [`StateFile::load`] would
    /// refuse: a feed big enough to push the file past the limit made the
    /// next start set the whole file aside, and with it every admin block,
    /// detector block and containment. Over the limit, feed ranges (which
    /// their feed file can restore) are left out, the ones expiring soonest
    /// first, and the operator is told how many.
    fn save_locked(&self, blocks: &[SavedBlock], now_unix_ms: u64) -> anyhow::Result<()> {
        let mut live: Vec<SavedBlock> = blocks.iter().filter(|b| b.remaining_ms(now_unix_ms) > 0).cloned().collect();
        /// [`StateDoc`] as written, borrowing its blocks.
        #[derive(Serialize)]
        struct StateDocRef<'a> {
            version: u32,
            saved_unix_ms: u64,
            blocks: &'a [SavedBlock],
        }
        let encode = |blocks: &[SavedBlock]| {
            let doc = StateDocRef { version: STATE_VERSION, saved_unix_ms: now_unix_ms, blocks };
            serde_json::to_vec(&doc).context("encoding the block state")
        };
        let mut text = encode(&live)?;
        if text.len() as u64 > self.max_bytes {
            // Feeds last, longest-running first among them; then cut by the
            // bytes each entry took, with room to spare for the JSON around it.
            let is_feed = |b: &SavedBlock| b.origin() == Some(Origin::Feed);
            live.sort_by_key(|b| (is_feed(b), std::cmp::Reverse(b.expires_unix_ms)));
            let mut budget = self.max_bytes.saturating_sub(4096);
            let mut keep = 0;
            for b in &live {
                let cost = serde_json::to_vec(b).map(|v| v.len() as u64 + 1).unwrap_or(u64::MAX);
                if cost > budget {
                    break;
                }
                budget -= cost;
                keep += 1;
            }
            let left_out = live.len() - keep;
            let feeds_left_out = live[keep..].iter().filter(|b| is_feed(b)).count();
            live.truncate(keep);
            tracing::warn!(
                left_out,
                feeds_left_out,
                limit_mib = self.max_bytes >> 20,
                "the block state is larger than the state file may be: {left_out} entries ({feeds_left_out} of them \
                 feed ranges) are not saved and will be gone after a reboot; import the feed again after one, or \
                 use a smaller feed"
            );
            text = encode(&live)?;
        }
        write_durably(&self.path, &text)
    }

    /// Moves an unreadable file aside (`…​.bad`) so the next save does not destroy it.
    pub fn set_aside(&self) -> anyhow::Result<PathBuf> {
        let mut name = self.path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".bad");
        let aside = self.path.with_file_name(name);
        std::fs::rename(&self.path, &aside)
            .with_context(|| format!("moving {} to {}", self.path.display(), aside.display()))?;
        Ok(aside)
    }
}

/// `a` and `b` together, one entry per (origin, target): the later expiry
/// wins, with the senders of both copies (a detector block one detector
/// co-signed in the table stays co-signed): the winner's first, then the
/// other's, node ids only, at most [`super::ruleset::MAX_SENDERS`]. A copy
/// whose senders are unknown (an older version's) keeps the block unknown:
/// no verdict can claim it.
pub fn merge(a: Vec<SavedBlock>, b: Vec<SavedBlock>) -> Vec<SavedBlock> {
    let mut by_key: std::collections::BTreeMap<(String, String), SavedBlock> = std::collections::BTreeMap::new();
    for mut blk in a.into_iter().chain(b) {
        let key = (blk.origin.clone(), blk.target.clone());
        let Some(have) = by_key.get_mut(&key) else {
            by_key.insert(key, blk);
            continue;
        };
        if have.expires_unix_ms < blk.expires_unix_ms {
            std::mem::swap(have, &mut blk);
        }
        have.senders = union_senders(&have.senders, &blk.senders);
    }
    by_key.into_values().collect()
}

/// The senders of two copies of one block (see [`merge`]).
fn union_senders(first: &[String], second: &[String]) -> Vec<String> {
    if first.is_empty() || second.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<String> = Vec::new();
    for s in first.iter().chain(second) {
        if gatewarden_core::identity::valid_node_id(s) && !v.contains(s) && v.len() < super::ruleset::MAX_SENDERS {
            v.push(s.clone());
        }
    }
    v
}

/// Writes through a temporary file of this process, fsyncs it, renames it
/// over `path` and fsyncs the directory: after a power cut the file is the
/// old one or the new one, and a reboot right after a block keeps it.
fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(name);
    let written = (|| -> std::io::Result<()> {
        // A name nobody else may have made, and never through a link.
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).open(&tmp)?
        };
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blk(target: &str, origin: &str, expires: u64) -> SavedBlock {
        SavedBlock {
            target: target.into(),
            origin: origin.into(),
            timeout_ms: 600_000,
            expires_unix_ms: expires,
            reason: "r".into(),
            allow_wide: false,
            senders: Vec::new(),
        }
    }

    /// Red-team finding: a feed big enough to push the file past the size
    /// `load` accepts made the next start set the whole file aside, and the
    /// admin and detector blocks went with it. Saving now leaves out feed
    /// ranges, never a file `load` refuses.
    #[test]
    fn a_feed_too_big_for_the_file_never_costs_the_admin_and_detector_blocks() {
        let d = tempfile::tempdir().unwrap();
        let mut f = StateFile::new(d.path().join("state.json"));
        f.max_bytes = 64 << 10;
        let now = 1_000_000;
        let mut blocks: Vec<SavedBlock> = (0..2_000u32)
            .map(|i| blk(&format!("10.{}.{}.0/24", i >> 8, i & 255), "feed", now + 600_000 + u64::from(i)))
            .collect();
        blocks.push(blk("192.0.2.66", "admin", now + 500_000));
        blocks.push(blk("203.0.113.9", "detector", now + 400_000));
        f.save(&blocks, now).unwrap();
        assert!(std::fs::metadata(f.path()).unwrap().len() <= f.max_bytes);
        let back = f.load(now).expect("the file saved is one load accepts");
        for (target, origin) in [("192.0.2.66", "admin"), ("203.0.113.9", "detector")] {
            assert!(back.iter().any(|b| b.target == target && b.origin == origin), "{origin} block lost");
        }
        let feeds = back.iter().filter(|b| b.origin == "feed").count();
        assert!(feeds > 100 && feeds < 2_000, "{feeds} feed ranges kept");
        // The longest-running feed ranges are the ones kept.
        assert!(back.iter().any(|b| b.target == "10.7.207.0/24"), "the last-expiring range was left out");
    }

    #[test]
    fn saves_and_loads_what_is_still_running_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path().join("sub/state.json"));
        assert!(f.load(1_000).unwrap().is_empty(), "no file yet: no blocks");
        let blocks = vec![
            blk("192.0.2.7", "admin", 10_000),
            blk("2001:db8::7", "detector", 5_000),
            blk("198.51.100.0/24", "feed", 2_000),
        ];
        f.save(&blocks, 1_000).unwrap();
        assert_eq!(f.load(1_000).unwrap(), blocks);
        // Later, the feed has run out.
        assert_eq!(f.load(3_000).unwrap().len(), 2);
        let names: Vec<String> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_an_error_and_can_be_set_aside() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        let f = StateFile::new(&p);
        for bad in [&b"{\"version\": 1, \"saved_unix_ms\": 1, \"blocks\": [{\"tar"[..], b"\x00\xff", b"[]"] {
            std::fs::write(&p, bad).unwrap();
            let e = format!("{:#}", f.load(0).unwrap_err());
            assert!(e.contains("not a gatewarden block state file"), "{e}");
        }
        std::fs::write(&p, br#"{"version": 9, "saved_unix_ms": 1, "blocks": []}"#).unwrap();
        assert!(format!("{:#}", f.load(0).unwrap_err()).contains("format version 9"));
        let aside = f.set_aside().unwrap();
        assert!(aside.exists() && !p.exists());
        // An unknown origin from a newer binary is skipped, not restored as something else.
        f.save(&[blk("192.0.2.1", "martian", 9_000)], 0).unwrap();
        assert!(f.load(0).unwrap().is_empty());
    }

    /// The `--allow-wide` mark of a feed range is kept in the file, only
    /// where it is set; a file without it (older, or edited) reads as not wide.
    #[test]
    fn allow_wide_is_saved_only_where_set_and_an_older_file_reads_as_not_wide() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path().join("state.json"));
        let wide = SavedBlock { allow_wide: true, ..blk("64.0.0.0/3", "feed", 9_000) };
        f.save(&[wide.clone(), blk("203.0.113.0/24", "feed", 9_000)], 0).unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert_eq!(text.matches("allow_wide").count(), 1, "{text}");
        assert_eq!(f.load(0).unwrap(), [wide, blk("203.0.113.0/24", "feed", 9_000)]);
        std::fs::write(
            f.path(),
            br#"{"version": 1, "saved_unix_ms": 1, "blocks": [{"target": "3000::/4", "origin": "feed",
                "timeout_ms": 600000, "expires_unix_ms": 9000, "reason": "r"}]}"#,
        )
        .unwrap();
        assert_eq!(f.load(0).unwrap(), [blk("3000::/4", "feed", 9_000)]);
    }

    /// A detector block's senders are kept in the file, only where known;
    /// a file written before they were kept reads as senders unknown.
    #[test]
    fn a_detector_blocks_senders_are_saved_and_an_older_file_reads_as_unknown() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path().join("state.json"));
        let two = SavedBlock { senders: vec!["det-1".into(), "det-2".into()], ..blk("203.0.113.9", "detector", 9_000) };
        f.save(&[two.clone(), blk("192.0.2.7", "admin", 9_000)], 0).unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert_eq!(text.matches("senders").count(), 1, "{text}");
        assert_eq!(f.load(0).unwrap(), [two, blk("192.0.2.7", "admin", 9_000)]);
        std::fs::write(
            f.path(),
            br#"{"version": 1, "saved_unix_ms": 1, "blocks": [{"target": "203.0.113.9", "origin": "detector",
                "timeout_ms": 600000, "expires_unix_ms": 9000, "reason": "r"}]}"#,
        )
        .unwrap();
        assert_eq!(f.load(0).unwrap(), [blk("203.0.113.9", "detector", 9_000)]);
    }

    #[test]
    fn merge_keeps_the_later_expiry_per_origin_and_target() {
        let m = merge(
            vec![blk("192.0.2.7", "admin", 10_000), blk("192.0.2.8", "detector", 1_000)],
            vec![
                blk("192.0.2.7", "admin", 5_000),
                blk("192.0.2.8", "detector", 7_000),
                blk("192.0.2.7", "detector", 3),
            ],
        );
        assert_eq!(m.len(), 3);
        let get = |t: &str, o: &str| m.iter().find(|b| b.target == t && b.origin == o).unwrap().expires_unix_ms;
        assert_eq!(get("192.0.2.7", "admin"), 10_000, "a shorter entry never shortens a longer one");
        assert_eq!(get("192.0.2.8", "detector"), 7_000);
    }

    /// Review finding: the copy expiring later won and the other's senders
    /// were lost, so a block an honest detector co-signed in the running
    /// table came back as the flooder's alone after a crash.
    #[test]
    fn merge_keeps_the_senders_of_both_copies_of_a_detector_block() {
        let with = |senders: &[&str], expires| SavedBlock {
            senders: senders.iter().map(|s| s.to_string()).collect(),
            ..blk("203.0.113.3", "detector", expires)
        };
        let m = merge(vec![with(&["det-2", "det-1"], 5_000)], vec![with(&["det-2"], 7_000)]);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].expires_unix_ms, &m[0].senders[..]), (7_000, &["det-2".to_string(), "det-1".to_string()][..]));
        // At most two, node ids only; an unknown sender stays unknown.
        let m = merge(vec![with(&["det-2", "not an id"], 5_000)], vec![with(&["det-3", "det-4"], 7_000)]);
        assert_eq!(m[0].senders, ["det-3", "det-4"]);
        let m = merge(vec![with(&[], 5_000)], vec![with(&["det-2"], 7_000)]);
        assert_eq!(m[0].senders, Vec::<String>::new(), "a block of unknown senders is no verdict's to claim");
        let m = merge(vec![with(&["det-1"], 9_000)], vec![with(&["det-1"], 7_000)]);
        assert_eq!(m[0].senders, ["det-1"]);
    }

    #[test]
    fn concurrent_writers_never_leave_a_torn_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let f = StateFile::new(&p);
                std::thread::spawn(move || {
                    for i in 0..25u64 {
                        let blocks: Vec<SavedBlock> =
                            (0..50).map(|k| blk(&format!("10.{t}.{i}.{k}"), "admin", 1_000_000)).collect();
                        f.save(&blocks, 0).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(StateFile::new(&p).load(0).unwrap().len(), 50);
    }
}
