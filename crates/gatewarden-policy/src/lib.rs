//! Group policies: device groups, `GroupRelationship` rules between them,
//! the traffic matrix, suggested rules and learning from the administrator.
//!
//! | file | what it holds |
//! |---|---|
//! | `model.rs` | groups (address / CIDR / MAC members), protocol, port range, action, relationship; parsing + validation |
//! | `rules.rs` | a whole policy: conflicts, `explain`, compilation to the router's `PolicyUpdate` |
//! | `matrix.rs` | traffic matrix per (source group, destination group, protocol, port), bounded |
//! | `suggest.rs` | suggestions with confidence + justification, Beta feedback per context |
//! | `proof.rs` | which scan / brute-force alerts are about a source proven real (only those make a deny) |
//! | `neighbours.rs` | the routers' neighbour tables as their messages brought them (bounded, aged), for MAC members, with which routers reported each pair |
//! | `mod.rs` | [`PolicyEngine`]: config + state file + matrix file, every operation the CLI and API offer |
//!
//! State lives in two JSON files under `policy.state_dir`: `policy.json`
//! (groups, rules, feedback, version; written on every change, atomically,
//! under a lock file so the CLI and a running monitor never lose each other's
//! edits) and `matrix.json` (traffic matrix + alert tallies, written by the
//! monitor every `policy.save_interval_s` and on exit).
//!
//! gatewarden-policy: groups, rules, the traffic matrix and suggestions —
//! no kernel calls (the router compiles a `PolicyUpdate` into nftables; the
//! routers' neighbour tables for MAC members arrive as messages and are kept
//! in `neighbours.rs`).
//! Depends on gatewarden-core and gatewarden-proto.
#![forbid(unsafe_code)]

pub mod matrix;
pub mod model;
pub mod neighbours;
pub mod proof;
pub mod rules;
pub mod service;
pub mod suggest;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use gatewarden_core::clock::unix_now_ms as now_ms;
use gatewarden_proto::messages::{Alert, AttackKind, FlowBatch, PolicyUpdate};
pub use matrix::TrafficMatrix;
pub use model::{Action, Group, Member, PortRange, Protocol, Relationship, RuleSpec};
pub use rules::{Endpoint, Explanation, Policy};
pub use suggest::{AlertEvidence, Feedback, Suggestion};

/// First id of rules that come from the config file (they cannot be changed through the CLI or API).
pub const CONFIG_RULE_BASE: u32 = 1_000_000;

/// `[policy]`: where the state lives, groups and rules from the config file, engine limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory of `policy.json` and `matrix.json`.
    pub state_dir: PathBuf,
    /// Groups defined here are fixed: the CLI/API can add others but not change these.
    pub groups: Vec<Group>,
    /// Rules defined here are fixed (ids from 1000000 in config order).
    pub rules: Vec<RuleSpec>,
    /// Suggestions shown at most.
    pub top_n: usize,
    /// Traffic-matrix cells kept (least recently seen dropped first).
    pub max_cells: usize,
    /// Length of a recurrence bucket: a pattern seen in more buckets is more stable.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub bucket_s: u64,
    /// How often the monitor writes the matrix to disk.
    #[serde(deserialize_with = "gatewarden_core::duration::secs")]
    pub save_interval_s: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            state_dir: PathBuf::from("/var/lib/gatewarden/policy"),
            groups: Vec::new(),
            rules: Vec::new(),
            top_n: suggest::DEFAULT_TOP_N,
            max_cells: matrix::DEFAULT_MAX_CELLS,
            bucket_s: 60,
            save_interval_s: 30,
        }
    }
}

impl PolicyConfig {
    /// Problems as (key, value, allowed) for the config validator.
    pub fn problems(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        match PolicyEngine::config_policy(self) {
            Ok(_) => {}
            Err(e) => out.push(("policy".into(), "groups/rules".into(), e)),
        }
        if !(1..=100).contains(&self.top_n) {
            out.push(("policy.top_n".into(), self.top_n.to_string(), "1 to 100".into()));
        }
        if !(16..=1_048_576).contains(&self.max_cells) {
            out.push(("policy.max_cells".into(), self.max_cells.to_string(), "16 to 1048576".into()));
        }
        if !(1..=86_400).contains(&self.bucket_s) {
            out.push(("policy.bucket_s".into(), self.bucket_s.to_string(), "1 to 86400 seconds".into()));
        }
        if !(1..=86_400).contains(&self.save_interval_s) {
            out.push(("policy.save_interval_s".into(), self.save_interval_s.to_string(), "1 to 86400 seconds".into()));
        }
        out
    }
}

/// What `policy.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyFile {
    /// Policy version; grows on every change (at least to the current Unix ms).
    pub version: u64,
    /// Next rule id.
    pub next_id: u32,
    /// Groups added through the CLI/API.
    pub groups: Vec<Group>,
    /// Rules added through the CLI/API.
    pub rules: Vec<Relationship>,
    /// Accept/reject counts.
    pub feedback: Feedback,
}

/// What `matrix.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixFile {
    /// The traffic matrix.
    pub matrix: TrafficMatrix,
    /// Scan / brute-force alerts between groups.
    pub alerts: AlertEvidence,
}

/// A group or rule plus where it comes from.
#[derive(Debug, Clone, Serialize)]
pub struct Sourced<T> {
    /// The item.
    #[serde(flatten)]
    pub item: T,
    /// `config` (fixed) or `state` (CLI/API).
    pub origin: &'static str,
}

/// Every policy operation; one per process, shared behind a mutex by the monitor.
#[derive(Debug)]
pub struct PolicyEngine {
    cfg: PolicyConfig,
    config_policy: Policy,
    file: PolicyFile,
    file_stamp: Option<(SystemTime, u64)>,
    matrix: TrafficMatrix,
    alerts: AlertEvidence,
    proofs: proof::Proofs,
    /// MAC → address resolutions, sorted, each pair once.
    neighbours: Vec<(IpAddr, [u8; 6])>,
    /// Which routers' tables reported each pair of `neighbours` (same
    /// order; empty when they came from this box's own kernel), by
    /// [`neighbours::Resolutions::routers`] bit: a matrix cell names the
    /// routers whose table alone made an endpoint a member.
    neighbour_masks: Vec<u64>,
    /// The routers of `neighbour_masks`' bits (at most 64).
    neighbour_routers: Vec<String>,
    last_matrix_save: Instant,
    matrix_dirty: bool,
}

/// Which groups an address is in, and through whose neighbour tables.
struct Resolver<'a> {
    /// Sorted MAC → address resolutions.
    pairs: &'a [(IpAddr, [u8; 6])],
    /// The routers that reported each pair (bits of `routers`); empty: none named.
    masks: &'a [u64],
    /// The routers of the masks' bits.
    routers: &'a [String],
}

impl<'a> Resolver<'a> {
    /// The groups `a` is in; for a group only a MAC member puts it in, the
    /// routers whose neighbour tables resolved that MAC to `a`.
    fn memberships<'g>(&self, groups: &'g [(String, Vec<Member>)], a: &IpAddr) -> Vec<matrix::Membership<'g>>
    where
        'a: 'g,
    {
        let mut out = Vec::new();
        for (name, members) in groups {
            let (mut direct, mut by_mac, mut mask) = (false, false, 0u64);
            for m in members {
                match m {
                    Member::Net(c) if c.contains(a) => {
                        direct = true;
                        break;
                    }
                    Member::Mac(mac) => {
                        if let Ok(i) = self.pairs.binary_search(&(*a, *mac)) {
                            by_mac = true;
                            mask |= self.masks.get(i).copied().unwrap_or(0);
                        }
                    }
                    Member::Net(_) => {}
                }
            }
            if direct {
                out.push(matrix::Membership::direct(name));
            } else if by_mac {
                let via = self
                    .routers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i < 64 && mask >> i & 1 == 1)
                    .map(|(_, r)| r.as_str())
                    .collect();
                out.push(matrix::Membership { group: name, via });
            }
        }
        out
    }
}

/// Holds `policy.lock` (created exclusively) while alive.
struct LockGuard(PathBuf);

impl LockGuard {
    fn take(dir: &Path) -> anyhow::Result<LockGuard> {
        let path = dir.join("policy.lock");
        let start = Instant::now();
        loop {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(LockGuard(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock older than 10 s belongs to a process that died mid-write.
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(10))
                        .unwrap_or(false);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    } else if start.elapsed() > Duration::from_secs(5) {
                        anyhow::bail!(
                            "{} is held by another gatewarden process for over 5 s; if none is running, delete the file",
                            path.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create {} (is policy.state_dir writable?)", path.display()))
                }
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

use gatewarden_core::atomic_file::write_atomic;

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

impl PolicyEngine {
    /// The fixed part of the policy from the config file, validated.
    pub fn config_policy(cfg: &PolicyConfig) -> Result<Policy, String> {
        let mut p = Policy::default();
        for g in &cfg.groups {
            p.check_group(g)?;
            if p.groups.contains_key(&g.name) {
                return Err(format!("group {} is defined twice in [[policy.groups]]", g.name));
            }
            p.groups.insert(g.name.clone(), g.clone());
        }
        for (i, spec) in cfg.rules.iter().enumerate() {
            let r = spec.parse(CONFIG_RULE_BASE + i as u32).map_err(|e| format!("[[policy.rules]] #{}: {e}", i + 1))?;
            p.check_rule(&r).map_err(|e| format!("[[policy.rules]] #{}: {e}", i + 1))?;
            p.rules.push(r);
        }
        Ok(p)
    }

    /// Loads both files if they exist. Touches nothing on disk: the state
    /// directory is created on the first write.
    pub fn open(cfg: &PolicyConfig) -> anyhow::Result<PolicyEngine> {
        let config_policy =
            Self::config_policy(cfg).map_err(|e| anyhow::anyhow!("{e} (fix [policy] in the config file)"))?;
        let mut e = PolicyEngine {
            cfg: cfg.clone(),
            config_policy,
            file: PolicyFile { next_id: 1, ..PolicyFile::default() },
            file_stamp: None,
            matrix: TrafficMatrix::new(cfg.max_cells, cfg.bucket_s),
            alerts: AlertEvidence::default(),
            proofs: proof::Proofs::default(),
            neighbours: Vec::new(),
            neighbour_masks: Vec::new(),
            neighbour_routers: Vec::new(),
            last_matrix_save: Instant::now(),
            matrix_dirty: false,
        };
        e.reload()?;
        let mpath = e.matrix_path();
        if mpath.exists() {
            let text = std::fs::read_to_string(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
            let m: MatrixFile = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a gatewarden matrix file; move it away to start afresh", mpath.display())
            })?;
            e.matrix = m.matrix;
            e.matrix.max_cells = cfg.max_cells.max(1);
            e.matrix.bucket_s = cfg.bucket_s.max(1);
            e.matrix.trim();
            e.alerts = m.alerts.loaded();
        }
        Ok(e)
    }

    /// Creates the state directory on first write (opening never touches the disk).
    fn ensure_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.cfg.state_dir).with_context(|| {
            format!(
                "cannot create policy.state_dir {}: set `[policy] state_dir` to a writable directory \
                 (`gatewarden policy ... --state-dir DIR` for one command), or run as root",
                self.cfg.state_dir.display()
            )
        })
    }

    fn policy_path(&self) -> PathBuf {
        self.cfg.state_dir.join("policy.json")
    }

    fn matrix_path(&self) -> PathBuf {
        self.cfg.state_dir.join("matrix.json")
    }

    /// Re-reads `policy.json`. Returns whether it changed on disk since the last read or write.
    pub fn reload(&mut self) -> anyhow::Result<bool> {
        let path = self.policy_path();
        let st = stamp(&path);
        if st.is_some() && st == self.file_stamp {
            return Ok(false);
        }
        if st.is_none() {
            return Ok(false);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let f: PolicyFile = serde_json::from_str(&text).with_context(|| {
            format!("{} is not a gatewarden policy file; fix it or move it away to start afresh", path.display())
        })?;
        self.file = f;
        self.file.next_id = self.file.next_id.max(1);
        self.file_stamp = st;
        Ok(true)
    }

    /// Reload, change, validate the whole, bump the version and save — under the lock.
    fn mutate<T>(&mut self, f: impl FnOnce(&mut PolicyFile, &Policy) -> Result<T, String>) -> anyhow::Result<T> {
        self.ensure_dir()?;
        let _lock = LockGuard::take(&self.cfg.state_dir)?;
        self.reload()?;
        let mut next = self.file.clone();
        let current = self.policy();
        let out = f(&mut next, &current).map_err(anyhow::Error::msg)?;
        next.version = (next.version + 1).max(now_ms());
        let path = self.policy_path();
        write_atomic(&path, serde_json::to_string_pretty(&next)?.as_bytes())?;
        self.file = next;
        self.file_stamp = stamp(&path);
        Ok(out)
    }

    /// The whole policy: config part + state part.
    pub fn policy(&self) -> Policy {
        let mut p = self.config_policy.clone();
        for g in &self.file.groups {
            p.groups.entry(g.name.clone()).or_insert_with(|| g.clone());
        }
        p.rules.extend(self.file.rules.iter().cloned());
        p
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.file.version
    }

    /// What the router enforces now.
    pub fn compile(&self) -> PolicyUpdate {
        self.policy().compile(self.file.version.max(1))
    }

    /// Groups with where they come from.
    pub fn groups(&self) -> Vec<Sourced<Group>> {
        let p = self.policy();
        p.groups
            .into_values()
            .map(|g| {
                let origin = if self.config_policy.groups.contains_key(&g.name) { "config" } else { "state" };
                Sourced { item: g, origin }
            })
            .collect()
    }

    /// Rules in evaluation order with where they come from.
    pub fn rules(&self) -> Vec<Sourced<Relationship>> {
        self.policy()
            .ordered()
            .into_iter()
            .map(|r| Sourced { item: r.clone(), origin: if r.id >= CONFIG_RULE_BASE { "config" } else { "state" } })
            .collect()
    }

    /// Adds a group, or replaces its members when `replace` is set.
    pub fn add_group(&mut self, g: Group, replace: bool) -> anyhow::Result<()> {
        let fixed = self.config_policy.groups.contains_key(&g.name);
        self.mutate(|f, p| {
            if fixed {
                return Err(format!(
                    "group {} comes from the config file ([[policy.groups]]); change it there",
                    g.name
                ));
            }
            p.check_group(&g)?;
            let exists = f.groups.iter().position(|x| x.name == g.name);
            match (exists, replace) {
                (Some(_), false) => Err(format!(
                    "group {} already exists; use `gatewarden policy group add {} --replace ...` to change its members",
                    g.name, g.name
                )),
                (Some(i), true) => {
                    f.groups[i] = g.clone();
                    Ok(())
                }
                (None, _) => {
                    f.groups.push(g.clone());
                    Ok(())
                }
            }
        })
    }

    /// Removes a group no rule uses.
    pub fn remove_group(&mut self, name: &str) -> anyhow::Result<()> {
        let fixed = self.config_policy.groups.contains_key(name);
        self.mutate(|f, p| {
            if fixed {
                return Err(format!("group {name} comes from the config file ([[policy.groups]]); remove it there"));
            }
            let Some(i) = f.groups.iter().position(|g| g.name == name) else {
                return Err(format!("no group {name}; list them with `gatewarden policy group list`"));
            };
            let users = p.rules_using(name);
            if !users.is_empty() {
                let names: Vec<String> = users.iter().map(|r| r.describe()).collect();
                return Err(format!("group {name} is used by {}; delete those rules first", names.join(", ")));
            }
            f.groups.remove(i);
            Ok(())
        })?;
        self.matrix.forget_group(name);
        self.matrix_dirty = true;
        Ok(())
    }

    /// Creates a rule; refused (naming both rules) if it conflicts.
    pub fn create_rule(&mut self, spec: &RuleSpec) -> anyhow::Result<Relationship> {
        self.mutate(|f, p| {
            // Checked as "the new rule" (id 0), numbered once it is accepted.
            let mut r = spec.parse(0)?;
            p.check_rule(&r)?;
            r.id = f.next_id;
            f.next_id += 1;
            f.rules.push(r.clone());
            Ok(r)
        })
    }

    /// Replaces rule `id`'s fields.
    pub fn update_rule(&mut self, id: u32, spec: &RuleSpec) -> anyhow::Result<Relationship> {
        self.mutate(|f, p| {
            if id >= CONFIG_RULE_BASE {
                return Err(format!("rule #{id} comes from the config file ([[policy.rules]]); change it there"));
            }
            let Some(i) = f.rules.iter().position(|r| r.id == id) else {
                return Err(format!("no rule #{id}; list them with `gatewarden policy rule list`"));
            };
            let r = spec.parse(id)?;
            p.check_rule(&r)?;
            f.rules[i] = r.clone();
            Ok(r)
        })
    }

    /// Deletes rule `id`.
    pub fn delete_rule(&mut self, id: u32) -> anyhow::Result<Relationship> {
        self.mutate(|f, _| {
            if id >= CONFIG_RULE_BASE {
                return Err(format!("rule #{id} comes from the config file ([[policy.rules]]); remove it there"));
            }
            let Some(i) = f.rules.iter().position(|r| r.id == id) else {
                return Err(format!("no rule #{id}; list them with `gatewarden policy rule list`"));
            };
            Ok(f.rules.remove(i))
        })
    }

    /// Which rule decides this traffic.
    pub fn explain(&self, src: &str, dst: &str, proto: &str, port: Option<u16>) -> anyhow::Result<Explanation> {
        let s: Endpoint = src.parse().map_err(anyhow::Error::msg)?;
        let d: Endpoint = dst.parse().map_err(anyhow::Error::msg)?;
        let p: Protocol = proto.parse().map_err(anyhow::Error::msg)?;
        self.policy().explain(&s, &d, p, port, &self.neighbours).map_err(anyhow::Error::msg)
    }

    /// The ranked suggestions.
    pub fn suggestions(&self, top_n: Option<usize>) -> Vec<Suggestion> {
        suggest::suggest(
            &self.policy(),
            &self.matrix,
            &self.alerts,
            &self.file.feedback,
            top_n.unwrap_or(self.cfg.top_n),
        )
    }

    fn find_suggestion(&self, id: &str) -> anyhow::Result<Suggestion> {
        // Look beyond the shown top-N so an id from a slightly older listing still resolves.
        self.suggestions(Some(1000)).into_iter().find(|s| s.id == id).ok_or_else(|| {
            anyhow::anyhow!(
                "no current suggestion {id} (it may have been answered, or a rule now decides that traffic); \
list them with `gatewarden policy suggest`"
            )
        })
    }

    /// Accepts a suggestion: creates its rule and counts the accept in its context.
    pub fn accept(&mut self, id: &str) -> anyhow::Result<Relationship> {
        let s = self.find_suggestion(id)?;
        self.mutate(|f, p| {
            let mut r = s.rule.clone();
            p.check_rule(&r)?;
            r.id = f.next_id;
            f.next_id += 1;
            f.rules.push(r.clone());
            f.feedback.record(&s.context, true, &s.id);
            Ok(r)
        })
    }

    /// Rejects a suggestion: it is not proposed again, and similar ones lose confidence.
    pub fn reject(&mut self, id: &str) -> anyhow::Result<Suggestion> {
        let s = self.find_suggestion(id)?;
        self.mutate(|f, _| {
            f.feedback.record(&s.context, false, &s.id);
            Ok(s.clone())
        })
    }

    /// Feedback counts per context.
    pub fn feedback(&self) -> &Feedback {
        &self.file.feedback
    }

    /// Uses these MAC → address resolutions for matrix and explain (this
    /// box's own table: no router is named for them).
    pub fn set_neighbours(&mut self, mut n: Vec<(IpAddr, [u8; 6])>) {
        n.sort_unstable();
        n.dedup();
        self.neighbours = n;
        self.neighbour_masks.clear();
        self.neighbour_routers.clear();
    }

    /// Uses the routers' resolutions for matrix and explain, remembering
    /// which routers reported each pair (the monitor).
    pub fn set_resolutions(&mut self, r: neighbours::Resolutions) {
        let (mut pairs, mut masks) = (Vec::with_capacity(r.pairs.len()), Vec::with_capacity(r.pairs.len()));
        let mut sorted = r.pairs;
        sorted.sort_unstable();
        for (a, m, mask) in sorted {
            if pairs.last() == Some(&(a, m)) {
                if let Some(last) = masks.last_mut() {
                    *last |= mask;
                }
                continue;
            }
            pairs.push((a, m));
            masks.push(mask);
        }
        // A router whose table resolves anything is heard from: a
        // membership only its table makes is then one router's word of several.
        let mut any = 0u64;
        for m in &masks {
            any |= m;
        }
        for (i, router) in r.routers.iter().enumerate().take(64) {
            if any >> i & 1 == 1 {
                self.matrix.note_reporter(router);
            }
        }
        self.neighbours = pairs;
        self.neighbour_masks = masks;
        self.neighbour_routers = r.routers;
    }

    /// Whether any group lists a MAC (then neighbours are worth resolving).
    pub fn uses_macs(&self) -> bool {
        self.policy()
            .groups
            .values()
            .any(|g| g.parsed_members().unwrap_or_default().iter().any(|m| matches!(m, Member::Mac(_))))
    }

    /// The parsed members of every group (parsed once per batch or alert).
    fn parsed_groups(&self) -> Vec<(String, Vec<Member>)> {
        self.policy()
            .groups
            .into_values()
            .map(|g| {
                let m = g.parsed_members().unwrap_or_default();
                (g.name, m)
            })
            .collect()
    }

    /// Counts a flow batch into the matrix (members are parsed once per
    /// batch), naming the router that sent it (`batch.node`, which the bus
    /// checked against the sender's certificate).
    pub fn observe_batch(&mut self, batch: &FlowBatch) {
        let groups = self.parsed_groups();
        if groups.is_empty() {
            return;
        }
        self.matrix.note_reporter(&batch.node);
        let res = Resolver { pairs: &self.neighbours, masks: &self.neighbour_masks, routers: &self.neighbour_routers };
        for f in &batch.flows {
            let sg = res.memberships(&groups, &f.src);
            if sg.is_empty() {
                continue;
            }
            let dg = res.memberships(&groups, &f.dst);
            if !dg.is_empty() {
                self.proofs.note(f);
                self.matrix.observe_from(f, Some(&batch.node), &sg, &dg);
                self.matrix_dirty = true;
            }
        }
        // Alerts that arrived ahead of the flows proving their source count now.
        let late = self.proofs.take_late_proofs();
        if !late.is_empty() {
            let p = self.policy();
            for c in &late {
                let sg = p.groups_of(&c.src, &self.neighbours);
                let dg = p.groups_of(&c.dst, &self.neighbours);
                self.alerts.prove_later(c, &sg, &dg);
            }
        }
    }

    /// Counts a scan / brute-force alert between groups; only one whose
    /// source the flows prove real ([`proof`]) can make a deny. One they do
    /// not prove yet is judged again as flows arrive (they may come later).
    pub fn observe_alert(&mut self, a: &Alert) {
        let (Some(src), Some(dst)) = (a.src, a.dst) else { return };
        let groups = self.parsed_groups();
        let res = Resolver { pairs: &self.neighbours, masks: &self.neighbour_masks, routers: &self.neighbour_routers };
        let sg = res.memberships(&groups, &src);
        let dg = res.memberships(&groups, &dst);
        if !sg.is_empty() && !dg.is_empty() {
            let proven = self.proofs.proven(a);
            if matches!(a.kind, AttackKind::PortScan | AttackKind::HostSweep | AttackKind::BruteForce) {
                self.matrix.note_reporter(&a.node);
            }
            self.alerts.record(a, &sg, &dg, proven);
            if !proven {
                self.proofs.wait_for_proof(a);
            }
            self.matrix_dirty = true;
        }
    }

    /// The matrix and per-pair totals for the page and API.
    pub fn matrix_json(&self) -> serde_json::Value {
        let mut cells: Vec<serde_json::Value> = self
            .matrix
            .cells()
            .map(|(k, c)| serde_json::json!({"src": k.src, "dst": k.dst, "proto": k.proto, "port": k.port, "cell": c}))
            .collect();
        cells.sort_by_key(|c| c.to_string());
        let pairs: Vec<serde_json::Value> = self
            .matrix
            .pairs()
            .into_iter()
            .map(|((s, d), t)| serde_json::json!({"src": s, "dst": d, "totals": t}))
            .collect();
        serde_json::json!({
            "groups": self.policy().groups.keys().collect::<Vec<_>>(),
            "pairs": pairs,
            "cells": cells,
            "max_cells": self.matrix.max_cells,
            "bucket_s": self.matrix.bucket_s,
            "evicted": self.matrix.evicted,
            "reporters": self.matrix.reporters,
            "alerts": self.alerts.pairs,
        })
    }

    /// Writes `matrix.json` now.
    pub fn save_matrix(&mut self) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let m = MatrixFile { matrix: self.matrix.clone(), alerts: self.alerts.clone() };
        write_atomic(&self.matrix_path(), serde_json::to_string(&m)?.as_bytes())?;
        self.matrix_dirty = false;
        self.last_matrix_save = Instant::now();
        Ok(())
    }

    /// Whether the matrix changed since it was last saved.
    pub fn matrix_dirty(&self) -> bool {
        self.matrix_dirty
    }

    /// Writes `matrix.json` if it changed and the save interval passed.
    pub fn maybe_save_matrix(&mut self) -> anyhow::Result<()> {
        if self.matrix_dirty && self.last_matrix_save.elapsed() >= Duration::from_secs(self.cfg.save_interval_s) {
            self.save_matrix()?;
        }
        Ok(())
    }

    /// The traffic matrix (read-only).
    pub fn matrix(&self) -> &TrafficMatrix {
        &self.matrix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_touches_nothing_on_disk_and_the_first_change_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        let cfg = PolicyConfig { state_dir: state.clone(), ..PolicyConfig::default() };
        let mut e = PolicyEngine::open(&cfg).unwrap();
        assert!(!state.exists(), "a monitor with no policy leaves the disk alone");
        e.add_group(Group { name: "g".into(), members: vec!["192.0.2.1".into()], description: String::new() }, false)
            .unwrap();
        assert!(state.join("policy.json").exists() && !state.join("policy.lock").exists());
    }

    // ------------------------------------------------ hostile traffic (red team)

    use gatewarden_proto::conn_state::ConnState;
    use gatewarden_proto::messages::{AlertAction, AttackKind, FlowRecord, Proto, Severity};

    const CAMERAS: &str = "192.0.2.0/28";
    const SENSORS: &str = "198.51.100.0/28";

    fn red_engine(dir: &Path) -> PolicyEngine {
        let cfg = PolicyConfig { state_dir: dir.to_path_buf(), bucket_s: 10, ..PolicyConfig::default() };
        let mut e = PolicyEngine::open(&cfg).unwrap();
        for (name, member) in [("cameras", CAMERAS), ("sensors", SENSORS)] {
            e.add_group(Group { name: name.into(), members: vec![member.into()], description: String::new() }, false)
                .unwrap();
        }
        e
    }

    /// A TCP flow as the router reports it: `proven` when the originator
    /// acknowledged the responder's sequence numbers (`src_answered`).
    fn tcp(id: u64, src: &str, dport: u16, t: u64, state: ConnState, proven: bool) -> FlowRecord {
        FlowRecord {
            flow_id: id,
            src: src.parse().unwrap(),
            dst: "198.51.100.5".parse().unwrap(),
            sport: 40000 + (id % 20000) as u16,
            dport,
            proto: Proto::Tcp,
            first_ns: t * 1_000_000_000,
            last_ns: t * 1_000_000_000 + 5_000_000,
            fwd_packets: if proven { 6 } else { 2 },
            rev_packets: if proven { 5 } else { 1 },
            fwd_bytes: if proven { 400 } else { 100 },
            rev_bytes: if proven { 300 } else { 44 },
            conn_state: state,
            src_answered: proven,
        }
    }

    fn feed(e: &mut PolicyEngine, flows: Vec<FlowRecord>) {
        feed_from(e, "r", flows);
    }

    /// A scan alert as the detector sends it: filed under the router whose
    /// flows raised it (the one [`feed`] names).
    fn scan_alert(src: &str, t: u64) -> Alert {
        Alert {
            id: 7,
            ts_ns: t * 1_000_000_000,
            node: "r".into(),
            flow_id: 0,
            kind: AttackKind::PortScan,
            severity: Severity::High,
            src: Some(src.parse().unwrap()),
            dst: Some("198.51.100.5".parse().unwrap()),
            sport: 0,
            dport: 0,
            proto: Some(Proto::Tcp),
            action: AlertAction::Allowed,
            signature_id: 1,
            signature: "scan".into(),
            confidence: 0.9,
            reason: String::new(),
            flow: None,
            not_blocked: None,
            in_iface: String::new(),
        }
    }

    /// A LAN host forging a camera's address sends SYNs to a sensor's telnet
    /// port: the sensor's SYN-ACK goes to the real camera, which resets it
    /// (`RSTO`) or ignores it (`S1`). Nothing came back to the forger, and no
    /// camera ever logged in; the same records come from a SYN scan of an
    /// open port repeated now and then. They must not read as a stable,
    /// answered service the cameras use: an accepted "allow cameras ->
    /// sensors tcp/23" at priority 100 outranks every suggested deny, so a
    /// later scan or guessing deny leaves telnet open to the whole group.
    #[test]
    fn forged_or_half_open_syns_never_make_an_allow_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let mut flows = Vec::new();
        for i in 0..30u64 {
            let state = if i % 2 == 0 { ConnState::RSTO } else { ConnState::S1 };
            flows.push(tcp(i + 1, "192.0.2.4", 23, 1_000 + i, state, false));
        }
        // The cameras' real MQTT: completed handshakes, over three buckets.
        for i in 0..6u64 {
            flows.push(tcp(100 + i, "192.0.2.5", 1883, 1_000 + i * 5, ConnState::SF, true));
        }
        feed(&mut e, flows);
        let s = e.suggestions(None);
        let allowed: Vec<String> =
            s.iter().filter(|s| s.rule.action == Action::Allow).map(|s| s.rule.port_range.to_string()).collect();
        assert_eq!(allowed, ["1883"], "{s:#?}");
    }

    /// One host (a compromised camera, or a LAN host forging a camera's
    /// address) scans a sensor while every camera uses the sensor's MQTT
    /// (proven: completed handshakes), and no rule allows MQTT yet. The
    /// scan's deny is for the whole pair, `cameras -> sensors tcp/any`: a
    /// suggestion that, accepted, cuts every camera's MQTT. It must wait
    /// until a rule above it keeps the service the pair uses.
    #[test]
    fn a_scan_from_one_members_address_never_suggests_a_deny_that_cuts_the_groups_service() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let mut flows = Vec::new();
        for i in 0..20u64 {
            let cam = format!("192.0.2.{}", 4 + i % 3);
            flows.push(tcp(100 + i, &cam, 1883, 1_000 + i * 5, ConnState::SF, true));
        }
        // The scan: 30 ports refused, all "from" 192.0.2.4.
        for p in 0..30u64 {
            flows.push(tcp(1_000 + p, "192.0.2.4", 2_000 + p as u16, 1_200, ConnState::REJ, false));
        }
        feed(&mut e, flows);
        e.observe_alert(&scan_alert("192.0.2.4", 1_200));
        let cuts_mqtt = |e: &PolicyEngine| {
            let x = e.explain("192.0.2.6", "198.51.100.5", "tcp", Some(1883)).unwrap();
            x.action == Action::Deny
        };
        // Accept whatever deny is shown for the pair, as a busy admin would.
        for s in e.suggestions(None) {
            if s.rule.action == Action::Deny && s.rule.port_range == PortRange::ANY {
                e.accept(&s.id).unwrap();
                assert!(!cuts_mqtt(&e), "accepting {} ({}) cut the cameras' MQTT", s.id, s.justification);
            }
        }
        // Once MQTT is allowed, the scan's deny is offered and cuts only what nobody uses.
        let allow = e.suggestions(None).into_iter().find(|s| s.rule.action == Action::Allow).unwrap();
        assert_eq!(allow.rule.port_range, PortRange::one(1883));
        e.accept(&allow.id).unwrap();
        let deny = e
            .suggestions(None)
            .into_iter()
            .find(|s| s.rule.action == Action::Deny && s.rule.port_range == PortRange::ANY)
            .expect("the scan's deny once the service is allowed");
        e.accept(&deny.id).unwrap();
        assert!(!cuts_mqtt(&e));
        assert_eq!(e.explain("192.0.2.6", "198.51.100.5", "tcp", Some(2_001)).unwrap().action, Action::Deny);
    }

    /// The same, with the scan spread over more ports than the matrix holds
    /// cells: the least recently seen cells went first, and that was the
    /// cameras' MQTT, so the matrix forgot the service the deny must keep.
    #[test]
    fn probing_more_ports_than_the_matrix_holds_does_not_erase_the_service_a_deny_must_keep() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            PolicyConfig { state_dir: dir.path().to_path_buf(), bucket_s: 10, max_cells: 64, ..Default::default() };
        let mut e = PolicyEngine::open(&cfg).unwrap();
        for (name, member) in [("cameras", CAMERAS), ("sensors", SENSORS)] {
            e.add_group(Group { name: name.into(), members: vec![member.into()], description: String::new() }, false)
                .unwrap();
        }
        let mut flows = Vec::new();
        for i in 0..20u64 {
            flows.push(tcp(100 + i, "192.0.2.5", 1883, 1_000 + i * 5, ConnState::SF, true));
        }
        for p in 0..500u64 {
            flows.push(tcp(1_000 + p, "192.0.2.4", 2_000 + p as u16, 1_200 + p / 50, ConnState::REJ, false));
        }
        feed(&mut e, flows);
        e.observe_alert(&scan_alert("192.0.2.4", 1_200));
        for s in e.suggestions(None) {
            if s.rule.action == Action::Deny && s.rule.port_range == PortRange::ANY {
                e.accept(&s.id).unwrap();
                let x = e.explain("192.0.2.5", "198.51.100.5", "tcp", Some(1883)).unwrap();
                assert_eq!(x.action, Action::Allow, "accepting {} cut the cameras' MQTT", s.justification);
            }
        }
    }

    /// A LAN host forging a camera's address floods a sensor's SSH port with
    /// SYNs (or a SYN scan keeps hitting it): the sensor's SYN-ACKs go to the
    /// real camera, which resets or ignores them, and no password was ever
    /// tried — a guesser has to complete the handshake to send one. Counted
    /// as "connection attempts to a login port", 30 of them made the policy
    /// suggest `deny cameras -> sensors tcp/22` for every camera. Only
    /// connections the originator completed (`src_answered`) count; a real
    /// guesser's short sessions still make the suggestion.
    #[test]
    fn forged_or_half_open_syns_to_a_login_port_never_suggest_a_password_guessing_deny() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let mut flows = Vec::new();
        for i in 0..30u64 {
            let state = [ConnState::S0, ConnState::RSTO, ConnState::S1][i as usize % 3];
            flows.push(tcp(i + 1, "192.0.2.4", 22, 1_000 + i, state, false));
        }
        feed(&mut e, flows);
        let guessing = |e: &PolicyEngine| deny_on(e, 22);
        assert!(guessing(&e).is_none(), "{:#?}", e.suggestions(None));
        // A real guesser: a camera completing 12 short SSH sessions, a few passwords each.
        feed(&mut e, (0..12u64).map(|i| tcp(100 + i, "192.0.2.7", 22, 1_100 + i * 2, ConnState::SF, true)).collect());
        let s = guessing(&e).expect("real password guessing still suggests the deny");
        assert!(s.justification.contains("12 completed connections"), "{}", s.justification);
    }

    /// One camera (compromised, or a host forging its address) scans a
    /// sensor. The deny is for every camera, `cameras -> sensors tcp/any`,
    /// and was shown first at 0.99 with a reason that never said it was all
    /// one address. One member's behaviour is evidence about that device, not
    /// about its group: the reason counts the distinct member addresses and
    /// names a lone one, whose group-wide deny stays below an even chance;
    /// when several members probe, the deny gets its full confidence.
    #[test]
    fn a_group_wide_deny_counts_the_members_that_did_it_and_one_member_alone_is_weak_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        feed(
            &mut e,
            (0..30u64).map(|p| tcp(1_000 + p, "192.0.2.4", 2_000 + p as u16, 1_200, ConnState::REJ, false)).collect(),
        );
        e.observe_alert(&scan_alert("192.0.2.4", 1_200));
        let scan_deny = |e: &PolicyEngine| {
            e.suggestions(None)
                .into_iter()
                .find(|s| s.rule.action == Action::Deny && s.rule.port_range == PortRange::ANY)
                .expect("the scan's deny")
        };
        let one = scan_deny(&e);
        let why = &one.justification;
        assert!(why.contains("from 1 member address (192.0.2.4)"), "{why}");
        assert!(why.contains("look at that device"), "{why}");
        assert!(one.confidence < 0.5, "{} {why}", one.confidence);
        // Two more cameras probe too: now it is the group's pattern.
        let cams = ["192.0.2.5", "192.0.2.6"];
        feed(
            &mut e,
            (0..40u64)
                .map(|p| tcp(2_000 + p, cams[p as usize % 2], 3_000 + p as u16, 1_210, ConnState::REJ, false))
                .collect(),
        );
        let three = scan_deny(&e);
        let why = &three.justification;
        assert!(why.contains("from 3 member addresses"), "{why}");
        assert!(!why.contains("look at that device"), "{why}");
        assert!(three.confidence > 0.9, "{} {why}", three.confidence);
    }

    /// The same for password guessing: one camera completing short SSH
    /// sessions to a sensor is that camera's problem; a deny for every
    /// camera on its strength alone is weighted down (exactly
    /// `ONE_MEMBER_WEIGHT` times the evidence) and says which device to look
    /// at. When three cameras guess, the deny counts them and keeps the
    /// evidence `1 − exp(−completed/50)` whole.
    #[test]
    fn password_guessing_by_one_member_is_weak_evidence_against_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let guess = |id: u64, cam: &str| {
            (0..12u64).map(|i| tcp(id + i, cam, 22, 1_100 + i * 2, ConnState::SF, true)).collect::<Vec<_>>()
        };
        feed(&mut e, guess(100, "192.0.2.7"));
        let deny = |e: &PolicyEngine| deny_on(e, 22).expect("the guessing deny");
        let one = deny(&e);
        let why = &one.justification;
        assert!(why.contains("from 1 member address (192.0.2.7)") && why.contains("look at that device"), "{why}");
        let ev = 1.0 - (-12.0f64 / 50.0).exp();
        let weighted = suggest::ONE_MEMBER_WEIGHT * ev;
        assert!((one.confidence - weighted).abs() < 1e-12, "{} vs {weighted} ({why})", one.confidence);
        feed(&mut e, guess(200, "192.0.2.8"));
        feed(&mut e, guess(300, "192.0.2.9"));
        let three = deny(&e);
        let why = &three.justification;
        assert!(why.contains("36 completed connections") && why.contains("from 3 member addresses"), "{why}");
        let ev = 1.0 - (-36.0f64 / 50.0).exp();
        assert!((three.confidence - ev).abs() < 1e-12, "{} vs {ev} ({why})", three.confidence);
    }

    /// A brute-force alert as the detector sends it: about `src`, naming
    /// `port` and the connection (`flow_id`) that crossed its limit.
    fn guess_alert(src: &str, flow_id: u64, port: u16, t: u64) -> Alert {
        let mut a = scan_alert(src, t);
        (a.kind, a.flow_id, a.dport) = (AttackKind::BruteForce, flow_id, port);
        a
    }

    /// A LAN host forges the addresses of two cameras that really use a
    /// sensor's MQTT, and sends SYNs to that port fast enough for the
    /// detector's `brute_force` rule (it counts MQTT among the login ports).
    /// Each alert names a SYN nobody completed: nothing proves its source.
    /// Counted, they made the policy suggest `deny cameras -> sensors
    /// tcp/1883` first, at full confidence ("from 2 member addresses"), and
    /// accepting it cut every camera's MQTT. Only an alert whose source
    /// completed the attempts itself counts towards a deny (the named SYN
    /// was not even completed here; see the next test for one that was).
    #[test]
    fn brute_force_alerts_about_forged_member_addresses_never_make_a_deny() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let cams = ["192.0.2.5", "192.0.2.6"];
        // The cameras' real MQTT: completed handshakes, over several buckets.
        let mut flows: Vec<FlowRecord> =
            (0..12u64).map(|i| tcp(100 + i, cams[i as usize % 2], 1883, 1_000 + i * 5, ConnState::SF, true)).collect();
        // The forged SYNs: nobody completed them.
        flows.extend(
            (0..40u64).map(|i| tcp(1_000 + i, cams[i as usize % 2], 1883, 1_100 + i / 4, ConnState::S0, false)),
        );
        feed(&mut e, flows);
        for (i, cam) in cams.iter().enumerate() {
            for n in 0..3u64 {
                e.observe_alert(&guess_alert(cam, 1_000 + i as u64 + 10 * n, 1883, 1_101 + n));
            }
        }
        let denies = denies_of_port(&e, 1883);
        assert!(denies.is_empty(), "unproven alerts made a deny of the cameras' MQTT: {denies:#?}");
        // They are still shown: tallied, apart from the proven ones.
        let tally = &e.matrix_json()["alerts"]["cameras>sensors"];
        assert_eq!(
            (tally["by_kind"]["brute_force"].as_u64(), tally["proven"]["ports"].as_object().map(|p| p.len())),
            (Some(6), Some(0)),
            "{tally}"
        );
        for s in e.suggestions(None) {
            if s.rule.action == Action::Deny {
                e.accept(&s.id).unwrap();
            }
        }
        assert_eq!(e.explain("192.0.2.6", "198.51.100.5", "tcp", Some(1883)).unwrap().action, Action::Allow);
    }

    /// One camera really guesses SSH passwords on a sensor (completed
    /// sessions, and an alert about one of them); a LAN host forging three
    /// other cameras' addresses adds brute-force alerts about them. The
    /// deny counted 4 member addresses and lost the one-member weight
    /// (0.98 instead of ~0.3). The forged alerts are named as not counted,
    /// and the deny rests on the one proven member.
    #[test]
    fn forged_brute_force_alerts_do_not_inflate_the_member_count_of_a_deny() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let mut flows: Vec<FlowRecord> =
            (0..4u64).map(|i| tcp(100 + i, "192.0.2.7", 22, 1_100 + i * 2, ConnState::SF, true)).collect();
        let forged = ["192.0.2.4", "192.0.2.5", "192.0.2.6"];
        flows.extend(
            (0..30u64).map(|i| tcp(1_000 + i, forged[i as usize % 3], 22, 1_100 + i / 3, ConnState::S0, false)),
        );
        feed(&mut e, flows);
        e.observe_alert(&guess_alert("192.0.2.7", 103, 22, 1_106));
        for (i, src) in forged.iter().enumerate() {
            for n in 0..2u64 {
                e.observe_alert(&guess_alert(src, 1_000 + i as u64 + 3 * n, 22, 1_101 + n));
            }
        }
        let deny = deny_on(&e, 22).expect("the proven guesser's deny");
        let why = &deny.justification;
        assert!(why.contains("from 1 member address (192.0.2.7)") && why.contains("look at that device"), "{why}");
        assert!(why.contains("1 brute-force alerts whose source completed its attempts"), "{why}");
        assert!(why.contains("6 more about unproven sources do not count"), "{why}");
        // 1 − 0.5¹·exp(−4/50), one member's weight.
        let ev = suggest::ONE_MEMBER_WEIGHT * (1.0 - 0.5 * (-4.0f64 / 50.0).exp());
        assert!((deny.confidence - ev).abs() < 1e-12, "{} vs {ev} ({why})", deny.confidence);
    }

    /// The deny suggestion for one port, if any.
    fn deny_on(e: &PolicyEngine, port: u16) -> Option<Suggestion> {
        e.suggestions(None)
            .into_iter()
            .find(|s| s.rule.action == Action::Deny && s.rule.port_range == PortRange::one(port))
    }

    /// The deny suggestions for one port, with confidence and justification.
    fn denies_of_port(e: &PolicyEngine, port: u16) -> Vec<String> {
        e.suggestions(None)
            .iter()
            .filter(|s| s.rule.action == Action::Deny && s.rule.port_range == PortRange::one(port))
            .map(|s| format!("{:.2} {}", s.confidence, s.justification))
            .collect()
    }

    /// The cameras' real MQTT: each reconnects to the sensor every 4 s
    /// (completed connections), from `t0` to `t1`.
    fn mqtt_reconnects(cam: &str, id: u64, t0: u64, t1: u64) -> Vec<FlowRecord> {
        (t0..=t1).step_by(4).enumerate().map(|(i, t)| tcp(id + i as u64, cam, 1883, t, ConnState::SF, true)).collect()
    }

    /// A LAN host sends 19 SYNs forged with camera A's address to the
    /// sensor's MQTT in 9 s; the detector's `brute_force` rule counts
    /// unanswered attempts too (20 in 10 s), so camera A's next real
    /// reconnect is attempt 20, and the alert names it: a connection its
    /// sender completed. The same for camera B. The policy counted both
    /// alerts as proven ("from 2 member addresses", no one-member weight)
    /// and suggested `deny cameras -> sensors tcp/1883`, its confidence
    /// growing with every round. A brute-force alert counts only when its
    /// source completed at least half the detector's attempts in the
    /// detector's window: a reconnecting device completes 3.
    #[test]
    fn forged_syns_that_make_a_real_reconnect_cross_the_brute_force_limit_never_make_a_deny() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let cams = ["192.0.2.5", "192.0.2.6"];
        for (c, cam) in cams.iter().enumerate() {
            let base = 10_000 * (c as u64 + 1);
            // Real reconnects every 4 s, 1000 … 1100 s: the last one is attempt 20.
            let mut flows = mqtt_reconnects(cam, base, 1_000, 1_100);
            let named = flows.last().unwrap().flow_id;
            // 19 forged SYNs in the 9 s before it: nobody completes them.
            flows.extend((0..19u64).map(|i| tcp(base + 1_000 + i, cam, 1883, 1_091 + i / 2, ConnState::S0, false)));
            feed(&mut e, flows);
            e.observe_alert(&guess_alert(cam, named, 1883, 1_100));
        }
        let denies = denies_of_port(&e, 1883);
        assert!(denies.is_empty(), "forged SYNs plus real reconnects made a deny of the cameras' MQTT: {denies:#?}");
        let tally = &e.matrix_json()["alerts"]["cameras>sensors"];
        assert_eq!(
            (tally["by_kind"]["brute_force"].as_u64(), tally["proven"]["ports"].as_object().map(|p| p.len())),
            (Some(2), Some(0)),
            "{tally}"
        );
    }

    /// A real connection-per-password guesser (`mosquitto_pub -P <guess>`:
    /// 20 completed connections in under a second) is proven by what it
    /// completed, whichever connection the alert names.
    #[test]
    fn a_guesser_that_completes_its_attempts_is_proven() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let mut flows = mqtt_reconnects("192.0.2.5", 100, 1_000, 1_100);
        flows.extend((0..20u64).map(|i| tcp(1_000 + i, "192.0.2.9", 1883, 1_100, ConnState::SF, true)));
        feed(&mut e, flows);
        e.observe_alert(&guess_alert("192.0.2.9", 1_019, 1883, 1_100));
        let deny = deny_on(&e, 1883).expect("the proven guesser's deny");
        let why = &deny.justification;
        assert!(why.contains("1 brute-force alerts whose source completed"), "{why}");
        assert!(why.contains("from 1 member address (192.0.2.9)"), "{why}");
    }

    /// A proven SSH guesser (camera .7) and a proven MQTT guesser (camera
    /// .8): the 1883 deny merged every port's proven sources, so it said
    /// "from 2 member addresses" and dropped the one-member weight though
    /// only .8 guessed there. Each port's deny names its own guessers.
    #[test]
    fn a_proven_guesser_on_one_port_is_not_a_member_of_another_ports_deny() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let mut flows: Vec<FlowRecord> =
            (0..20u64).map(|i| tcp(100 + i, "192.0.2.7", 22, 1_100, ConnState::SF, true)).collect();
        flows.extend((0..20u64).map(|i| tcp(200 + i, "192.0.2.8", 1883, 1_100, ConnState::SF, true)));
        feed(&mut e, flows);
        e.observe_alert(&guess_alert("192.0.2.7", 119, 22, 1_100));
        e.observe_alert(&guess_alert("192.0.2.8", 219, 1883, 1_100));
        let deny = deny_on(&e, 1883).expect("the MQTT guesser's deny");
        let why = &deny.justification;
        assert!(why.contains("from 1 member address (192.0.2.8)"), "{why}");
        let ev = suggest::ONE_MEMBER_WEIGHT * 0.5;
        assert!((deny.confidence - ev).abs() < 1e-12, "{} vs {ev} ({why})", deny.confidence);
    }

    /// The monitor records an alert ahead of a backlog of flow batches (and
    /// the detector may raise it on the crossing connection's first
    /// snapshot, before its ACK): the flows that prove the guesser arrive
    /// after the alert. It was judged once, on arrival, and stayed
    /// unproven. Unproven alerts wait (bounded, 120 s) and are judged again
    /// as completed connections arrive; a scan alert too.
    #[test]
    fn an_alert_proven_by_flows_that_arrive_after_it_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        e.observe_alert(&guess_alert("192.0.2.9", 1_019, 1883, 1_100));
        e.observe_alert(&scan_alert("192.0.2.4", 1_200));
        let tally = |e: &PolicyEngine| e.matrix_json()["alerts"]["cameras>sensors"]["proven"].clone();
        assert_eq!(tally(&e)["ports"], serde_json::json!({}), "nothing proves them yet");
        feed(&mut e, (0..20u64).map(|i| tcp(1_000 + i, "192.0.2.9", 1883, 1_100, ConnState::SF, true)).collect());
        feed(&mut e, vec![tcp(2_000, "192.0.2.4", 1883, 1_230, ConnState::SF, true)]);
        let t = tally(&e);
        assert_eq!((t["ports"]["1883"].as_u64(), t["scans"].as_u64()), (Some(1), Some(1)), "{t}");
        assert_eq!(t["guess_ports"]["1883"]["addrs"], serde_json::json!(["192.0.2.9"]), "{t}");
        // Once only: more proof does not count the alert again.
        feed(&mut e, (0..20u64).map(|i| tcp(3_000 + i, "192.0.2.9", 1883, 1_100, ConnState::SF, true)).collect());
        assert_eq!(tally(&e)["ports"]["1883"].as_u64(), Some(1));
        let deny = deny_on(&e, 1883).expect("the late-proven guesser's deny");
        assert!(deny.justification.contains("1 brute-force alerts whose source completed"), "{}", deny.justification);
    }

    /// Scan alerts about three cameras' addresses, none of which answered
    /// anything the sensor sent (the probes' flows were shed on the way, or
    /// arrive later): alone they made `deny cameras -> sensors tcp/any` at
    /// 0.88 "from 3 member addresses". A scan alert counts only when its
    /// source acknowledged what the target sent it in the last 120 s.
    #[test]
    fn scan_alerts_about_unproven_sources_alone_never_make_a_deny() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        for src in ["192.0.2.4", "192.0.2.5", "192.0.2.6"] {
            e.observe_alert(&scan_alert(src, 1_200));
        }
        let denies: Vec<String> = e
            .suggestions(None)
            .iter()
            .filter(|s| s.rule.action == Action::Deny)
            .map(|s| format!("{:.2} {}", s.confidence, s.justification))
            .collect();
        assert!(denies.is_empty(), "{denies:#?}");
        // The same alert about a camera that completed an MQTT session with the sensor a minute before
        // counts; so does the earlier one about it, which waited for that proof.
        feed(&mut e, vec![tcp(100, "192.0.2.5", 1883, 1_140, ConnState::SF, true)]);
        e.observe_alert(&scan_alert("192.0.2.5", 1_200));
        let deny = e
            .suggestions(None)
            .into_iter()
            .find(|s| s.rule.action == Action::Deny && s.rule.port_range == PortRange::ANY);
        // MQTT is in use and no rule keeps it: the deny waits (see the test above), so allow it first.
        assert!(deny.is_none());
        e.create_rule(&RuleSpec {
            source_group: "cameras".into(),
            destination_group: "sensors".into(),
            protocol: "tcp".into(),
            port_range: "1883".into(),
            action: "allow".into(),
            priority: 100,
            comment: String::new(),
        })
        .unwrap();
        let deny = e
            .suggestions(None)
            .into_iter()
            .find(|s| s.rule.action == Action::Deny && s.rule.port_range == PortRange::ANY)
            .expect("a proven scan alert's deny");
        let why = &deny.justification;
        assert!(why.contains("2 scan alerts from the detector whose source was proven"), "{why}");
        assert!(why.contains("2 more about unproven sources do not count"), "{why}");
        assert!(why.contains("from 1 member address (192.0.2.5)"), "{why}");
    }

    /// A real guesser completes its sessions, and they recur: the allow pattern. With
    /// brute-force alerts naming the port, the policy suggested `allow cameras ->
    /// sensors tcp/22` at priority 100, above the guessing deny it also suggested.
    #[test]
    fn a_port_named_in_brute_force_alerts_is_never_suggested_as_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        let sessions: Vec<_> =
            (0..12u64).map(|i| tcp(100 + i, "192.0.2.7", 22, 1_100 + i * 2, ConnState::SF, true)).collect();
        feed(&mut e, sessions);
        let allows_ssh = |e: &PolicyEngine| {
            e.suggestions(None)
                .into_iter()
                .any(|s| s.rule.action == Action::Allow && s.rule.port_range == PortRange::one(22))
        };
        assert!(allows_ssh(&e), "recurring completed sessions alone look like a service in use");
        let mut guess = scan_alert("192.0.2.7", 1_130);
        (guess.kind, guess.dport) = (AttackKind::BruteForce, 22);
        e.observe_alert(&guess);
        assert!(!allows_ssh(&e), "{:?}", e.suggestions(None).iter().map(|s| &s.justification).collect::<Vec<_>>());
        assert!(e
            .suggestions(None)
            .iter()
            .any(|s| s.rule.action == Action::Deny && s.rule.port_range == PortRange::one(22)));
    }

    // ------------------------------------------- a fleet router with a stolen certificate

    /// A batch of `flows` as router `node` sends it.
    fn feed_from(e: &mut PolicyEngine, node: &str, flows: Vec<FlowRecord>) {
        e.observe_batch(&FlowBatch {
            node: node.into(),
            seq: 1,
            flows,
            hosts: vec![],
            in_iface: String::new(),
            shed: vec![],
        });
    }

    /// router-3 (a stolen certificate) sends 20 completed SSH connections
    /// from a camera to a sensor and a brute-force alert about them filed
    /// under itself: the alert is "proven" by router-3's own flows. router-1
    /// reports the cameras' real MQTT. The deny for every camera rests on
    /// router-3's word alone: it says so and names the flows and the alert
    /// (said, not weighted: only the one member's weight applies).
    #[test]
    fn a_deny_resting_on_one_routers_flows_and_its_own_proven_alert_names_that_router_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = red_engine(dir.path());
        feed_from(&mut e, "router-1", mqtt_reconnects("192.0.2.5", 100, 1_000, 1_040));
        feed_from(
            &mut e,
            "router-3",
            (0..20u64).map(|i| tcp(1_000 + i, "192.0.2.9", 22, 1_100, ConnState::SF, true)).collect(),
        );
        let mut alert = guess_alert("192.0.2.9", 1_019, 22, 1_100);
        alert.node = "router-3".into();
        e.observe_alert(&alert);
        let deny = deny_on(&e, 22).expect("the guessing deny");
        let why = &deny.justification;
        assert!(why.contains("1 brute-force alerts whose source completed"), "{why}");
        assert!(why.contains("evidence from router-3 only (20 flows, 1 alerts)"), "{why}");
        assert!(why.contains("router-1 also reports cameras -> sensors traffic, other flows"), "{why}");
        // 1 − 0.5¹·exp(−20/50), one member's weight.
        let ev = 1.0 - 0.5 * (-20.0f64 / 50.0).exp();
        let weighted = suggest::ONE_MEMBER_WEIGHT * ev;
        assert!((deny.confidence - weighted).abs() < 1e-12, "{} vs {weighted} ({why})", deny.confidence);
        // The tally names the router it is filed under, and the fleet both routers.
        let m = e.matrix_json();
        assert_eq!(m["alerts"]["cameras>sensors"]["proven"]["guess_routers"]["22"]["reports"][0]["node"], "router-3");
        assert_eq!(m["reporters"]["reports"].as_array().map(|r| r.len()), Some(2), "{}", m["reporters"]);

        // router-1 sees the same guesser: two routers' word, no router weight, both named.
        feed_from(
            &mut e,
            "router-1",
            (0..20u64).map(|i| tcp(2_000 + i, "192.0.2.9", 22, 1_101, ConnState::SF, true)).collect(),
        );
        let deny = deny_on(&e, 22).unwrap();
        let why = &deny.justification;
        assert!(why.contains("evidence from router-3 (20 flows, 1 alerts), router-1 (20 flows)"), "{why}");
        assert!(!why.contains(" only"), "{why}");
        let ev = 1.0 - 0.5 * (-40.0f64 / 50.0).exp();
        assert!((deny.confidence - suggest::ONE_MEMBER_WEIGHT * ev).abs() < 1e-12, "{} ({why})", deny.confidence);
    }

    /// A group with a MAC member: router-3's neighbour table alone puts the
    /// camera's MAC at the address of a laptop that router-1 honestly sees
    /// scanning a sensor (router-1's table has the camera elsewhere). The
    /// scan's deny for every camera rests on router-1's flows and router-3's
    /// table: it names both, and router-3's table as the only one making
    /// the laptop a camera.
    #[test]
    fn a_membership_only_one_routers_neighbour_table_makes_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PolicyConfig { state_dir: dir.path().to_path_buf(), bucket_s: 10, ..PolicyConfig::default() };
        let mut e = PolicyEngine::open(&cfg).unwrap();
        for (name, member) in [("cameras", "02:00:00:00:00:07"), ("sensors", SENSORS)] {
            e.add_group(Group { name: name.into(), members: vec![member.into()], description: String::new() }, false)
                .unwrap();
        }
        let store = neighbours::NeighbourStore::new();
        let now = Instant::now();
        let table = |node: &str, ip: &str| gatewarden_proto::messages::NeighbourTable {
            node: node.into(),
            taken_ns: 1,
            total: 1,
            entries: vec![gatewarden_proto::messages::Neighbour {
                ip: ip.parse().unwrap(),
                mac: [2, 0, 0, 0, 0, 7],
                age_s: 0,
            }],
        };
        store.record(table("router-1", "192.0.2.7"), now).unwrap();
        store.record(table("router-3", "192.0.2.66"), now).unwrap();
        e.set_resolutions(store.resolutions(now));
        // The laptop at .66 scans the sensor, as router-1 reports.
        feed_from(
            &mut e,
            "router-1",
            (0..30u64).map(|p| tcp(1_000 + p, "192.0.2.66", 2_000 + p as u16, 1_200, ConnState::REJ, false)).collect(),
        );
        let deny = e
            .suggestions(None)
            .into_iter()
            .find(|s| s.rule.action == Action::Deny && s.rule.port_range == PortRange::ANY)
            .expect("the scan's deny");
        let why = &deny.justification;
        assert!(why.contains("evidence from router-1 only (30 flows)"), "{why}");
        assert!(why.contains("by router-3's neighbour table only (30 reports)"), "{why}");
        // The explain view and the matrix agree: .66 is a camera only through router-3's table.
        let cell = &e.matrix_json()["cells"][0]["cell"];
        assert_eq!(cell["resolved_by"]["reports"][0]["node"], "router-3", "{cell}");
        assert_eq!(cell["resolved_by"]["reports"].as_array().map(|r| r.len()), Some(1), "{cell}");
        // This box's own table (the CLI reads the kernel's) resolves the same, and names no router.
        e.set_neighbours(vec![("192.0.2.66".parse().unwrap(), [2, 0, 0, 0, 0, 7])]);
        feed_from(&mut e, "router-1", vec![tcp(5_000, "192.0.2.66", 4_000, 1_201, ConnState::REJ, false)]);
        let m = e.matrix_json();
        let cell =
            m["cells"].as_array().unwrap().iter().find(|c| c["port"] == 4_000).expect("resolved by the box's table");
        assert_eq!(cell["cell"]["resolved_by"], serde_json::json!({"reports": [], "other": 0}), "{cell}");
    }
}
