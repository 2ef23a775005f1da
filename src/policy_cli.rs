//! `gatewarden policy ...`: groups, rules, explain, suggestions and feedback
//! from the command line. Every change is saved to `policy.json` and, when
//! this namespace holds the router's `inet gatewarden` table, applied to
//! nftables at once; a running monitor also notices the file and sends the
//! new policy to its routers.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::exit::{EXIT_BAD_INPUT, EXIT_FAILURE};
use crate::policy::{Group, PolicyEngine, RuleSpec};

/// `gatewarden policy` and its options.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Config file ([policy] state_dir, groups, rules). Default: /etc/gatewarden/gatewarden.toml if it exists.
    #[arg(long, short = 'c', global = true, env = "GATEWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use this state directory instead of the config's policy.state_dir.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The policy subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Device groups: add, list, remove.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Group-to-group rules (GroupRelationship): create, list, update, delete.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Say which rule decides some traffic, and why.
    #[command(long_about = "Say which rule decides traffic from SRC to DST, and why: the highest-priority matching \
rule wins; the answer names it and every lower rule it outranks. SRC and DST are group names or addresses \
(an address is looked up in every group that contains it).\n\n\
Examples:\n  gatewarden policy explain cameras sensors tcp 22\n  gatewarden policy explain 192.0.2.10 198.51.100.20 tcp 1883\n  \
gatewarden policy explain cameras sensors icmp")]
    Explain {
        /// Source group or address.
        src: String,
        /// Destination group or address.
        dst: String,
        /// tcp, udp, icmp or any.
        proto: String,
        /// Destination port (tcp/udp).
        port: Option<u16>,
    },
    /// Rules suggested from the traffic matrix and alerts, ranked by confidence.
    #[command(long_about = "Rules suggested from the traffic matrix (flows between groups the monitor counted) and \
the detector's scan and brute-force alerts, ranked by confidence (0-1). Allow rules come from stable, recurring, \
answered patterns; deny rules from scans (many unanswered ports) and password guessing on login ports. Each line \
has a justification with the numbers behind it and how often you accepted similar suggestions. None conflicts \
with, or is already decided by, an existing rule; rejected ones are not shown again.\n\n\
Examples:\n  gatewarden policy suggest\n  gatewarden policy suggest --top 3 --json\n  gatewarden policy accept s1a2b3c4d")]
    Suggest {
        /// Show at most this many (default: policy.top_n).
        #[arg(long)]
        top: Option<usize>,
    },
    /// Accept a suggestion: its rule is created and applied, similar suggestions gain confidence.
    #[command(long_about = "Accept a suggestion by id (from `gatewarden policy suggest`): its rule is created, \
saved and applied, and the accept is counted for suggestions of the same kind (action × protocol × direction \
× volume), which raises their confidence.\n\nExample:\n  gatewarden policy accept s1a2b3c4d")]
    Accept {
        /// Suggestion id.
        id: String,
    },
    /// Reject a suggestion: it is not proposed again, similar suggestions lose confidence.
    #[command(long_about = "Reject a suggestion by id: it is not proposed again, and the reject is counted for \
suggestions of the same kind, which lowers their confidence.\n\nExample:\n  gatewarden policy reject s1a2b3c4d")]
    Reject {
        /// Suggestion id.
        id: String,
    },
    /// Show the traffic matrix between groups.
    #[command(long_about = "Show the traffic matrix: per source group, destination group, protocol and port the \
flows, answered flows, bytes, and first/last seen, as counted by the running monitor (saved every \
policy.save_interval_s to matrix.json).\n\nExamples:\n  gatewarden policy matrix\n  gatewarden policy matrix --json")]
    Matrix,
    /// Apply the saved policy to nftables in this namespace now.
    #[command(long_about = "Apply the saved policy (config + state) to the router's nftables table in this network \
namespace now, in one transaction. Needs the table (`gatewarden run --role router` with [enforce] enabled = true) \
and root.\n\nExample:\n  ip netns exec router gatewarden policy apply")]
    Apply,
}

/// `gatewarden policy group ...`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Add a group (or replace its members with --replace).
    #[command(long_about = "Add a named group of devices. Members are addresses, CIDRs or MAC addresses; \
repeat --member. A device may be in several groups. MAC members are resolved to the device's IPv4 and IPv6 \
addresses through the router's neighbour table (ARP/NDP), so the device must have talked recently.\n\n\
Examples:\n  gatewarden policy group add cameras --member 192.0.2.0/28 --member 2001:db8:1::/64\n  \
gatewarden policy group add thermostat --member aa:bb:cc:dd:ee:01 --description \"hall thermostat\"\n  \
gatewarden policy group add cameras --replace --member 192.0.2.0/27")]
    Add {
        /// 1-24 characters of A-Z a-z 0-9 _ -.
        name: String,
        /// Address, CIDR or MAC (repeat).
        #[arg(long = "member", short = 'm', required = true)]
        members: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Replace the members of an existing group.
        #[arg(long)]
        replace: bool,
    },
    /// List groups and their members.
    #[command(long_about = "List groups, their members and whether they come from the config file (fixed) or \
from the CLI/API.\n\nExample:\n  gatewarden policy group list --json")]
    List,
    /// Remove a group (no rule may use it).
    #[command(long_about = "Remove a group added through the CLI or API. Rules that name it must be deleted \
first; the error lists them.\n\nExample:\n  gatewarden policy group remove lobby")]
    Remove {
        /// Group name.
        name: String,
    },
}

/// Fields of a rule.
#[derive(Debug, Args)]
pub struct RuleFields {
    /// Source group.
    #[arg(long = "from")]
    pub from: Option<String>,
    /// Destination group.
    #[arg(long = "to")]
    pub to: Option<String>,
    /// tcp, udp, icmp or any.
    #[arg(long)]
    pub proto: Option<String>,
    /// 22, 80-8080 or any (tcp/udp only).
    #[arg(long)]
    pub ports: Option<String>,
    /// allow or deny.
    #[arg(long)]
    pub action: Option<String>,
    /// Higher wins.
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// Free text.
    #[arg(long)]
    pub comment: Option<String>,
}

/// `gatewarden policy rule ...`.
#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Create a rule; refused if it conflicts with one at the same priority.
    #[command(long_about = "Create a GroupRelationship: new connections from --from to --to matching --proto and \
--ports get --action. The highest priority matching rule decides. Two rules that can match the same traffic \
with different actions at the same priority are a conflict: the new one is refused and both are named.\n\n\
Examples:\n  gatewarden policy rule create --from cameras --to sensors --proto tcp --ports 22 --action deny --priority 100\n  \
gatewarden policy rule create --from cameras --to sensors --proto tcp --ports 1883 --action allow --priority 200\n  \
gatewarden policy rule create --from plugs --to internet --action deny --priority 10")]
    Create(RuleFields),
    /// List rules in evaluation order (highest priority first).
    #[command(long_about = "List rules in the order the router evaluates them (highest priority first), with ids \
and whether they come from the config file.\n\nExample:\n  gatewarden policy rule list")]
    List,
    /// Change some fields of a rule.
    #[command(long_about = "Change the given fields of rule ID; the others keep their values. Checked for conflicts \
like a new rule.\n\nExamples:\n  gatewarden policy rule update 3 --priority 150\n  gatewarden policy rule update 3 --ports 22-23")]
    Update {
        /// Rule id (from `rule list`).
        id: u32,
        /// Fields to change.
        #[command(flatten)]
        fields: RuleFields,
    },
    /// Delete a rule.
    #[command(
        long_about = "Delete rule ID and apply the policy without it.\n\nExample:\n  gatewarden policy rule delete 3"
    )]
    Delete {
        /// Rule id.
        id: u32,
    },
}

use crate::output::{fail, json_mode, print_json};

/// Applies the policy to nftables in this namespace if the router's table is here.
fn apply_local(engine: &PolicyEngine, cfg: &Config, quiet_if_absent: bool) -> Result<bool, String> {
    let mut b = crate::enforce::Blocker::open(cfg.enforce.settings(), None).map_err(|e| e.to_string())?;
    match b.table_exists() {
        Ok(true) => {}
        Ok(false) | Err(_) if quiet_if_absent => return Ok(false),
        Ok(false) => {
            return Err("there is no `inet gatewarden` table in this network namespace: start the router \
(`gatewarden run --role router` with [enforce] enabled = true) or run this in its namespace"
                .into())
        }
        Err(e) => return Err(e.to_string()),
    }
    b.replace_group_rules(&engine.compile()).map_err(|e| format!("{e:#}"))?;
    Ok(true)
}

/// Reports a saved change (`message`, and `rule` with --json) and applies it here if the router's table is here.
fn after_change(engine: &PolicyEngine, cfg: &Config, message: String, rule: Option<serde_json::Value>) -> i32 {
    let applied = apply_local(engine, cfg, true);
    if json_mode() {
        if let Err(e) = &applied {
            crate::output::warn(format!("saved, but not applied here: {e}"));
        }
        let mut v = serde_json::json!({
            "done": message,
            "version": engine.version(),
            "applied_here": matches!(applied, Ok(true)),
        });
        if let Some(r) = rule {
            v["rule"] = r;
        }
        return print_json(v);
    }
    println!("{message}");
    match applied {
        Ok(true) => println!("applied to nftables in this namespace (policy version {})", engine.version()),
        Ok(false) => println!(
            "saved (policy version {}); a running monitor sends it to its routers, or run `gatewarden policy apply` in the router's namespace",
            engine.version()
        ),
        Err(e) => crate::output::warn(format!("saved, but not applied here: {e}")),
    }
    0
}

fn rule_json(r: &crate::policy::Relationship) -> Option<serde_json::Value> {
    serde_json::to_value(r).ok()
}

fn spec_from(fields: RuleFields, base: Option<&crate::policy::Relationship>) -> Result<RuleSpec, String> {
    let need = |v: Option<String>, b: Option<String>, flag: &str| {
        v.or(b).ok_or_else(|| format!("{flag} is required (see `gatewarden policy rule create --help`)"))
    };
    Ok(RuleSpec {
        source_group: need(fields.from, base.map(|r| r.source_group.clone()), "--from")?,
        destination_group: need(fields.to, base.map(|r| r.destination_group.clone()), "--to")?,
        protocol: fields.proto.or(base.map(|r| r.protocol.to_string())).unwrap_or_else(|| "any".into()),
        port_range: fields.ports.or(base.map(|r| r.port_range.to_string())).unwrap_or_else(|| "any".into()),
        action: need(fields.action, base.map(|r| r.action.to_string()), "--action")?,
        priority: fields.priority.or(base.map(|r| r.priority)).unwrap_or(0),
        comment: fields.comment.or(base.map(|r| r.comment.clone())).unwrap_or_default(),
    })
}

/// Runs `gatewarden policy ...`; returns the exit code.
pub fn run(args: PolicyArgs) -> i32 {
    let mut cfg = match Config::load_or_default(args.config.as_deref()) {
        Ok((c, _)) => c,
        Err(e) => return crate::output::config_fail(e),
    };
    if let Some(d) = args.state_dir {
        cfg.policy.state_dir = d;
    }
    let mut engine = match PolicyEngine::open(&cfg.policy) {
        Ok(e) => e,
        Err(e) => return fail(EXIT_FAILURE, format!("{e:#}")),
    };
    let json = json_mode();
    match args.command {
        PolicyCommand::Group(GroupCommand::Add { name, members, description, replace }) => {
            match engine.add_group(Group { name: name.clone(), members, description }, replace) {
                Ok(()) => after_change(&engine, &cfg, format!("group {name} saved"), None),
                Err(e) => fail(EXIT_BAD_INPUT, format!("{e:#}")),
            }
        }
        PolicyCommand::Group(GroupCommand::List) => {
            let groups = engine.groups();
            if json {
                return print_json(serde_json::json!({ "groups": groups }));
            }
            if groups.is_empty() {
                println!("no groups yet; add one: gatewarden policy group add cameras --member 192.0.2.0/28");
            }
            for g in groups {
                println!("{:<24} {:<6} {}", g.item.name, g.origin, g.item.members.join(", "));
            }
            0
        }
        PolicyCommand::Group(GroupCommand::Remove { name }) => match engine.remove_group(&name) {
            Ok(()) => after_change(&engine, &cfg, format!("group {name} removed"), None),
            Err(e) => fail(EXIT_BAD_INPUT, format!("{e:#}")),
        },
        PolicyCommand::Rule(RuleCommand::Create(fields)) => {
            let spec = match spec_from(fields, None) {
                Ok(s) => s,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            match engine.create_rule(&spec) {
                Ok(r) => after_change(&engine, &cfg, format!("created {}", r.describe()), rule_json(&r)),
                Err(e) => fail(EXIT_BAD_INPUT, format!("{e:#}")),
            }
        }
        PolicyCommand::Rule(RuleCommand::List) => {
            let rules = engine.rules();
            if json {
                return print_json(serde_json::json!({ "version": engine.version(), "rules": rules }));
            }
            if rules.is_empty() {
                println!("no rules yet; create one: gatewarden policy rule create --help");
            }
            for r in rules {
                let comment = if r.item.comment.is_empty() { String::new() } else { format!("  # {}", r.item.comment) };
                println!("{} [{}]{comment}", r.item.describe(), r.origin);
            }
            0
        }
        PolicyCommand::Rule(RuleCommand::Update { id, fields }) => {
            let current = engine.rules().into_iter().find(|r| r.item.id == id).map(|r| r.item);
            let Some(current) = current else {
                return fail(EXIT_BAD_INPUT, format!("no rule #{id}; list them with `gatewarden policy rule list`"));
            };
            let spec = match spec_from(fields, Some(&current)) {
                Ok(s) => s,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            match engine.update_rule(id, &spec) {
                Ok(r) => after_change(&engine, &cfg, format!("updated {}", r.describe()), rule_json(&r)),
                Err(e) => fail(EXIT_BAD_INPUT, format!("{e:#}")),
            }
        }
        PolicyCommand::Rule(RuleCommand::Delete { id }) => match engine.delete_rule(id) {
            Ok(r) => after_change(&engine, &cfg, format!("deleted {}", r.describe()), rule_json(&r)),
            Err(e) => fail(EXIT_BAD_INPUT, format!("{e:#}")),
        },
        PolicyCommand::Explain { src, dst, proto, port } => {
            if engine.uses_macs() {
                if let Ok(n) = crate::enforce::blocker::neighbours() {
                    engine.set_neighbours(n);
                }
            }
            match engine.explain(&src, &dst, &proto, port) {
                Ok(e) if json => print_json(e),
                Ok(e) => {
                    println!("{}", e.why);
                    0
                }
                Err(e) => fail(EXIT_BAD_INPUT, format!("{e:#}")),
            }
        }
        PolicyCommand::Suggest { top } => {
            let s = engine.suggestions(top);
            if json {
                return print_json(serde_json::json!({ "suggestions": s }));
            }
            if s.is_empty() {
                println!(
                    "no suggestions: the matrix holds {} cells; suggestions need traffic between groups counted by a running monitor",
                    engine.matrix().len()
                );
            }
            for s in s {
                println!(
                    "{}  {:.2}  {} -> {} {}/{} {} (priority {})\n    {}",
                    s.id,
                    s.confidence,
                    s.rule.source_group,
                    s.rule.destination_group,
                    s.rule.protocol,
                    s.rule.port_range,
                    s.rule.action,
                    s.rule.priority,
                    s.justification
                );
            }
            0
        }
        PolicyCommand::Accept { id } => match engine.accept(&id) {
            Ok(r) => after_change(&engine, &cfg, format!("accepted {id}: created {}", r.describe()), rule_json(&r)),
            Err(e) => fail(EXIT_BAD_INPUT, format!("{e:#}")),
        },
        PolicyCommand::Reject { id } => match engine.reject(&id) {
            Ok(s) => {
                let c = engine.feedback().counts(&s.context);
                if json {
                    return print_json(serde_json::json!({
                        "done": format!("rejected {id}"),
                        "context": s.context,
                        "similar_accepted": c.accepted(),
                        "similar_answered": c.answered(),
                    }));
                }
                println!(
                    "rejected {id}; similar suggestions ({}) now accepted {} of {}",
                    s.context,
                    c.accepted(),
                    c.answered()
                );
                0
            }
            Err(e) => fail(EXIT_BAD_INPUT, format!("{e:#}")),
        },
        PolicyCommand::Matrix => {
            let m = engine.matrix_json();
            if json {
                return print_json(m);
            }
            let mut cells: Vec<_> = engine.matrix().cells().collect();
            cells.sort_by(|a, b| b.1.flows.cmp(&a.1.flows).then(a.0.cmp(b.0)));
            if cells.is_empty() {
                println!("the matrix is empty: a running monitor counts flows between groups into it");
            }
            for (k, c) in cells {
                println!(
                    "{:<16} -> {:<16} {}/{:<5} flows {:>6} answered {:>6} bytes {:>10}",
                    k.src, k.dst, k.proto, k.port, c.flows, c.answered, c.bytes
                );
            }
            0
        }
        PolicyCommand::Apply => match apply_local(&engine, &cfg, false) {
            Ok(_) if json => print_json(serde_json::json!({
                "done": "applied",
                "version": engine.version(),
                "rules": engine.rules().len(),
            })),
            Ok(_) => {
                println!("applied policy version {} ({} rules)", engine.version(), engine.rules().len());
                0
            }
            Err(e) => fail(EXIT_FAILURE, e),
        },
    }
}
