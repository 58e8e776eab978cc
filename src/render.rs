//! Output: text or `--json` on stdout, progress bars or log lines on stderr.
//!
//! stderr has three shapes. On a terminal: progress bars and `akbackup: ...` lines for a
//! person. Elsewhere (a pipe, the journal, cron mail): the same lines, the progress ones
//! prefixed by an RFC 3339 UTC timestamp; warnings and errors keep the `akbackup: ` start
//! scripts match on. With `--log-format json`: one JSON object per line (`timestamp`,
//! `level`, `target`, `message`, and `component` where there is one), the storage engine's
//! messages included, for log collectors. Messages never carry secrets: the core redacts
//! passwords in URIs and webhook URLs before they get here, the signing and transport
//! libraries' debug output (which dumps credentials) is filtered out at every level, and every
//! line, ours and the libraries', is written through [`akbackup_core::redact`], which masks
//! every secret value akbackup has read.

use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
    sync::{Mutex, OnceLock},
    time::Instant,
};

use akbackup_core::{config::Kind, progress::Progress, units::human_bytes};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::cli::Globals;

/// How stderr lines look (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people (progress bars on a terminal, timestamps elsewhere).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn log_format() -> LogFormat {
    LOG_FORMAT.get().copied().unwrap_or_default()
}

/// Targets whose debug and trace output can carry credentials: reqsign prints its credential
/// providers (the static one with `secret_access_key` in clear) and the signed request, and
/// the HTTP stack can print request headers (`x-amz-security-token`). Capped at `warn` (as at
/// the default level) even when `-v` or `AKBACKUP_LOG` asks for more.
const CREDENTIAL_TARGETS: &[&str] = &[
    "reqsign",
    "reqsign_core",
    "reqsign_aws_v4",
    "reqsign_aws_core",
    "reqsign_file_read_tokio",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
];

/// Routes the engine's `log` messages through tracing to stderr, in `format`.
pub fn init_logging(level: &str, format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
    akbackup_core::redact::register_from_env();
    let mut filter =
        tracing_subscriber::EnvFilter::try_from_env("AKBACKUP_LOG").unwrap_or_else(|_| {
            // The storage layer logs every expected "not found" (probing for a repository
            // config) as a warning and every failure with a backtrace; its failures reach
            // the user as our own one-line errors (`--verbose` shows its log).
            tracing_subscriber::EnvFilter::new(if level == "warn" {
                "warn,opendal=off"
            } else {
                level
            })
        });
    for target in CREDENTIAL_TARGETS {
        if let Ok(directive) = format!("{target}=warn").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr(Vec::new()));
    let _ = match format {
        LogFormat::Text => builder.with_target(false).without_time().try_init(),
        // The same keys as our own lines (see `log`): flat, no span lists.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// stderr for the tracing subscriber: collects one event, then writes it with every
/// registered secret masked (the net under the filter above, for a library line nobody
/// has seen yet).
struct RedactingStderr(Vec<u8>);

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.0).into_owned();
        self.0.clear();
        std::io::stderr()
            .lock()
            .write_all(akbackup_core::redact::redact(&text).as_bytes())
    }
}

impl Drop for RedactingStderr {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Severity of a line of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Progress and notes.
    Info,
    /// Something to look at; the run goes on.
    Warn,
    /// The run (or a part of it) failed.
    Error,
}

/// One line on stderr in the `--log-format` in effect: `message` about `component` (when
/// there is one). Text: `akbackup: message` (`akbackup: warning: message` for warnings),
/// info lines timestamped unless stderr is a terminal.
pub fn log(level: Level, component: Option<&str>, message: &str) {
    let line = format_line(
        log_format(),
        std::io::stderr().is_terminal(),
        jiff::Timestamp::now(),
        level,
        component,
        message,
    );
    let line = akbackup_core::redact::redact(&line);
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The text of a [`log`] line (pure, for tests).
fn format_line(
    format: LogFormat,
    tty: bool,
    now: jiff::Timestamp,
    level: Level,
    component: Option<&str>,
    message: &str,
) -> String {
    let message = message.replace('\n', " ");
    match format {
        LogFormat::Json => {
            let mut v = serde_json::json!({
                "timestamp": format!("{now:.3}"),
                "level": match level {
                    Level::Info => "INFO",
                    Level::Warn => "WARN",
                    Level::Error => "ERROR",
                },
                "target": "akbackup",
                "message": message,
            });
            if let Some(c) = component {
                v["component"] = serde_json::Value::from(c);
            }
            v.to_string()
        }
        LogFormat::Text => match level {
            Level::Info if !tty => format!("{now:.3} akbackup: {message}"),
            Level::Info | Level::Error => format!("akbackup: {message}"),
            Level::Warn => format!("akbackup: warning: {message}"),
        },
    }
}

/// Prints `value` as JSON with `--json`, else the text from `text`.
pub fn out<T: serde::Serialize>(
    g: &Globals,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    // stdout is masked too: a report may quote a library's message.
    if g.json {
        let doc = serde_json::to_string_pretty(value).map_err(std::io::Error::from)?;
        writeln!(stdout, "{}", akbackup_core::redact::redact(&doc))?;
    } else {
        let t = text();
        let t = akbackup_core::redact::redact(&t);
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
            // JSON lines were asked for even on a terminal: no bars between them.
            bars: (tty && log_format() == LogFormat::Text).then(MultiProgress::new),
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
                    let size = total
                        .map(|t| format!(" ({})", human_bytes(t)))
                        .unwrap_or_default();
                    log(
                        Level::Info,
                        component_of(label),
                        &format!("{label}: started{size}"),
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
                let line = format!("{label}: done, {} in {secs:.1}s", human_bytes(n));
                match &self.bars {
                    Some(multi) => {
                        let _ = multi.println(format!("akbackup: {line}"));
                    }
                    None => log(Level::Info, component_of(label), &line),
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
            None => log(Level::Info, component_of(message), message),
        }
    }

    fn warn(&self, message: &str) {
        log(Level::Warn, None, message);
    }

    fn error(&self, message: &str) {
        log(Level::Error, None, message);
    }
}

/// The component a progress label is about (`files.control`, `ssdb.stat: detail`,
/// `verify 1a2b3c4d mongodb.control`), if it names one.
fn component_of(label: &str) -> Option<&str> {
    let head = label.split(':').next().unwrap_or(label);
    head.split_whitespace().last().filter(|w| {
        w.split_once('.')
            .is_some_and(|(kind, _)| Kind::parse(kind).is_some())
    })
}

/// A duration for messages: whole days or hours as the config writes them (`2d`, `23h`),
/// else minutes, else seconds.
pub fn age(seconds: u64) -> String {
    match seconds {
        0 => "0h".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s}s"),
    }
}

/// `2026-11-24 23:59:59` in UTC.
pub fn time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> jiff::Timestamp {
        "2026-11-25T09:10:19.5Z".parse().expect("timestamp")
    }

    #[test]
    /// Info lines off a terminal start with an RFC 3339 timestamp; warnings and errors keep
    /// the `akbackup: ` start scripts match; a terminal gets no timestamps.
    fn text_lines() {
        let line = |tty, level| format_line(LogFormat::Text, tty, at(), level, None, "m");
        assert_eq!(
            line(false, Level::Info),
            "2026-11-25T09:10:19.500Z akbackup: m"
        );
        assert_eq!(line(true, Level::Info), "akbackup: m");
        assert_eq!(line(false, Level::Warn), "akbackup: warning: m");
        assert_eq!(line(false, Level::Error), "akbackup: m");
    }

    #[test]
    /// A JSON line is one object with the documented keys, newlines folded.
    fn json_lines() {
        let line = format_line(
            LogFormat::Json,
            true,
            at(),
            Level::Warn,
            Some("ssdb.stat"),
            "a\nb",
        );
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["timestamp"], "2026-11-25T09:10:19.500Z");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "a b");
        assert_eq!(v["component"], "ssdb.stat");
        assert_eq!(v["target"], "akbackup");
    }

    #[test]
    /// Progress labels name their component before any colon.
    fn component_of_label() {
        assert_eq!(component_of("files.control"), Some("files.control"));
        assert_eq!(component_of("ssdb.stat: verify"), Some("ssdb.stat"));
        assert_eq!(
            component_of("verify 1a2b3c4d mongodb.control"),
            Some("mongodb.control")
        );
        assert_eq!(component_of("copy"), None);
    }
}
