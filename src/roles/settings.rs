//! A node's side of the dashboard's settings page: a `settings_update` from
//! the monitor is checked against this node's own config (the same
//! validation as `gatewarden config check`), then the detector's thresholds,
//! TTLs and response policy and the router's allowlist change in place, and the node answers
//! with a system alert the page shows per node.

use crate::config::{Config, DetectorConfig};
use crate::detect::response::ResponseConfig;
use crate::enforce::feeds::Cidr;
use gatewarden_proto::messages::{Alert, SettingsUpdate};

pub use gatewarden_proto::signatures::{
    SETTINGS_APPLIED as SIG_SETTINGS_APPLIED, SETTINGS_REFUSED as SIG_SETTINGS_REFUSED,
};

/// The parts of an update a node applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// New `[detector]` table (the model keys stay this node's own).
    pub detector: DetectorConfig,
    /// New `[enforce] allowlist`.
    pub allowlist: Vec<Cidr>,
    /// New `[response]` policy (this node's own when the update carries none).
    pub response: ResponseConfig,
}

/// Checks `update` as if it were written into `base` (this node's config).
pub fn check(update: &SettingsUpdate, base: &Config) -> Result<Checked, String> {
    let mut detector: DetectorConfig =
        serde_json::from_str(&update.detector).map_err(|e| format!("[detector] is not valid: {e}"))?;
    // Which model runs is the training page's business, and paths are per node.
    detector.model = base.detector.model.clone();
    detector.model_store = base.detector.model_store.clone();
    // The model validator's limits bound what an uploaded model may cost this node: not the page's to raise.
    detector.model_check_memory_mb = base.detector.model_check_memory_mb;
    // Where the devices are is this site's own network, not the page's.
    detector.home_net = base.detector.home_net.clone();
    detector.model_check_timeout_s = base.detector.model_check_timeout_s;
    detector.model_max_batch = base.detector.model_max_batch;
    let response: ResponseConfig = if update.response.trim().is_empty() {
        base.response.clone()
    } else {
        serde_json::from_str(&update.response).map_err(|e| format!("[response] is not valid: {e}"))?
    };
    let mut cfg = base.clone();
    cfg.detector = detector.clone();
    cfg.response = response.clone();
    cfg.enforce.allowlist = update.allowlist.clone();
    let bad = cfg.validate();
    if !bad.is_empty() {
        return Err(bad.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("; "));
    }
    let allowlist = update
        .allowlist
        .iter()
        .map(|s| s.parse::<Cidr>().map_err(|e| format!("allowlist entry {s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Checked { detector, allowlist, response })
}

/// What the monitor's settings page starts from, with this node's full
/// config validation as its check (the monitor crate knows no `Config`).
pub fn settings_base(cfg: &Config) -> crate::monitor::settings::SettingsBase {
    let base = cfg.clone();
    crate::monitor::settings::SettingsBase {
        detector: cfg.detector.clone(),
        response: cfg.response.clone(),
        allowlist: cfg.enforce.allowlist.clone(),
        data_dir: cfg.monitor.data_dir.clone(),
        check: std::sync::Arc::new(move |u| check(u, &base).map(|_| ())),
    }
}

/// The answer a node sends: applied (with what it applied) or refused (with why).
pub fn settings_alert(node: &str, version: u64, result: Result<&str, &str>) -> Alert {
    Alert::settings_result(node, version, result)
}

/// The response policy in one line, for the "settings applied" answer and the audit log.
pub fn response_summary(r: &ResponseConfig) -> String {
    let kinds: Vec<String> =
        crate::detect::response::KINDS.iter().map(|k| format!("{} {}", k.as_str(), r.action(*k).as_str())).collect();
    format!(
        "response policy: {}; model alone {}, baseline alone {}, scans block at {} % unanswered",
        kinds.join(", "),
        r.model_alone.as_str(),
        r.baseline_alone.as_str(),
        r.scan_min_unanswered_pct
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(detector: &str, allow: &[&str]) -> SettingsUpdate {
        SettingsUpdate {
            version: 1,
            detector: detector.into(),
            allowlist: allow.iter().map(|s| s.to_string()).collect(),
            by: "t".into(),
            response: String::new(),
        }
    }

    #[test]
    fn home_net_stays_the_nodes_own() {
        let mut base = Config::default();
        base.detector.home_net = vec!["192.0.2.0/24".into()];
        // The page sends no home_net (it is node-only), and one it forged is ignored too.
        for d in [r#"{"block_ttl_s": 1200}"#, r#"{"home_net": ["0.0.0.0/0"]}"#] {
            let c = check(&update(d, &[]), &base).unwrap();
            assert_eq!(c.detector.home_net, vec!["192.0.2.0/24".to_string()], "{d}");
        }
    }

    #[test]
    fn a_valid_update_is_checked_against_the_nodes_config_and_keeps_its_model_paths() {
        let mut base = Config::default();
        base.detector.model = "off".into();
        let d = DetectorConfig { block_ttl_s: 900, model: "/elsewhere.tflite".into(), ..Default::default() };
        let c = check(&update(&serde_json::to_string(&d).unwrap(), &["192.0.2.0/24", "2001:db8::/32"]), &base).unwrap();
        assert_eq!(c.detector.block_ttl_s, 900);
        assert_eq!(c.detector.model, "off", "the model is not the settings page's to change");
        assert_eq!(c.allowlist.len(), 2);
    }

    #[test]
    fn bad_values_unknown_keys_and_bad_networks_are_refused_with_the_reason() {
        let base = Config::default();
        let e = check(&update("{\"model_threshold\": 1.5}", &[]), &base).unwrap_err();
        assert!(e.contains("detector.model_threshold") && e.contains("1.5"), "{e}");
        let e = check(&update("{\"no_such_knob\": 1}", &[]), &base).unwrap_err();
        assert!(e.contains("no_such_knob"), "{e}");
        let e = check(&update("{}", &["192.0.2.1/24"]), &base).unwrap_err();
        assert!(e.contains("192.0.2.1/24"), "{e}");
        // An admin token must not switch blocking off with two half-spaces.
        let e = check(&update("{}", &["0.0.0.0/1", "128.0.0.0/1"]), &base).unwrap_err();
        assert!(e.contains("enforce.allowlist") && e.contains("allowlist_force"), "{e}");
        let mut u = update("{}", &[]);
        u.response = "{\"syn_flood\": \"drop\"}".into();
        let e = check(&u, &base).unwrap_err();
        assert!(e.contains("[response]") && e.contains("`block`, `alert`, `ignore`"), "{e}");
        u.response = "{\"scan_min_unanswered_pct\": 120}".into();
        let e = check(&u, &base).unwrap_err();
        assert!(e.contains("response.scan_min_unanswered_pct"), "{e}");
        u.response = "{\"syn_flood\": \"alert\"}".into();
        assert_eq!(check(&u, &base).unwrap().response.syn_flood, crate::detect::response::Action::Alert);
        let a = settings_alert("det-1", 7, Err("x"));
        assert!(a.reason.starts_with("settings 7: refused on det-1"), "{}", a.reason);
    }
}

#[cfg(test)]
mod store_tests {
    //! The monitor's settings store with this binary's real config check.
    use super::*;
    use crate::monitor::settings::{SettingsStore, RESEND};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn store(dir: &std::path::Path, sent: &Arc<AtomicUsize>) -> SettingsStore {
        let mut cfg = Config::default();
        cfg.monitor.data_dir = dir.to_path_buf();
        let s = SettingsStore::open(settings_base(&cfg));
        let sent = sent.clone();
        s.set_sender(Arc::new(move |_| {
            sent.fetch_add(1, Ordering::SeqCst);
            true
        }));
        s
    }

    #[test]
    fn saved_settings_survive_a_restart_and_are_resent_only_while_a_node_needs_them() {
        let d = tempfile::tempdir().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let a = store(d.path(), &sent);
        assert_eq!(a.json()["saved"], false);
        a.resend_if_due(&[("r1".into(), 1)]);
        assert_eq!(sent.load(Ordering::SeqCst), 0, "nothing saved: nodes run their own config");
        let e = a.save(br#"{"detector": {"bruteforce_sessions": 1}}"#, "ops").unwrap_err();
        assert_eq!(e.status, 422, "{}", e.reason);
        assert!(e.reason.contains("detector.bruteforce_sessions"), "{}", e.reason);
        a.save(br#"{"detector": {"block_ttl_s": 1200}, "allowlist": ["192.0.2.0/24"]}"#, "ops").unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 1);

        // The response policy: each kind's action, by name, and only the three words.
        let e = a.save(br#"{"response": {"port_scan": "drop"}}"#, "ops").unwrap_err();
        assert!(
            e.status == 422 && e.reason.contains("response.port_scan") && e.reason.contains("ignore"),
            "{}",
            e.reason
        );
        let e = a.save(br#"{"detector": {"model_alone_blocks": true}}"#, "ops").unwrap_err();
        assert!(e.reason.contains("response.model_alone"), "{}", e.reason);
        let e = a.save(br#"{"response": {"no_such_kind": "block"}}"#, "ops").unwrap_err();
        assert!(e.reason.contains("response.no_such_kind"), "{}", e.reason);
        let e = a.save(br#"{"response": {"scan_min_unanswered_pct": 300}}"#, "ops").unwrap_err();
        assert!(e.reason.contains("response.scan_min_unanswered_pct"), "{}", e.reason);
        assert_eq!(sent.load(Ordering::SeqCst), 1, "refused changes are not sent");
        a.save(br#"{"response": {"anomaly": "ignore"}}"#, "ops").unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        assert_eq!(a.json()["response"]["anomaly"], "ignore");
        assert_eq!(a.json()["detector"]["block_ttl_s"], 1200, "other settings stay");

        // After a restart: the settings are back, and go out once someone needs them.
        let b = store(d.path(), &sent);
        let j = b.json();
        assert_eq!(j["detector"]["block_ttl_s"], 1200);
        assert_eq!(j["response"]["anomaly"], "ignore");
        assert_eq!(j["response"]["port_scan"], "block");
        assert_eq!(j["by"], "ops");
        let version = j["version"].as_u64().unwrap();
        let t0 = Instant::now();
        b.resend_if_due_at(&[], t0);
        assert_eq!(sent.load(Ordering::SeqCst), 2, "no node online: nothing is spooled");
        let now_s = gatewarden_core::clock::unix_now();
        let r1 = vec![("r1".to_string(), now_s - 100)];
        b.resend_if_due_at(&r1, t0);
        assert_eq!(sent.load(Ordering::SeqCst), 3, "r1 has not answered");
        b.resend_if_due_at(&r1, t0 + Duration::from_secs(5));
        assert_eq!(sent.load(Ordering::SeqCst), 3, "at most every 30 s");
        let answer = Alert::settings_result("r1", version, Ok("thresholds"));
        b.observe_alert(&answer);
        assert_eq!(b.json()["results"]["r1"]["ok"], true);
        b.resend_if_due_at(&r1, t0 + RESEND * 2);
        assert_eq!(sent.load(Ordering::SeqCst), 3, "r1 answered: nothing to resend");
        // r1 restarts (it booted after it answered): it needs them again.
        b.resend_if_due_at(&[("r1".to_string(), now_s + 60)], t0 + RESEND * 3);
        assert_eq!(sent.load(Ordering::SeqCst), 4);
    }
}
