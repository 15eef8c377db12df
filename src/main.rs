//! The `cabinetd` binary: the command-line edge of the daemon (SPEC §1).
//!
//! Exit codes: 0 clean stop, 78 (EX_CONFIG) invalid configuration, 1 any other fatal error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use cabinetd::config;
use cabinetd::daemon::{Daemon, Signal};

/// EX_CONFIG from sysexits.h: systemd's unit must not restart on it.
const EXIT_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "cabinetd",
    about = "Edge gateway daemon of a smart-city street cabinet",
    version = cabinetd::LONG_VERSION,
    propagate_version = true
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
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Log line format (overrides `[log] format`).
        #[arg(long, value_parser = ["plain", "json"])]
        log_format: Option<String>,
    },
    /// Validate the configuration without starting anything; prints every error as FILE:LINE:COL.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the lighting plan of the night that starts on DATE, as JSON lines (SPEC §1).
    Plan {
        #[command(flatten)]
        config: ConfigArgs,
        /// The date the night starts on, YYYY-MM-DD (local date in cabinet.timezone, 1800-01-01
        /// to 2100-12-31).
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: String,
    },
    /// Run the rules, scenes and programme against an input timeline, with no device (SPEC §1).
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
    #[command(subcommand)]
    Dali(DaliCommand),
    /// ONVIF tools.
    #[command(subcommand)]
    Onvif(OnvifCommand),
    /// Ask the running daemon for its status and print it for a person.
    Status {
        /// Address of the daemon's HTTP endpoint.
        #[arg(long, default_value = config::DEFAULT_HTTP_LISTEN)]
        http: String,
        /// Print the raw JSON document instead.
        #[arg(long)]
        json: bool,
    },
    /// Ed25519 signing keys of the central post / ops (SPEC §1).
    #[command(subcommand)]
    Key(cabinetd::ops::KeyCommand),
    /// Sign a command or desired-config JSON read on stdin; prints the JWS (SPEC §3).
    Sign(cabinetd::ops::SignArgs),
    /// Ops tool: send a signed command and wait for its result; list the fleet.
    Ctl(Box<cabinetd::ops::CtlArgs>),
}

#[derive(Subcommand, Debug)]
enum DaliCommand {
    /// Give short addresses to the gear of a bus (random-address binary search), with progress.
    /// Refuses while the daemon holds the bus: stop cabinetd first.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
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
        Command::Sign(args) => cabinetd::ops::sign(&args),
        Command::Ctl(args) => cabinetd::ops::ctl::run(&args),
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

fn check_config(args: &ConfigArgs) -> ExitCode {
    match load(args) {
        Ok((files, cfg)) => {
            println!(
                "configuration OK: cabinet {} ({} file(s), version {}): {} Modbus device(s), {} DALI bus(es), {} camera(s)",
                cfg.cabinet.id,
                files.len(),
                cfg.version,
                cfg.modbus.len(),
                cfg.dali.len(),
                cfg.cameras.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
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
    cabinetd::logging::init(&cfg.log.filter, format);
    if !cfg.security.require_signed {
        tracing::warn!("security.require_signed = false: UNSIGNED commands and desired configs are accepted from anyone who can publish on the broker; for demos only");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
