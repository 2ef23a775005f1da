//! The command line: `run`, `replay`, `config check|show`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad input (usage, config,
//! capture), 130 after a second Ctrl-C.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat};
use crate::metrics::Registry;
use crate::monitor::http::HttpServer;
use crate::monitor::MonitorState;
use crate::replay::{self, Speed};
use crate::role::{self, Role, RoleSource};
use crate::shutdown::Shutdown;

/// Exit code for bad input: usage, config or capture errors.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for failures at run time.
pub const EXIT_FAILURE: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "gatewarden",
    version,
    about = "IoT security gateway: router, detector and monitor roles in one binary",
    long_about = "gatewarden watches IoT traffic, detects scans, floods and brute force, blocks attackers in \
nftables and shows it all on a status page.\n\n\
Every node runs this same binary; the role (router, detector, monitor or all) comes from --role, \
GATEWARDEN_ROLE, gatewarden.role= on the kernel command line, or the config file, in that order.\n\n\
Try it on a laptop:\n  gatewarden replay samples/demo.pcap --serve 127.0.0.1:8080",
    propagate_version = true
)]
struct Cli {
    /// Log line format: human for terminals, json for log shippers (default: config `log.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the role(s) and serve the status page until SIGTERM or Ctrl-C.
    #[command(long_about = "Start the role(s) and serve the status page until SIGTERM or Ctrl-C.\n\n\
The role is taken from, in order: --role; GATEWARDEN_ROLE; gatewarden.role= in /proc/cmdline; \
`role` in the config file. `all` runs router, detector and monitor in one process.")]
    Run(RunArgs),
    /// Run the whole pipeline over a pcap/pcapng capture and print what it found.
    #[command(long_about = "Run the whole `all` pipeline (flows → detectors → alerts) over a pcap or \
pcapng capture and print a summary: packets, flows, alerts by kind, elapsed time and packets/s.\n\n\
Examples:\n  gatewarden replay samples/demo.pcap\n  gatewarden replay big.pcap --json\n  \
gatewarden replay samples/demo.pcap --speed realtime --serve 127.0.0.1:8080")]
    Replay(ReplayArgs),
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Which role to run (overrides GATEWARDEN_ROLE, the kernel command line and the config file).
    #[arg(long, value_enum)]
    role: Option<RoleArg>,
    /// Config file (default: /etc/gatewarden/gatewarden.toml if it exists, else built-in defaults).
    #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    /// Capture traffic into flows and enforce verdicts.
    Router,
    /// Turn flows into verdicts and alerts.
    Detector,
    /// Store alerts, keep metrics, serve the dashboard.
    Monitor,
    /// All three in one process.
    All,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Router => Role::Router,
            RoleArg::Detector => Role::Detector,
            RoleArg::Monitor => Role::Monitor,
            RoleArg::All => Role::All,
        }
    }
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// The capture to replay (pcap or pcapng; Ethernet, raw IP or Linux cooked).
    capture: PathBuf,
    /// max: as fast as possible; realtime: at the recorded pace. Results are identical.
    #[arg(long, value_enum, default_value = "max")]
    speed: Speed,
    /// Serve the status page on this address during the replay and keep serving until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    serve: Option<String>,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Config file for thresholds (default: built-in defaults).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file; exit 0 if it is usable, 2 with every problem listed if not.
    Check {
        /// The file to check (default: /etc/gatewarden/gatewarden.toml).
        path: Option<PathBuf>,
    },
    /// Print the effective configuration with every default filled in.
    Show {
        /// Config file to read (default: /etc/gatewarden/gatewarden.toml if it exists).
        #[arg(long, short = 'c', env = "GATEWARDEN_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    code
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, i32> {
    Config::load_or_default(path).map(|(c, _)| c).map_err(|e| fail(EXIT_BAD_INPUT, e))
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match cli.command {
        Command::Run(args) => cmd_run(args, cli.log_format),
        Command::Replay(args) => cmd_replay(args, cli.log_format),
        Command::Config(ConfigCommand::Check { path }) => {
            let path = path.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
            match Config::load(&path) {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    0
                }
                Err(e @ (ConfigError::Parse { .. } | ConfigError::Invalid { .. } | ConfigError::Read { .. })) => {
                    fail(EXIT_BAD_INPUT, e)
                }
            }
        }
        Command::Config(ConfigCommand::Show { config }) => match load_config(config.as_deref()) {
            Ok(c) => {
                print!("{}", c.to_toml());
                0
            }
            Err(code) => code,
        },
    }
}

fn cmd_run(args: RunArgs, log_format: Option<LogFormat>) -> i32 {
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(&cfg.log.level, log_format.unwrap_or(cfg.log.format));
    let (role, source) = match role::resolve_from_system(args.role.map(Role::from), cfg.role) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handlers() {
        return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}"));
    }
    match crate::roles::run(role, source, &cfg, shutdown) {
        Ok(()) => 0,
        Err(e) => fail(EXIT_FAILURE, format!("{e:#}")),
    }
}

fn cmd_replay(args: ReplayArgs, log_format: Option<LogFormat>) -> i32 {
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(
        if args.serve.is_some() { &cfg.log.level } else { "warn" },
        log_format.unwrap_or(cfg.log.format),
    );
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handlers() {
        return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}"));
    }
    let registry = Registry::new();
    let state = MonitorState::new(Role::All, RoleSource::Flag, cfg.node_id.clone(), registry);
    let server = match &args.serve {
        Some(addr) => match HttpServer::start(addr, state.clone()) {
            Ok(s) => {
                eprintln!("status page: http://{}/", s.addr);
                Some(s)
            }
            Err(e) => return fail(EXIT_FAILURE, format!("{e:#}")),
        },
        None => None,
    };
    // Keep the charts moving while the replay runs.
    let sampler = server.as_ref().map(|_| {
        let st = state.clone();
        let sd = shutdown.clone();
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                while !sd.is_triggered() {
                    st.sample();
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            })
            .ok()
    });
    let progress = !args.json && std::io::stderr().is_terminal();
    let result = replay::replay(&args.capture, args.speed, &cfg, &state, &shutdown, progress);
    let code = match result {
        Ok(summary) => {
            if args.json {
                match serde_json::to_string(&summary) {
                    Ok(s) => println!("{s}"),
                    Err(e) => return fail(EXIT_FAILURE, e),
                }
            } else {
                print!("{}", summary.human());
            }
            0
        }
        Err(e) => fail(EXIT_BAD_INPUT, e),
    };
    if let Some(server) = server {
        if code == 0 && !shutdown.is_triggered() {
            eprintln!("replay finished; still serving http://{}/ — press Ctrl-C to stop", server.addr);
            state.sample();
            shutdown.wait_blocking();
        }
        shutdown.trigger();
        server.stop();
        if let Some(Some(t)) = sampler {
            let _ = t.join();
        }
    }
    code
}
