//! The `cabinetd` binary: the command-line edge of the daemon (SPEC §1).
//!
//! Exit codes: 0 clean stop, 78 (EX_CONFIG) invalid configuration, 1 any other fatal error,
//! 2 usage. Every subcommand's `--help` ends with examples and its exit codes (`after_help`);
//! the man pages and shell completions in `debian/` are generated from this definition by the
//! hidden `cabinetd man` and `cabinetd completions` (tests/cli_docs.rs keeps them current).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use cabinetd::config;
use cabinetd::daemon::{Daemon, Signal};

/// EX_CONFIG from sysexits.h: systemd's unit must not restart on it.
const EXIT_CONFIG: u8 = 78;

/// Where a person finds the rest (the end of `cabinetd --help` and of the man page).
const MORE: &str = "Exit codes: 0 success; 78 invalid configuration (EX_CONFIG: systemd does not \
restart on it); 1 any other error; 2 usage.\n\n\
More: `man cabinetd-SUBCOMMAND` or `cabinetd SUBCOMMAND --help`; the MQTT protocol in \
docs/protocol.md (installed as /usr/share/doc/cabinetd/protocol.md); every configuration key in \
config/cabinetd.example.toml (/usr/share/doc/cabinetd/examples/cabinetd.toml).";

#[derive(Parser, Debug)]
#[command(
    name = "cabinetd",
    about = "Edge gateway daemon of a smart-city street cabinet",
    long_about = "Edge gateway daemon of a smart-city street cabinet: polls Modbus TCP/RTU \
    and DALI equipment, keeps every reading, event and command result in a crash-safe outbox and \
    delivers them to the central post over MQTT (docs/protocol.md); Prometheus metrics and a \
    status page on a local HTTP endpoint.",
    version = cabinetd::LONG_VERSION,
    propagate_version = true,
    after_help = MORE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Config files: `--config FILE` (repeatable, merged in order) and `--config-dir DIR`
/// (every `*.toml` in it, in name order, merged after the files).
#[derive(clap::Args, Debug, Clone)]
struct ConfigArgs {
    /// Configuration file; several merge in order, later keys win.
    #[arg(long = "config", value_name = "FILE", required = true)]
    config: Vec<PathBuf>,
    /// Directory of drop-in files (`*.toml`, in name order) merged after the files.
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dir: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon.
    #[command(after_help = "Examples:\n  \
    cabinetd run --config /etc/cabinetd/cabinetd.toml --config-dir /etc/cabinetd/conf.d\n  \
    cabinetd run --config config/demo.toml --log-format json\n\n\
    Signals: SIGTERM or SIGINT stop cleanly within 10 s (outbox flushed, offline status \
    published); SIGHUP re-reads the configuration (kept when invalid).\n\n\
    Exit codes: 0 clean stop; 78 invalid configuration, or a file it names missing or unreadable \
    (see check-config; systemd does not restart on 78); 1 any other fatal error; 2 usage.\n\n\
    What it publishes and accepts over MQTT: docs/protocol.md.")]
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Log line format (overrides `[log] format`).
        #[arg(long, value_parser = ["plain", "json"])]
        log_format: Option<String>,
    },
    /// Validate the configuration without starting anything; prints every error as FILE:LINE:COL.
    ///
    /// Also checks, as the service user, every file, serial line and directory the
    /// configuration names (secrets, certificates, DALI and Modbus RTU lines, storage.path):
    /// what would make `run` fail.
    #[command(after_help = "Examples:\n  \
    cabinetd check-config --config /etc/cabinetd/cabinetd.toml --config-dir /etc/cabinetd/conf.d\n  \
    cabinetd check-config --config cabinet.toml --as-user cabinetd\n  \
    cabinetd check-config --config dijon-017.toml --no-file-checks   (prepared on a laptop)\n\n\
    Exit codes: 0 valid (warnings, e.g. a secret every user may read, on stderr); 78 invalid: \
    every error on stderr as FILE:LINE:COL: message; 2 usage (e.g. an unknown --as-user).")]
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
        /// Check the files, serial lines and state directory the configuration names as this
        /// user (default: as root, the service user `cabinetd` when it exists; else yourself).
        #[arg(long, value_name = "USER", conflicts_with = "no_file_checks")]
        as_user: Option<String>,
        /// Check the configuration alone, not the files it names (a configuration written for
        /// another machine).
        #[arg(long)]
        no_file_checks: bool,
    },
    /// Print the lighting plan of the night that starts on DATE, as JSON lines.
    ///
    /// First {"date","dusk","dawn"} (UTC, for the cabinet's latitude and longitude), then one
    /// {"at","target","level_percent","reason"} per planned change, in time order.
    #[command(after_help = "Example:\n  \
    cabinetd plan --config /etc/cabinetd/cabinetd.toml --date 2026-12-21\n\n\
    Exit codes: 0 printed; 78 invalid configuration or time zone; 2 usage (a bad --date); \
    1 any other error.")]
    Plan {
        #[command(flatten)]
        config: ConfigArgs,
        /// The date the night starts on, YYYY-MM-DD (local date in cabinet.timezone, 1800-01-01
        /// to 2100-12-31).
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: String,
    },
    /// Run the rules, scenes and programme against an input timeline, with no device.
    ///
    /// Prints every action as JSON lines {"at","target","action","args","by","reason"} in time
    /// order (README "Rules, scenes, autonomous mode").
    #[command(after_help = "Example:\n  \
    cabinetd simulate --config config/rules/cabinet.toml --config config/rules/ice-risk.toml \\\n    \
    --from 2026-12-21T19:00:00Z --to 2026-12-22T08:00:00Z --inputs weather.csv\n\n\
    Exit codes: 0 simulated; 2 a bad timeline (its line named) or bad times; 78 invalid \
    configuration; 1 the inputs file cannot be read.")]
    Simulate {
        #[command(flatten)]
        config: ConfigArgs,
        /// Start of the simulation, RFC 3339.
        #[arg(long, value_name = "T")]
        from: String,
        /// End of the simulation, RFC 3339.
        #[arg(long, value_name = "T")]
        to: String,
        /// Input timeline: JSON lines or CSV of point values and uplink up/down.
        #[arg(long, value_name = "FILE")]
        inputs: Option<PathBuf>,
    },
    /// DALI tools for the technician at the cabinet.
    #[command(
        subcommand,
        after_help = "Example:\n  cabinetd dali commission --config /etc/cabinetd/cabinetd.toml --bus bus-a\n\n\
        Exit codes: see `cabinetd dali commission --help`."
    )]
    Dali(DaliCommand),
    /// ONVIF tools.
    #[command(
        subcommand,
        after_help = "Example:\n  cabinetd onvif discover --interface eth1\n\n\
        Exit codes: see `cabinetd onvif discover --help`."
    )]
    Onvif(OnvifCommand),
    /// Ask the running daemon for its status and print it for a person.
    #[command(after_help = "Examples:\n  \
    cabinetd status\n  \
    cabinetd status --http 127.0.0.1:9108 --json\n\n\
    Exit codes: 0 printed; 1 the daemon cannot be reached or gave an unexpected answer.")]
    Status {
        /// Address of the daemon's HTTP endpoint.
        #[arg(long, default_value = config::DEFAULT_HTTP_LISTEN)]
        http: String,
        /// Print the raw JSON document instead.
        #[arg(long)]
        json: bool,
    },
    /// Ed25519 signing keys of the central post / ops.
    #[command(
        subcommand,
        after_help = "Example:\n  cabinetd key generate --out ops-2026.pem\n\n\
        Exit codes: see `cabinetd key generate --help`."
    )]
    Key(cabinetd::ops::KeyCommand),
    /// Sign a command or desired-config JSON read on stdin; prints the JWS (docs/protocol.md,
    /// "Signed messages").
    Sign(cabinetd::ops::SignArgs),
    /// Ops tool: send a signed command and wait for its result; list the fleet.
    Ctl(Box<cabinetd::ops::CtlArgs>),
    /// Write the man pages (cabinetd.1, cabinetd-SUBCOMMAND.1, …) into DIR.
    #[command(
        hide = true,
        after_help = "Example (what debian/man holds):\n  cabinetd man --out debian/man\n\n\
        Exit codes: 0 written; 1 DIR cannot be written."
    )]
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the completion script of SHELL on stdout.
    #[command(
        hide = true,
        after_help = "Examples (what debian/completions holds):\n  \
        cabinetd completions bash > debian/completions/cabinetd.bash\n  \
        cabinetd completions zsh > debian/completions/_cabinetd\n  \
        cabinetd completions fish > debian/completions/cabinetd.fish\n\n\
        Exit codes: 0 printed; 2 usage (an unknown shell)."
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum DaliCommand {
    /// Give short addresses to the gear of a bus (random-address binary search), with progress.
    /// Refuses while the daemon holds the bus: stop cabinetd first.
    #[command(after_help = "Examples:\n  \
    systemctl stop cabinetd\n  \
    cabinetd dali commission --config /etc/cabinetd/cabinetd.toml --bus bus-a\n  \
    cabinetd dali commission --config /etc/cabinetd/cabinetd.toml --bus bus-a --all   (readdress everything)\n\n\
    Exit codes: 0 done (what was assigned is printed); 78 invalid configuration or no such bus; \
    1 the bus cannot be used (held by the daemon, interface error).")]
    Commission {
        #[command(flatten)]
        config: ConfigArgs,
        /// The `[[dali]]` bus to commission.
        #[arg(long)]
        bus: String,
        /// Readdress every gear (all short addresses are deleted and given again).
        #[arg(long, conflicts_with = "unaddressed")]
        all: bool,
        /// Only gear without a short address (the default).
        #[arg(long)]
        unaddressed: bool,
    },
}

#[derive(Subcommand, Debug)]
enum OnvifCommand {
    /// WS-Discovery: probe 239.255.255.250:3702 (tds:Device and dn:NetworkVideoTransmitter) and
    /// print one line per answering device: address, types, scopes. Lists only: cameras are
    /// supervised when configured in [[camera]].
    #[command(after_help = "Examples:\n  \
    cabinetd onvif discover\n  \
    cabinetd onvif discover --interface eth1 --timeout 5s\n\n\
    Exit codes: 0 probed (also when nothing answered: the count is on stderr); 1 network error; \
    2 usage.")]
    Discover {
        /// Send the Probe out of this interface: a name (eth1) or its IPv4 address.
        #[arg(long, value_name = "IF")]
        interface: Option<String>,
        /// How long answers are collected (at most 60s).
        #[arg(long, default_value = "3s", value_parser = parse_discover_timeout)]
        timeout: Duration,
    },
}

fn parse_discover_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() || d > Duration::from_secs(60) {
        return Err("must be between 1ms and 60s".into());
    }
    Ok(d)
}

impl ConfigArgs {
    /// Files in merge order: `--config` files, then each `--config-dir`'s `*.toml` by name.
    fn files(&self) -> Result<Vec<PathBuf>, String> {
        let mut files = self.config.clone();
        for dir in &self.config_dir {
            let mut dropins: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: cannot read config directory: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        Ok(files)
    }
}

/// glibc gives every thread that allocates an arena of its own (up to 8 per core), and the
/// daemon's allocations move between the tokio workers, the outbox thread and sled's: issue 9
/// measured two per-thread arenas of 13–16 MiB each beside a 15 MiB main heap. Two arenas
/// (`M_ARENA_MAX`, what `MALLOC_ARENA_MAX=2` sets) keep the RSS flat for little lock contention
/// on a cabinet's few cores. An explicit `MALLOC_ARENA_MAX` in the environment wins.
///
/// First thing in `main`: glibc fixes its arena limit the first time a second thread needs an
/// arena, so a `mallopt` after any thread allocated (logging set up, the files checked) came too
/// late — the 200 s outage benchmark measured 35.6 MiB peak RSS with the call where it was, and
/// 28.4 MiB with `MALLOC_ARENA_MAX=2` in the environment.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc tunable; called before the runtime's threads start.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            config,
            as_user,
            no_file_checks,
        } => check_config(&config, as_user.as_deref(), no_file_checks),
        Command::Run { config, log_format } => run(&config, log_format.as_deref()),
        Command::Status { http, json } => status(&http, json),
        Command::Onvif(OnvifCommand::Discover { interface, timeout }) => {
            onvif_discover(interface.as_deref(), timeout)
        }
        Command::Plan { config, date } => plan(&config, &date),
        Command::Simulate {
            config,
            from,
            to,
            inputs,
        } => simulate(&config, &from, &to, inputs.as_deref()),
        Command::Dali(DaliCommand::Commission {
            config,
            bus,
            all,
            unaddressed: _,
        }) => commission(&config, &bus, all),
        Command::Key(cmd) => cabinetd::ops::key(&cmd),
        Command::Man { out } => man(&out),
        Command::Completions { shell } => {
            let mut cmd = cli_definition();
            clap_complete::generate(shell, &mut cmd, "cabinetd", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Sign(args) => cabinetd::ops::sign(&args),
        Command::Ctl(args) => cabinetd::ops::ctl::run(&args),
    }
}

/// The CLI as the man pages and completions describe it: the package version only (the commit
/// of `--version` would make every build's pages differ).
fn cli_definition() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

/// `cabinetd man --out DIR`: one page per (visible) subcommand, `cabinetd-dali-commission.1`…
fn man(out: &std::path::Path) -> ExitCode {
    fn pages(cmd: clap::Command, out: &std::path::Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            pages(sub, out)?;
        }
        clap_mangen::Man::new(cmd)
            .source(concat!("cabinetd ", env!("CARGO_PKG_VERSION")))
            .manual("cabinetd manual")
            .generate_to(out)
            .map(drop)
    }
    let mut cmd = cli_definition().disable_help_subcommand(true);
    cmd.build();
    let written = std::fs::create_dir_all(out).and_then(|()| pages(cmd, out));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cabinetd man: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ConfigArgs) -> Result<(Vec<PathBuf>, config::Config), ExitCode> {
    let files = args.files().map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    match config::load_files(&files) {
        Ok(cfg) => Ok((files, cfg)),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s) in the configuration", errors.0.len());
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn check_config(args: &ConfigArgs, as_user: Option<&str>, no_file_checks: bool) -> ExitCode {
    use config::files::{self, Identity, Mode};
    let (files, cfg) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let checked = if no_file_checks {
        "files not checked (--no-file-checks)".to_owned()
    } else {
        let who = match as_user {
            Some(name) => match Identity::user(name) {
                Ok(who) => who,
                Err(e) => {
                    eprintln!("cabinetd check-config: --as-user: {e}");
                    return ExitCode::from(2);
                }
            },
            None => Identity::for_check(),
        };
        let report = files::check_files(&cfg, &files, &who, Mode::Check);
        for n in &report.notes {
            eprintln!("note: {n}");
        }
        for f in &report.findings {
            eprintln!("{}", f.at);
        }
        let whom = format!("files checked as {}, {}", who.describe(), who.why);
        if report.error_count() > 0 {
            eprintln!(
                "{} error(s) in the files the configuration names ({whom})",
                report.error_count()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        whom
    };
    println!(
        "configuration OK: cabinet {} ({} file(s), version {}): {} Modbus device(s), {} DALI bus(es), {} ONVIF camera(s){}; {checked}",
        cfg.cabinet.id,
        files.len(),
        cfg.version,
        cfg.modbus.len(),
        cfg.dali.len(),
        cfg.cameras.len(),
        if cfg.onvif.discovery { ", ONVIF discovery on" } else { "" }
    );
    ExitCode::SUCCESS
}

fn run(args: &ConfigArgs, log_format: Option<&str>) -> ExitCode {
    // Read NOTIFY_SOCKET before any thread exists (it is removed from the environment).
    let notifier = cabinetd::notify::Notifier::from_env();
    let (files, cfg) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let format = match log_format {
        Some("json") => config::LogFormat::Json,
        Some(_) => config::LogFormat::Plain,
        None => cfg.log.format,
    };
    // What check-config checks, as the user this process runs as: a missing secret or an
    // unwritable state directory is a configuration fault (78, not restarted), not a crash (1).
    let who = config::files::Identity::current();
    let report = config::files::check_files(&cfg, &files, &who, config::files::Mode::Run);
    if report.error_count() > 0 {
        for e in report.errors() {
            eprintln!("{e}");
        }
        eprintln!(
            "{} error(s) in the files the configuration names (checked as {}); `cabinetd check-config` lists them too",
            report.error_count(),
            who.describe()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    cabinetd::logging::init(&cfg.log.filter, format);
    for w in report.warnings() {
        tracing::warn!("{w}");
    }
    if !cfg.security.require_signed {
        tracing::warn!("security.require_signed = false: UNSIGNED commands and desired configs are accepted from anyone who can publish on the broker; for demos only");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // A few blocking threads are plenty (outbox open, DALI serial reads): each one that
        // allocates would get a glibc arena of its own.
        .max_blocking_threads(4)
        .enable_all()
        .thread_name("cabinetd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    // Test hook (tests/automation_e2e.rs): a wall clock offset by the number in this file, so a
    // test can step the daemon's clock (±6 h, 1970). Only main.rs reads it; see `cabinetd::wall`.
    let clock = match std::env::var_os("CABINETD_TEST_CLOCK_OFFSET_FILE") {
        Some(f) => {
            tracing::warn!(file = %std::path::Path::new(&f).display(), "TEST HOOK: the wall clock of the rules and the energy accountant is offset by this file (CABINETD_TEST_CLOCK_OFFSET_FILE)");
            cabinetd::wall::WallClock::offset_file(f.into())
        }
        None => cabinetd::wall::WallClock::system(),
    };
    let result = runtime.block_on(async {
        let signals = signals()?;
        Daemon::build_with(files, cfg, notifier, clock)
            .await?
            .run(signals)
            .await
    });
    // Do not wait for stuck blocking tasks past the SPEC's 10 s stop budget (the daemon used
    // STOP_BUDGET of it).
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal error");
            eprintln!("cabinetd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT ask to stop, SIGHUP to reload; a task forwards them to the daemon.
fn signals() -> anyhow::Result<tokio::sync::mpsc::Receiver<Signal>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Signal::Stop }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); Signal::Stop }
                _ = hup.recv() => Signal::Reload,
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

fn status(http: &str, json: bool) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let answer = runtime.map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(cabinetd::http::get(http, "/status", Duration::from_secs(5)))
            .map_err(|e| e.to_string())
    });
    let body = match answer {
        Ok((200, body)) => body,
        Ok((code, body)) => {
            eprintln!("cabinetd at {http} answered HTTP {code}: {body}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("cannot reach cabinetd at http://{http}/status: {e} (is it running? see `systemctl status cabinetd`)");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(doc) => {
            print!(
                "{}",
                cabinetd::status::render_status(&doc, std::time::SystemTime::now())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unexpected /status document ({e}): {body}");
            ExitCode::FAILURE
        }
    }
}

fn plan(args: &ConfigArgs, date: &str) -> ExitCode {
    let (_, cfg) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let stdout = std::io::stdout();
    match cabinetd::lighting::plan_cli(&cfg, date, &mut stdout.lock()) {
        Ok(()) => ExitCode::SUCCESS,
        // A bad or out-of-range --date is a usage error (2, as clap's own), not a config one.
        Err(e @ cabinetd::lighting::PlanError::Date { .. }) => {
            eprintln!("cabinetd plan: {e}");
            ExitCode::from(2)
        }
        Err(e @ cabinetd::lighting::PlanError::TimeZone { .. }) => {
            eprintln!("cabinetd plan: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("cabinetd plan: {e}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(args: &ConfigArgs, from: &str, to: &str, inputs: Option<&std::path::Path>) -> ExitCode {
    use cabinetd::rules::simulate::{cli, SimError};
    let (_, cfg) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match cli(&cfg, from, to, inputs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cabinetd simulate: {e}");
            ExitCode::from(match e {
                SimError::Usage(_) => 2,
                SimError::Config(_) => EXIT_CONFIG,
                SimError::Io(_) => 1,
            })
        }
    }
}

fn commission(args: &ConfigArgs, bus: &str, all: bool) -> ExitCode {
    let (_, cfg) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if !cfg.dali.iter().any(|b| b.name == bus) {
        let known: Vec<&str> = cfg.dali.iter().map(|b| b.name.as_str()).collect();
        eprintln!(
            "cabinetd dali commission: --bus {bus:?}: no such [[dali]] bus (configured: {known:?})"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    cabinetd::logging::init(&cfg.log.filter, cfg.log.format);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(cabinetd::equipment::dali::commission_cli(
        &cfg, bus, all, &mut out,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cabinetd dali commission: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cabinetd onvif discover`: one line per device, `ADDRESS types=T,… scopes=S …
/// endpoint=EPR` (ADDRESS = its first device service URL, without credentials).
fn onvif_discover(interface: Option<&str>, timeout: Duration) -> ExitCode {
    use cabinetd_onvif::discovery::{discover, DiscoveryOptions, Interface};
    let interface = interface.map(|i| match i.parse() {
        Ok(addr) => Interface::Addr(addr),
        Err(_) => Interface::Name(i.to_string()),
    });
    let opts = DiscoveryOptions {
        timeout,
        interface,
        ..DiscoveryOptions::default()
    };
    let found = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| rt.block_on(discover(&opts)));
    match found {
        Ok(devices) => {
            for d in &devices {
                let address = d.xaddrs.first().unwrap_or(&d.endpoint);
                println!(
                    "{address} types={} scopes={} endpoint={}",
                    d.types.join(","),
                    d.scopes.join(","),
                    d.endpoint
                );
            }
            eprintln!("{} device(s) answered within {timeout:?}", devices.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("onvif discover: {e}");
            ExitCode::from(1)
        }
    }
}
