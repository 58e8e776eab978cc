//! What monitoring reads: Prometheus text-format metrics for node_exporter's textfile
//! collector, and the age of each component's last good backup for `akbackup status`.
//!
//! Everything is derived from the repository's complete sets plus the run that just ended,
//! so a failed run cannot erase when the last good one was; the file is replaced atomically
//! (written beside it, then renamed) because the collector may read it at any moment.
//!
//! The optional webhook is one HTTP POST of a JSON document with a timeout; whether a failed
//! call matters is the caller's decision (the backup binary treats it as a warning, since
//! the backup itself is what its exit code reports). Its URL is only ever shown redacted.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Serialize;

use crate::backup_set::{BackupSet, Status};

/// The newest complete set of each component: (component, set time, set id).
#[must_use]
pub fn last_good(sets: &[BackupSet]) -> BTreeMap<String, (jiff::Timestamp, String)> {
    let mut out: BTreeMap<String, (jiff::Timestamp, String)> = BTreeMap::new();
    for set in sets {
        for c in &set.manifest.components {
            if c.status == Status::Failed {
                continue;
            }
            let newer = out
                .get(&c.name)
                .is_none_or(|(t, _)| *t < set.manifest.started);
            if newer {
                out.insert(c.name.clone(), (set.manifest.started, set.id.clone()));
            }
        }
    }
    out
}

/// The run a metrics file describes.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// When it ended.
    pub finished: jiff::Timestamp,
    /// Whether it recorded a complete set.
    pub success: bool,
    /// Seconds it took.
    pub duration_secs: f64,
    /// Bytes it added to the repository.
    pub added_bytes: u64,
    /// Per component: (bytes, bytes read, seconds to prepare).
    pub components: Vec<(String, u64, u64, f64)>,
}

/// The result of a `verify` run, for the metrics file.
#[derive(Debug, Clone)]
pub struct VerifyFacts {
    /// When it ended.
    pub finished: jiff::Timestamp,
    /// Whether it found no problem.
    pub success: bool,
    /// Whether it read the data (all of it or a subset), not only the structure.
    pub read_data: bool,
}

/// The verify metrics; [`merge`] puts them into a file that also holds the backup's.
#[must_use]
pub fn verify_metrics(v: &VerifyFacts) -> String {
    let mut s = String::new();
    family(
        &mut s,
        "last_verify_timestamp_seconds",
        "End of the last verify run.",
        vec![(String::new(), v.finished.as_second().to_string())],
    );
    family(
        &mut s,
        "last_verify_success",
        "1 when the last verify found no problem.",
        vec![(String::new(), u8::from(v.success).to_string())],
    );
    family(
        &mut s,
        "last_verify_read_data",
        "1 when the last verify read pack data, 0 when it checked the structure only.",
        vec![(String::new(), u8::from(v.read_data).to_string())],
    );
    s
}

/// Appends one gauge family (HELP, TYPE, samples).
fn family(s: &mut String, name: &str, help: &str, rows: Vec<(String, String)>) {
    let _ = writeln!(s, "# HELP akbackup_{name} {help}");
    let _ = writeln!(s, "# TYPE akbackup_{name} gauge");
    for (labels, value) in rows {
        let _ = writeln!(s, "akbackup_{name}{labels} {value}");
    }
}

/// `existing` with every metric family that `update` defines replaced by `update`'s: backup
/// and verify each write their own families into one file without erasing the other's.
#[must_use]
pub fn merge(existing: &str, update: &str) -> String {
    let name_of = |line: &str| -> Option<String> {
        let rest = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        (!name.is_empty()).then_some(name)
    };
    let replaced: std::collections::BTreeSet<String> = update.lines().filter_map(name_of).collect();
    let mut out: String = existing
        .lines()
        .filter(|l| name_of(l).is_none_or(|n| !replaced.contains(&n)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(update);
    out
}

/// The metrics text for `sets` (the repository after the run) and `run`.
#[must_use]
pub fn metrics(sets: &[BackupSet], run: &RunFacts) -> String {
    let mut s = String::new();
    let mut metric = |name: &str, help: &str, _kind: &str, rows: Vec<(String, String)>| {
        family(&mut s, name, help, rows);
    };
    let label = |c: &str| format!("{{component=\"{}\"}}", c.replace(['"', '\\', '\n'], "_"));
    metric(
        "last_run_timestamp_seconds",
        "End of the last backup run (success or not).",
        "gauge",
        vec![(String::new(), run.finished.as_second().to_string())],
    );
    metric(
        "last_run_success",
        "1 when the last backup run recorded a complete set.",
        "gauge",
        vec![(String::new(), u8::from(run.success).to_string())],
    );
    metric(
        "last_run_duration_seconds",
        "Duration of the last backup run.",
        "gauge",
        vec![(String::new(), format!("{:.3}", run.duration_secs))],
    );
    metric(
        "last_run_added_bytes",
        "Bytes the last run added to the repository (after dedup and compression).",
        "gauge",
        vec![(String::new(), run.added_bytes.to_string())],
    );
    metric(
        "last_success_timestamp_seconds",
        "Start of the newest complete set holding the component.",
        "gauge",
        last_good(sets)
            .iter()
            .map(|(c, (t, _))| (label(c), t.as_second().to_string()))
            .collect(),
    );
    metric(
        "component_bytes",
        "Bytes of the component in the last run.",
        "gauge",
        run.components
            .iter()
            .map(|(c, b, _, _)| (label(c), b.to_string()))
            .collect(),
    );
    metric(
        "component_read_bytes",
        "Bytes of the component read in the last run (unchanged files are not read).",
        "gauge",
        run.components
            .iter()
            .map(|(c, _, r, _)| (label(c), r.to_string()))
            .collect(),
    );
    metric(
        "component_prepare_seconds",
        "Seconds the component took to make its data readable in the last run (dump, checkpoint); storing is one step for the whole set.",
        "gauge",
        run.components
            .iter()
            .map(|(c, _, _, t)| (label(c), format!("{t:.3}")))
            .collect(),
    );
    metric(
        "sets",
        "Complete backup sets in the repository.",
        "gauge",
        vec![(String::new(), sets.len().to_string())],
    );
    s
}

/// Replaces `path` with `text` atomically: a temporary file in the same directory, synced,
/// then renamed over it, so a reader sees the old file or the new one, never half of one.
///
/// # Errors
/// I/O errors naming the directory.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".akbackup-metrics-")
        .tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.as_file().sync_all()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// One component's age for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Age {
    /// `kind.name`.
    pub component: String,
    /// Start of its newest complete set, if any.
    pub last_success: Option<jiff::Timestamp>,
    /// Hours since then.
    pub age_hours: Option<f64>,
    /// `ok`, `warning` or `critical`.
    pub state: &'static str,
}

/// The age of each configured component's last good backup at `now`, judged against
/// `warn` and `crit` (hours); a component never backed up is critical.
#[must_use]
pub fn ages(
    components: &[String],
    sets: &[BackupSet],
    now: jiff::Timestamp,
    warn: f64,
    crit: f64,
) -> Vec<Age> {
    let good = last_good(sets);
    components
        .iter()
        .map(|c| {
            let last = good.get(c).map(|(t, _)| *t);
            let age = last.map(|t| (now - t).total(jiff::Unit::Second).unwrap_or(0.0) / 3600.0);
            let state = match age {
                None => "critical",
                Some(h) if h >= crit => "critical",
                Some(h) if h >= warn => "warning",
                Some(_) => "ok",
            };
            Age {
                component: c.clone(),
                last_success: last,
                age_hours: age,
                state,
            }
        })
        .collect()
}

/// A webhook call that did not get a 2xx answer.
#[derive(Debug, thiserror::Error)]
#[error("webhook {url}: {message}")]
pub struct WebhookError {
    /// The URL, redacted.
    pub url: String,
    /// What went wrong (connection refused, timeout, `http status: 500`).
    pub message: String,
}

/// POSTs `body` as JSON to `url`, waiting at most `timeout` for the whole exchange.
/// Proxies come from the usual environment variables (`HTTPS_PROXY`, `NO_PROXY`, ...).
///
/// # Errors
/// [`WebhookError`] with the redacted URL for a refused or timed-out connection, a bad URL
/// or an answer outside 2xx.
pub fn post_webhook(
    url: &str,
    body: &serde_json::Value,
    timeout: std::time::Duration,
) -> Result<u16, WebhookError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .user_agent(concat!("akbackup/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let failed = |message: String| WebhookError {
        url: redact_url(url),
        // The library may quote the URL (a bad URI); never let the token through.
        message: message.replace(url, &redact_url(url)),
    };
    let text = serde_json::to_string(body).map_err(|e| failed(e.to_string()))?;
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(text)
        .map_err(|e| failed(e.to_string()))?;
    Ok(response.status().as_u16())
}

/// `scheme://host:port/...` of a URL: user info, path, query and fragment are dropped,
/// because webhook URLs carry their token in any of them (chat webhooks in the path).
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_string();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let more = if rest.len() > authority.len() {
        "/..."
    } else {
        ""
    };
    format!("{scheme}://{host}{more}")
}

/// Calls `[monitoring] webhook` with `body` (plus `command` and `exit_code`) when the config
/// asks for it after a run of `command` with this exit code. A failed call is a warning: the
/// run itself is what the exit code reports, and the receiver can alert on a run it did not
/// hear about.
pub fn notify(
    config: &crate::config::Config,
    command: &str,
    mut body: serde_json::Value,
    exit_code: u8,
    progress: &crate::progress::ProgressRef,
) {
    let m = &config.monitoring;
    let Some(url) = &m.webhook else {
        return;
    };
    if exit_code == 0 && m.webhook_on == crate::config::WebhookOn::Failure {
        return;
    }
    if let Some(fields) = body.as_object_mut() {
        fields.insert("command".to_string(), command.into());
        fields.insert("exit_code".to_string(), exit_code.into());
    }
    if let Err(e) = post_webhook(url, &body, m.webhook_timeout()) {
        progress.warn(&format!("{e} (the {command} result is not affected)"));
    }
}

#[cfg(test)]
mod tests {
    use super::{merge, redact_url};

    /// Families named in the update replace the old ones (HELP, TYPE and samples, labelled
    /// or not); others stay; a name that is a prefix of another is not confused with it.
    #[test]
    fn merge_replaces_only_the_updated_families() {
        let old = "# HELP akbackup_sets Sets.\n# TYPE akbackup_sets gauge\nakbackup_sets 3\n\
                   # HELP akbackup_sets_total X.\nakbackup_sets_total 9\n\
                   akbackup_last_verify_success 1\n";
        let update = "# HELP akbackup_sets Sets.\n# TYPE akbackup_sets gauge\nakbackup_sets 4\n";
        let merged = merge(old, update);
        assert_eq!(
            merged,
            "# HELP akbackup_sets_total X.\nakbackup_sets_total 9\n\
             akbackup_last_verify_success 1\n\
             # HELP akbackup_sets Sets.\n# TYPE akbackup_sets gauge\nakbackup_sets 4\n"
        );
        assert_eq!(merge("", update), update);
    }

    #[test]
    /// No part of a URL that can hold a token survives redaction.
    fn redact_url_keeps_only_scheme_and_host() {
        assert_eq!(
            redact_url("https://user:pw@hooks.example:8443/services/T0/B0/s3cr3t?token=x#f"),
            "https://hooks.example:8443/..."
        );
        assert_eq!(redact_url("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(redact_url("http://h?token=x"), "http://h/...");
        assert_eq!(redact_url("not a url with secret"), "***");
    }
}
