//! Output: text or `--json` on stdout, progress bars or log lines on stderr.

use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
    sync::Mutex,
    time::Instant,
};

use akbackup_core::{backup::human_bytes, progress::Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::cli::Globals;

/// Routes the engine's `log` messages through tracing to stderr.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AKBACKUP_LOG").unwrap_or_else(|_| {
        // The storage layer logs every expected "not found" (probing for a repository
        // config) as a warning and every failure with a backtrace; its failures reach
        // the user as our own one-line errors (`--verbose` shows its log).
        tracing_subscriber::EnvFilter::new(if level == "warn" {
            "warn,opendal=off"
        } else {
            level
        })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Prints `value` as JSON with `--json`, else the text from `text`.
pub fn out<T: serde::Serialize>(
    g: &Globals,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if g.json {
        serde_json::to_writer_pretty(&mut stdout, value).map_err(std::io::Error::from)?;
        writeln!(stdout)?;
    } else {
        let t = text();
        write!(stdout, "{t}")?;
        if !t.ends_with('\n') {
            writeln!(stdout)?;
        }
    }
    Ok(())
}

/// Progress on stderr: bars on a terminal, one line per step otherwise; silent with `--json`
/// unless stderr is a terminal.
pub struct Reporter {
    bars: Option<MultiProgress>,
    active: Mutex<HashMap<String, (ProgressBar, Instant, u64)>>,
    quiet: bool,
}

impl Reporter {
    pub fn new(g: &Globals) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            bars: tty.then(MultiProgress::new),
            active: Mutex::new(HashMap::new()),
            quiet: g.json && !tty,
        }
    }
}

impl Progress for Reporter {
    fn begin(&self, label: &str, total: Option<u64>) {
        let Ok(mut active) = self.active.lock() else {
            return;
        };
        let bar = match &self.bars {
            Some(multi) => {
                let bar = multi.add(total.map_or_else(ProgressBar::no_length, ProgressBar::new));
                let style = ProgressStyle::with_template(
                    "{prefix:>16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(label.to_string());
                bar
            }
            None => {
                if !self.quiet {
                    eprintln!(
                        "akbackup: {label}: started{}",
                        total
                            .map(|t| format!(" ({})", human_bytes(t)))
                            .unwrap_or_default()
                    );
                }
                ProgressBar::hidden()
            }
        };
        active.insert(label.to_string(), (bar, Instant::now(), 0));
    }

    fn advance(&self, label: &str, bytes: u64) {
        if let Ok(mut active) = self.active.lock()
            && let Some((bar, _, n)) = active.get_mut(label)
        {
            bar.inc(bytes);
            *n += bytes;
        }
    }

    fn end(&self, label: &str) {
        if let Ok(mut active) = self.active.lock()
            && let Some((bar, start, n)) = active.remove(label)
        {
            bar.finish_and_clear();
            if !self.quiet {
                let secs = start.elapsed().as_secs_f64();
                let line = format!("akbackup: {label}: done, {} in {secs:.1}s", human_bytes(n));
                match &self.bars {
                    Some(multi) => {
                        let _ = multi.println(line);
                    }
                    None => eprintln!("{line}"),
                }
            }
        }
    }

    fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(multi) => {
                let _ = multi.println(format!("akbackup: {message}"));
            }
            None => eprintln!("akbackup: {message}"),
        }
    }
}

/// `2026-11-24 23:59:59` in UTC.
pub fn time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}
