//! Command-line definition: global flags and one module per subcommand.

mod backup;
mod config;
mod copy;
mod demo;
mod doctor;
mod export;
mod forget;
mod import;
mod init;
mod key;
mod man;
mod restore;
mod schedule;
mod snapshots;
mod status;
mod verify;

use std::{path::PathBuf, process::ExitCode, sync::OnceLock};

use akbackup_core::{
    config::{Config, DEFAULT_CONFIG_PATH},
    repository::{HostScope, LockWait},
};
use anyhow::Context;
use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes:
  0  ok
  1  the operation ran but something failed, or verify found problems
  2  usage, config or environment error (bad config, wrong password, missing repository, lock held)

Locks: a command that writes (backup, forget, copy, restore, import) holds the repository lock;
another one exits 2 naming the holder, or waits for it with --wait (--wait=SECONDS at most).
The lock lives in the repository, in restic's format: akbackup on other hosts and the restic
client honour it (backup, restore and copy share it; forget, prune and key changes need it alone).

Hosts: several servers may share one repository. `latest`, retention and the cleanup of
unfinished runs act on this host's sets; --host NAME acts on another host's (e.g. restore a dead
server's sets on its replacement), --all-hosts on everyone's. `snapshots` lists every host's.

Config: --config FILE, else $AKBACKUP_CONFIG, else /etc/akbackup/akbackup.toml.
Password: $AKBACKUP_PASSWORD, else [repository] password-command, else password-file (mode 0600).

First time:  akbackup init && akbackup backup && akbackup verify --read-data
Every night: akbackup backup && akbackup forget --keep-daily 7 --keep-weekly 4 --keep-monthly 6 --prune";

/// Consistent, incremental, verified, encrypted backups of an Altcraft platform.
///
/// akbackup backs up the control module (/opt/altcraft), the SSDB stores (online, consistent
/// copies of their LevelDB files) and the MongoDB instances (native dumps in mongodump
/// layout) into one restic-format repository: encrypted, compressed and deduplicated, so the
/// second day costs only what changed. The standard `restic` client can read the repository
/// too, and `export` writes the archives of the documented manual procedure.
#[derive(Debug, Parser)]
#[command(name = "akbackup", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Config file (default /etc/akbackup/akbackup.toml)
    #[arg(long, global = true, env = "AKBACKUP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print one machine-readable JSON document on stdout instead of text
    #[arg(long, global = true)]
    json: bool,
    /// Use the repository [repositories.NAME] instead of [repository]
    #[arg(long, global = true, env = "AKBACKUP_REPO", value_name = "NAME")]
    repo: Option<String>,
    /// Show debug messages of the storage engine (-vv: trace); secrets are masked
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// stderr lines: text (progress bars on a terminal, timestamped lines elsewhere) or
    /// json (one object per line, for log collectors)
    #[arg(
        long,
        global = true,
        env = "AKBACKUP_LOG_FORMAT",
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    log_format: crate::render::LogFormat,
    /// When another run holds the repository lock, wait for it (at most SECONDS with
    /// --wait=SECONDS) instead of exiting 2
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "forever",
        value_parser = parse_wait
    )]
    wait: Option<LockWait>,
    /// Act on the sets of host NAME instead of this host's (`latest`, retention, cleanup);
    /// a backup records NAME as its host
    #[arg(long, global = true, value_name = "NAME", conflicts_with = "all_hosts")]
    host: Option<String>,
    /// Act on the sets of every host: `latest` is the newest of all, retention applies to
    /// each host's sets on their own
    #[arg(long, global = true)]
    all_hosts: bool,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The log level for the engine's messages.
    pub const fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "warn",
            1 => "debug",
            _ => "trace",
        }
    }

    /// The `--log-format` in effect.
    pub const fn log_format(&self) -> crate::render::LogFormat {
        self.log_format
    }
}

/// The commands; each one's help is the doc of its `Args` (first paragraph in the list,
/// all of it with `--help`).
#[derive(Debug, Subcommand)]
enum Command {
    Init(init::Args),
    Backup(backup::Args),
    Snapshots(snapshots::Args),
    Verify(verify::Args),
    Restore(restore::Args),
    Forget(forget::Args),
    Copy(copy::Args),
    Import(import::Args),
    Export(export::Args),
    Key(key::Args),
    Config(config::Args),
    Schedule(schedule::Args),
    Doctor(doctor::Args),
    Status(status::Args),
    Completions(Completions),
    Demo(demo::Args),
    #[command(hide = true)]
    Man(man::Args),
}

/// Print shell completions: `akbackup completions bash > /etc/bash_completion.d/akbackup`.
///
/// Shells: bash, zsh, fish, elvish, powershell.
#[derive(Debug, clap::Args)]
pub struct Completions {
    /// The shell
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Global options every command gets.
#[derive(Debug, Clone)]
pub struct Globals {
    config: Option<PathBuf>,
    repo: Option<String>,
    /// JSON output.
    pub json: bool,
}

impl Globals {
    /// The config file path in effect (`--config`, `$AKBACKUP_CONFIG` or the default).
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Loads the config from `--config`, `$AKBACKUP_CONFIG` or the default path.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        if self.config.is_none() && !path.exists() {
            anyhow::bail!(
                "no config at {DEFAULT_CONFIG_PATH}: create it (the package has an example in /usr/share/doc/akbackup/examples/akbackup.toml; see README) or pass --config FILE"
            );
        }
        let mut config = Config::load(&path)?;
        if let Some(name) = &self.repo {
            config.select_repository(name)?;
        }
        Ok(config)
    }
}

/// `--wait` without a value waits forever; `--wait=N` N seconds.
fn parse_wait(s: &str) -> Result<LockWait, String> {
    if s == "forever" {
        return Ok(LockWait::Forever);
    }
    let n = s
        .parse::<u64>()
        .map_err(|_| format!("\"{s}\" is not a number of seconds"))?;
    // The wait becomes a deadline (`Instant + Duration`), which panics on overflow.
    let max = akbackup_core::config::MAX_TIMEOUT_SECS;
    if n > max {
        return Err(format!(
            "{n} seconds is more than {max} (one day); --wait without a value waits as long as it takes"
        ));
    }
    Ok(LockWait::Up(std::time::Duration::from_secs(n)))
}

/// The `--wait` of this run, for every repository it opens.
static LOCK_WAIT: OnceLock<LockWait> = OnceLock::new();
/// The `--host` / `--all-hosts` of this run, when given.
static HOST_SCOPE: OnceLock<Option<HostScope>> = OnceLock::new();

/// The host scope asked for on the command line (`None`: this host, by default).
pub fn explicit_host_scope() -> Option<&'static HostScope> {
    HOST_SCOPE.get().and_then(Option::as_ref)
}

/// Applies `--wait`, `--host` and `--all-hosts` to a repository opened by a command.
pub fn with_wait(
    mut repo: akbackup_core::repository::Repository,
) -> akbackup_core::repository::Repository {
    if let Some(scope) = explicit_host_scope() {
        repo.set_host_scope(scope.clone());
    }
    repo.set_lock_wait(
        LOCK_WAIT.get().copied().unwrap_or_default(),
        Box::new(|shown, h| {
            crate::render::log(
                crate::render::Level::Warn,
                None,
                &format!(
                    "waiting for the lock of {shown}: held by pid {} on {} running `{}` since {}",
                    h.pid, h.host, h.command, h.time
                ),
            );
        }),
    );
    repo
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = LOCK_WAIT.set(cli.wait.unwrap_or_default());
    let scope = match (cli.host, cli.all_hosts) {
        (_, true) => Some(HostScope::All),
        (Some(name), false) if name.trim().is_empty() || name.chars().any(char::is_control) => {
            anyhow::bail!("--host \"{name}\" is not a host name")
        }
        (Some(name), false) => Some(HostScope::Host(name)),
        (None, false) => None,
    };
    let _ = HOST_SCOPE.set(scope);
    let globals = Globals {
        config: cli.config,
        repo: cli.repo,
        json: cli.json,
    };
    match cli.command {
        Command::Init(a) => init::run(&globals, &a),
        Command::Backup(a) => backup::run(&globals, &a),
        Command::Snapshots(a) => snapshots::run(&globals, &a),
        Command::Verify(a) => verify::run(&globals, &a),
        Command::Restore(a) => restore::run(&globals, &a),
        Command::Forget(a) => forget::run(&globals, &a),
        Command::Copy(a) => copy::run(&globals, &a),
        Command::Import(a) => import::run(&globals, &a),
        Command::Export(a) => export::run(&globals, &a),
        Command::Key(a) => key::run(&globals, &a),
        Command::Config(a) => config::run(&globals, &a),
        Command::Schedule(a) => schedule::run(&globals, &a),
        Command::Doctor(a) => doctor::run(&globals, &a),
        Command::Status(a) => status::run(&globals, &a),
        Command::Completions(a) => {
            // Into memory first: the generator panics on a closed pipe (`| head`).
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "akbackup", &mut buf);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &buf);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(a) => demo::run(&globals, &a),
        Command::Man(a) => man::run(&a),
    }
}

/// Opens the repository with a context line, then settles what dead runs left (services
/// they stopped, their stages: see `cleanup::after_dead_runs`), saying what it did.
pub fn open_repo(config: &Config) -> anyhow::Result<akbackup_core::repository::Repository> {
    let repo = akbackup_core::repository::Repository::open(config)
        .map(with_wait)
        .context("cannot open repository")?;
    settle_dead_runs(config, repo.path());
    Ok(repo)
}

/// Starts what a dead run stopped and removes what it left in `work_dir` and beside the
/// configured components; each action is one warning line.
pub fn settle_dead_runs(config: &Config, work_dir: &std::path::Path) {
    for note in akbackup_core::cleanup::after_dead_runs(config, work_dir) {
        crate::render::log(crate::render::Level::Warn, None, &note);
    }
}

/// Exit code from a success flag.
pub fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
