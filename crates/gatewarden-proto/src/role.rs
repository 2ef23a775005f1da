//! Which job this process does, and how that choice is made.
//!
//! Every node runs the same binary; the role is picked, in order of
//! precedence, by the `--role` flag, the `GATEWARDEN_ROLE` environment
//! variable, `gatewarden.role=` on the kernel command line (read from
//! `/proc/cmdline`, because init does not pass dotted parameters on), and the
//! config file's `role` key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kernel command-line parameter that selects a node's role.
pub const CMDLINE_KEY: &str = "gatewarden.role";
/// The environment variable that selects a role.
pub const ENV_KEY: &str = "GATEWARDEN_ROLE";

/// What a gatewarden process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Forwards IoT traffic, captures it into flows and enforces verdicts.
    Router,
    /// Turns flow features into verdicts and alerts.
    Detector,
    /// Stores alerts, keeps metrics and serves the status page.
    Monitor,
    /// All three roles in one process, wired by in-process channels.
    All,
}

impl Role {
    /// Every role, in the order the help text lists them.
    pub const ALL: [Role; 4] = [Role::Router, Role::Detector, Role::Monitor, Role::All];

    /// The lower-case name used on the command line, in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Detector => "detector",
            Role::Monitor => "monitor",
            Role::All => "all",
        }
    }

    /// Whether this process runs the router's tasks.
    pub fn runs_router(self) -> bool {
        matches!(self, Role::Router | Role::All)
    }

    /// Whether this process runs the detector's tasks.
    pub fn runs_detector(self) -> bool {
        matches!(self, Role::Detector | Role::All)
    }

    /// Whether this process runs the monitor's tasks.
    pub fn runs_monitor(self) -> bool {
        matches!(self, Role::Monitor | Role::All)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected one of router, detector, monitor, all")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "router" => Ok(Role::Router),
            "detector" => Ok(Role::Detector),
            "monitor" => Ok(Role::Monitor),
            "all" => Ok(Role::All),
            _ => Err(UnknownRole(s.to_string())),
        }
    }
}

/// Where the effective role came from; shown in logs and `/api/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    /// The `--role` flag.
    Flag,
    /// The `GATEWARDEN_ROLE` environment variable.
    Environment,
    /// `gatewarden.role=` on the kernel command line.
    KernelCmdline,
    /// The config file's `role` key.
    ConfigFile,
}

impl fmt::Display for RoleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoleSource::Flag => "--role flag",
            RoleSource::Environment => "GATEWARDEN_ROLE environment variable",
            RoleSource::KernelCmdline => "gatewarden.role= on the kernel command line",
            RoleSource::ConfigFile => "config file key `role`",
        })
    }
}

/// Why no role could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// A source named a role that does not exist.
    #[error("{source_name} names {value:?}, which is not a role: expected one of router, detector, monitor, all")]
    Invalid {
        /// Where the bad value was found.
        source_name: RoleSource,
        /// The value as written.
        value: String,
    },
    /// Nothing named a role.
    #[error(
        "no role chosen. Pick one of router, detector, monitor or all, in any of these places \
         (first wins): the --role flag; the GATEWARDEN_ROLE environment variable; \
         gatewarden.role=<role> on the kernel command line; role = \"<role>\" in the config file"
    )]
    Missing,
}

/// Finds the last `gatewarden.role=` on a kernel command line.
///
/// The kernel lets a later parameter override an earlier one, so the last
/// occurrence wins. Returns `None` when the parameter is absent and the raw
/// value (possibly invalid) otherwise.
pub fn role_from_cmdline(cmdline: &str) -> Option<String> {
    let mut found = None;
    for word in split_cmdline(cmdline) {
        if let Some(value) = word.strip_prefix(CMDLINE_KEY).and_then(|rest| rest.strip_prefix('=')) {
            found = Some(value.to_string());
        }
    }
    found
}

/// Splits a kernel command line into parameters, honouring double quotes the
/// way the kernel does (`foo="a b"` is one parameter, quotes removed).
fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in cmdline.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// The inputs to role resolution, gathered so resolution itself is pure and testable.
#[derive(Debug, Default, Clone)]
pub struct RoleInputs<'a> {
    /// The `--role` flag, if given.
    pub flag: Option<Role>,
    /// The value of `GATEWARDEN_ROLE`, if set.
    pub env: Option<&'a str>,
    /// The text of `/proc/cmdline`, if readable.
    pub cmdline: Option<&'a str>,
    /// The config file's `role`, if set.
    pub config: Option<Role>,
}

/// Picks the role from the first source that names one.
///
/// A source that names an invalid role is an error rather than being skipped:
/// silently falling through to another role on a typo would start the wrong
/// job on an appliance.
pub fn resolve(inputs: &RoleInputs<'_>) -> Result<(Role, RoleSource), RoleError> {
    if let Some(role) = inputs.flag {
        return Ok((role, RoleSource::Flag));
    }
    if let Some(env) = inputs.env.filter(|v| !v.trim().is_empty()) {
        return env
            .parse()
            .map(|r| (r, RoleSource::Environment))
            .map_err(|_| RoleError::Invalid { source_name: RoleSource::Environment, value: env.to_string() });
    }
    if let Some(value) = inputs.cmdline.and_then(role_from_cmdline) {
        return value
            .parse()
            .map(|r| (r, RoleSource::KernelCmdline))
            .map_err(|_| RoleError::Invalid { source_name: RoleSource::KernelCmdline, value });
    }
    if let Some(role) = inputs.config {
        return Ok((role, RoleSource::ConfigFile));
    }
    Err(RoleError::Missing)
}

/// Resolves the role from the real process environment and `/proc/cmdline`.
pub fn resolve_from_system(flag: Option<Role>, config: Option<Role>) -> Result<(Role, RoleSource), RoleError> {
    let env = std::env::var(ENV_KEY).ok();
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok();
    resolve(&RoleInputs { flag, env: env.as_deref(), cmdline: cmdline.as_deref(), config })
}

pub use gatewarden_core::identity::CertRole;

/// The certificate role a process running `role` needs (`all` joins a fleet
/// as a gateway: it publishes alerts and status and takes policy updates, like a router).
pub fn cert_role_for(role: Role) -> CertRole {
    match role {
        Role::Router => CertRole::Router,
        Role::Detector => CertRole::Detector,
        Role::Monitor => CertRole::Monitor,
        Role::All => CertRole::Router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        flag: Option<Role>,
        env: Option<&'a str>,
        cmdline: Option<&'a str>,
        config: Option<Role>,
    ) -> RoleInputs<'a> {
        RoleInputs { flag, env, cmdline, config }
    }

    #[test]
    fn flag_wins_over_everything() {
        let i = inputs(Some(Role::Router), Some("monitor"), Some("gatewarden.role=detector"), Some(Role::All));
        assert_eq!(resolve(&i), Ok((Role::Router, RoleSource::Flag)));
    }

    #[test]
    fn flag_wins_even_over_invalid_env() {
        let i = inputs(Some(Role::Monitor), Some("bogus"), None, None);
        assert_eq!(resolve(&i), Ok((Role::Monitor, RoleSource::Flag)));
    }

    #[test]
    fn env_wins_over_cmdline_and_config() {
        let i = inputs(None, Some("Detector"), Some("gatewarden.role=router"), Some(Role::All));
        assert_eq!(resolve(&i), Ok((Role::Detector, RoleSource::Environment)));
    }

    #[test]
    fn empty_env_is_treated_as_unset() {
        let i = inputs(None, Some("  "), Some("gatewarden.role=router"), None);
        assert_eq!(resolve(&i), Ok((Role::Router, RoleSource::KernelCmdline)));
    }

    #[test]
    fn invalid_env_is_an_error_naming_the_value() {
        let i = inputs(None, Some("routr"), Some("gatewarden.role=router"), None);
        let err = resolve(&i).unwrap_err();
        assert_eq!(err, RoleError::Invalid { source_name: RoleSource::Environment, value: "routr".into() });
        assert!(err.to_string().contains("routr"));
        assert!(err.to_string().contains("router, detector, monitor, all"));
    }

    #[test]
    fn cmdline_wins_over_config() {
        let i = inputs(None, None, Some("console=ttyAMA0 gatewarden.role=monitor quiet"), Some(Role::Router));
        assert_eq!(resolve(&i), Ok((Role::Monitor, RoleSource::KernelCmdline)));
    }

    #[test]
    fn cmdline_last_occurrence_wins_like_the_kernel() {
        let line = "gatewarden.role=router root=/dev/mmcblk0p2 gatewarden.role=detector";
        assert_eq!(role_from_cmdline(line).as_deref(), Some("detector"));
        let i = inputs(None, None, Some(line), None);
        assert_eq!(resolve(&i), Ok((Role::Detector, RoleSource::KernelCmdline)));
    }

    #[test]
    fn cmdline_invalid_last_occurrence_is_an_error() {
        let i = inputs(None, None, Some("gatewarden.role=router gatewarden.role=toaster"), Some(Role::All));
        assert_eq!(
            resolve(&i),
            Err(RoleError::Invalid { source_name: RoleSource::KernelCmdline, value: "toaster".into() })
        );
    }

    #[test]
    fn cmdline_junk_is_ignored() {
        let junk = "\0\u{7f} = == gatewarden.rolex=router xgatewarden.role=router gatewarden.role \
                    gatewarden.roles=monitor \"unterminated quote gatewarden.role=router";
        // Everything after the unterminated quote is one parameter, so no role is found.
        assert_eq!(role_from_cmdline(junk), None);
        let i = inputs(None, None, Some(junk), Some(Role::Monitor));
        assert_eq!(resolve(&i), Ok((Role::Monitor, RoleSource::ConfigFile)));
    }

    #[test]
    fn cmdline_quoted_value_is_unquoted() {
        assert_eq!(role_from_cmdline("gatewarden.role=\"all\"").as_deref(), Some("all"));
        assert_eq!(role_from_cmdline("a=\"x y\" gatewarden.role=router\n").as_deref(), Some("router"));
    }

    #[test]
    fn cmdline_empty_value_is_invalid() {
        let i = inputs(None, None, Some("gatewarden.role="), None);
        assert_eq!(
            resolve(&i),
            Err(RoleError::Invalid { source_name: RoleSource::KernelCmdline, value: String::new() })
        );
    }

    #[test]
    fn config_is_the_last_resort() {
        let i = inputs(None, None, Some("console=ttyS0"), Some(Role::All));
        assert_eq!(resolve(&i), Ok((Role::All, RoleSource::ConfigFile)));
    }

    #[test]
    fn nothing_set_lists_roles_and_places() {
        let err = resolve(&inputs(None, None, None, None)).unwrap_err();
        assert_eq!(err, RoleError::Missing);
        let text = err.to_string();
        for needle in
            ["router", "detector", "monitor", "all", "--role", "GATEWARDEN_ROLE", "gatewarden.role=", "config file"]
        {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        assert!("".parse::<Role>().is_err());
    }

    #[test]
    fn role_task_sets() {
        assert!(Role::All.runs_router() && Role::All.runs_detector() && Role::All.runs_monitor());
        assert!(Role::Router.runs_router() && !Role::Router.runs_detector() && !Role::Router.runs_monitor());
        assert!(!Role::Detector.runs_router() && Role::Detector.runs_detector());
        assert!(Role::Monitor.runs_monitor() && !Role::Monitor.runs_router());
    }
}
