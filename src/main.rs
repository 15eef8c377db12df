//! The `cabinetd` binary: the command-line edge of the daemon (SPEC §1).
//!
//! Exit codes: 0 clean stop, 78 (EX_CONFIG) invalid configuration, 1 any other fatal error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use cabinetd::config;

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
        /// The date the night starts on, YYYY-MM-DD.
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: String,
    },
    /// DALI tools for the technician at the cabinet.
    #[command(subcommand)]
    Dali(DaliCommand),
    /// Ask the running daemon for its status and print it for a person.
    Status {
        /// Address of the daemon's HTTP endpoint.
        #[arg(long, default_value = config::DEFAULT_HTTP_LISTEN)]
        http: String,
        /// Print the raw JSON document instead.
        #[arg(long)]
        json: bool,
    },
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
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config, log_format } => run(&config, log_format.as_deref()),
        Command::Status { http, json } => status(&http, json),
        Command::Plan { config, date } => plan(&config, &date),
        Command::Dali(DaliCommand::Commission {
            config,
            bus,
            all,
            unaddressed: _,
        }) => commission(&config, &bus, all),
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
    limit_malloc_arenas();
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
    let result = runtime.block_on(cabinetd::daemon::run(files, cfg, notifier));
    // Do not wait for stuck blocking tasks (a serial port read) past the SPEC's 10 s stop budget.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal error");
            eprintln!("cabinetd: {e:#}");
            ExitCode::FAILURE
        }
    }
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
            print!("{}", cabinetd::daemon::render_status(&doc));
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
        Err(
            e @ (cabinetd::lighting::PlanError::Date { .. }
            | cabinetd::lighting::PlanError::TimeZone { .. }),
        ) => {
            eprintln!("cabinetd plan: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("cabinetd plan: {e}");
            ExitCode::FAILURE
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
    match runtime.block_on(cabinetd::dali::commission_cli(&cfg, bus, all, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cabinetd dali commission: {e:#}");
            ExitCode::FAILURE
        }
    }
}
