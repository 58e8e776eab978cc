//! The TOML configuration: schema, defaults of a standard Altcraft install, validation.
//!
//! Loading is two passes. The first walks the raw TOML table and rejects unknown keys with the
//! closest valid one (`unknown key "pathh" in [files.control]; did you mean "path"?`), because
//! serde's own message lists every field and no line. The second deserializes into typed
//! structs. Checks against the machine (paths exist, repository opens) live in
//! [`crate::plan`] and the `config check` command, not here: loading never touches the disk
//! beyond the file itself.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Where the config is read from when neither `--config` nor `AKBACKUP_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/akbackup/akbackup.toml";

/// Errors from loading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// TOML syntax or a value of the wrong type.
    #[error("config {path}, line {line}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the problem (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A key that akbackup does not know.
    #[error("config {path}: unknown key \"{key}\" in [{section}]{hint}")]
    UnknownKey {
        /// The config file.
        path: PathBuf,
        /// The table holding the key.
        section: String,
        /// The key as written.
        key: String,
        /// `; did you mean "x"?` or empty.
        hint: String,
    },
    /// The file holds a secret and group or others can read it.
    #[error(
        "config {path} holds {what} and is readable by group or others (mode {mode:04o}): run chmod 600 {path}"
    )]
    TooOpen {
        /// The config file.
        path: PathBuf,
        /// Which secret, e.g. `secret-access-key in [repository]`.
        what: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A value that parses but makes no sense.
    #[error("config {path}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

pub use crate::component::{
    files::{FilesConfig, OnReadError},
    kind::{ComponentName, Kind},
    mongodb::MongodbConfig,
    ssdb::{SsdbConfig, SsdbMode},
};
pub use crate::redact::redact_uri;
pub use crate::units::{MAX_TIMEOUT_SECS, check_seconds, parse_duration};

/// `[repository]` (the default) or `[repositories.<name>]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RepositoryConfig {
    /// A local directory holding the restic-format repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Object storage instead of `path`: `s3://bucket/prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// S3 endpoint (`http://minio:9000`, `https://storage.yandexcloud.net`); AWS when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region (default `us-east-1`, which MinIO-style servers accept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`, the default) or virtual-host style
    /// (`bucket.endpoint/key`) when false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// S3 access key id; otherwise `AWS_ACCESS_KEY_ID`, then the credentials file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// S3 secret key (prefer the environment or a credentials file: the config is readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// An AWS shared credentials file (`[default]` or `profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// SFTP: the private key to log in with (mode 0600); unset: the SSH agent or ssh's
    /// defaults.
    pub identity_file: Option<PathBuf>,
    /// SFTP: the known_hosts file the server's key must be in (checked strictly); unset:
    /// `~/.ssh/known_hosts` of the user running akbackup.
    pub known_hosts: Option<PathBuf>,
    /// Profile in the credentials file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Parallel requests to the storage (default 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Retries of a failed request (default 3; 0 fails at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
    /// Seconds one storage request may go without completing before it counts as failed
    /// and is retried (default 60): a server that accepts the connection and never answers
    /// would otherwise hang the run, and keep its lock, forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Seconds to wait for a TCP connection to the storage endpoint (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<u64>,
    /// Bandwidth limit for the storage, e.g. "10MiB" (per second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<String>,
    /// Local directory for staging and the lock of a remote repository (default
    /// `/var/tmp/akbackup`); a local repository uses its own directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<PathBuf>,
    /// A file whose first line is the repository password (mode 0600 or stricter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A command (argv, no shell) printing the password on stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_command: Option<Vec<String>>,
}

impl RepositoryConfig {
    /// The storage request timeout in seconds after its default (60).
    #[must_use]
    pub fn timeout_secs(&self) -> u32 {
        u32::try_from(self.timeout.unwrap_or(60)).unwrap_or(u32::MAX)
    }

    /// The storage connect timeout in seconds after its default (10).
    #[must_use]
    pub fn connect_timeout_secs(&self) -> u32 {
        u32::try_from(self.connect_timeout.unwrap_or(10)).unwrap_or(u32::MAX)
    }
}

/// Refuses a relative path (its meaning would depend on the directory a timer or an
/// operator starts akbackup from) and one with control characters (a newline in a path
/// is a mistake or an attack; none can go into a unit file or a log line intact).
fn check_path(key: &str, path: &Path) -> Result<(), String> {
    if path.to_string_lossy().chars().any(char::is_control) {
        return Err(format!(
            "{key} {:?} holds a control character: write the path without it",
            path.display().to_string()
        ));
    }
    if !path.is_absolute() {
        return Err(format!(
            "{key} \"{}\" is relative: write the absolute path (its meaning must not depend on the directory akbackup is started in)",
            path.display()
        ));
    }
    Ok(())
}

/// `[monitoring]`: where monitoring reads akbackup's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Prometheus text file written after every backup run (for node_exporter's textfile
    /// collector, e.g. /var/lib/node_exporter/textfile/akbackup.prom).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub textfile: Option<PathBuf>,
    /// URL the `--json` summary of a backup is POSTed to (`http://` or `https://`); it may
    /// carry a token, so it is only ever shown redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// When the webhook is called: `failure` (default) or `always`.
    #[serde(default, skip_serializing_if = "WebhookOn::is_default")]
    pub webhook_on: WebhookOn,
    /// Seconds the whole webhook call may take (default 10), so a dead receiver cannot hold
    /// up a nightly run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_timeout: Option<u64>,
}

impl MonitoringConfig {
    /// The webhook timeout after its default.
    #[must_use]
    pub fn webhook_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.webhook_timeout.unwrap_or(10))
    }
}

/// When `[monitoring] webhook` is called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookOn {
    /// Only after a run that failed (exit code not 0): the quiet default for chat channels.
    #[default]
    Failure,
    /// After every run, so the receiver can also notice a run that never came.
    Always,
}

impl WebhookOn {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `[retention]`: which sets `akbackup forget` keeps when no `--keep-*` option is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the last N sets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the last set of each of the last N days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the last set of each of the last N weeks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the last set of each of the last N months.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the last set of each of the last N years.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every set less than this ("7d", "2w", "1m", "1y", "12h") older than the newest
    /// set (as restic counts it, so a stopped schedule does not empty the repository).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
    /// Run forget (and prune when `prune`) after every successful backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_backup: bool,
    /// Reclaim space when forgetting after a backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
    /// How long prune keeps data it found unused before deleting it ("23h" by default):
    /// a backup of another host that started before the prune and uses that data gets it
    /// back meanwhile. "0h" deletes at once (safe only when every writer takes the
    /// repository's locks, as akbackup and restic do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_after: Option<String>,
}

/// The whole configuration after defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// The repository (the default one).
    #[serde(default)]
    pub repository: RepositoryConfig,
    /// More repositories by name (`--repo NAME`, `copy --to NAME`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// Retention applied by `forget`.
    #[serde(default, skip_serializing_if = "is_default_retention")]
    pub retention: RetentionConfig,
    /// Monitoring outputs.
    #[serde(default, skip_serializing_if = "is_default_monitoring")]
    pub monitoring: MonitoringConfig,
    /// Commands around backups (`[[hooks]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::hooks::Hook>,
    /// Repositories every successful backup is copied to (names of `[repositories.*]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<String>,
    /// Directory trees.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FilesConfig>,
    /// MongoDB instances.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mongodb: BTreeMap<String, MongodbConfig>,
    /// SSDB stores.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ssdb: BTreeMap<String, SsdbConfig>,
    /// Where the config came from (not part of the file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn is_default_monitoring(m: &MonitoringConfig) -> bool {
    *m == MonitoringConfig::default()
}

fn is_default_retention(r: &RetentionConfig) -> bool {
    *r == RetentionConfig::default()
}

/// The keys of a table, read from its serde struct (so a new field is a valid key without a
/// list to keep in step); the keys of component sections come from [`Kind::keys`].
fn keys_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    serde_aux::serde_introspection::serde_introspect::<T>()
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the line or key, and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            error: source,
        })?;
        let mut config = Self::from_toml(&text, path)?;
        config.source = Some(path.to_path_buf());
        config.register_secrets();
        // Like a password file: a secret written in the config is only as safe as the file.
        if let Some(what) = config.inline_secrets().into_iter().next() {
            let mode = std::fs::metadata(path)
                .map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    error: source,
                })?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(ConfigError::TooOpen {
                    path: path.to_path_buf(),
                    what,
                    mode,
                });
            }
        }
        Ok(config)
    }

    /// Parses config text; `path` is only used in messages.
    ///
    /// # Errors
    /// [`ConfigError`] as for [`Config::load`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_error = |err: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            line: err.span().map_or(0, |span| line_of(text, span.start)),
            message: err.message().trim().replace('\n', " "),
        };
        let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        check_keys(&table, path)?;
        let mut config: Self = toml::from_str(text).map_err(parse_error)?;
        if Kind::ALL.iter().all(|k| k.sections(&config).is_empty()) {
            for kind in Kind::ALL {
                kind.add_standard(&mut config);
            }
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Refuses a repository directory or work dir (of `[repository]` and every
    /// `[repositories.X]`) that lies inside a files or SSDB component, or contains one: a
    /// backup would store the repository inside itself, and an in-place restore would swap the
    /// live repository out. Compared on lexically normalised paths (`/x/plat/../plat/repo`
    /// is `/x/plat/repo`); paths are known to be absolute here.
    fn check_repositories_outside_components(&self) -> Result<(), String> {
        let components: Vec<(String, PathBuf)> = Kind::ALL
            .into_iter()
            .flat_map(|kind| {
                kind.sections(self).into_iter().filter_map(move |(n, c)| {
                    c.live_dir()
                        .map(|dir| (format!("{kind}.{n}"), normalize(dir)))
                })
            })
            .collect();
        let repos = std::iter::once(("repository".to_string(), &self.repository)).chain(
            self.repositories
                .iter()
                .map(|(n, r)| (format!("repositories.{n}"), r)),
        );
        for (section, r) in repos {
            // A remote repository without work-dir stages under the default one.
            let default_work = (r.url.is_some() && r.work_dir.is_none())
                .then(|| PathBuf::from(crate::repository::DEFAULT_WORK_DIR));
            let dirs = [
                ("path", r.path.clone()),
                ("work-dir", r.work_dir.clone().or(default_work)),
            ];
            for (key, dir) in dirs {
                let Some(dir) = dir else { continue };
                let dir = normalize(&dir);
                for (name, path) in &components {
                    let relation = if dir.starts_with(path) {
                        "lies inside"
                    } else if path.starts_with(&dir) {
                        "contains"
                    } else {
                        continue;
                    };
                    return Err(format!(
                        "[{section}] {key} {} {relation} the component {name} ({}): backups would \
                         hold the repository and a restore would swap it out; move one of them",
                        dir.display(),
                        path.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every path key: absolute, no control characters (see [`check_path`]).
    fn check_paths(&self) -> Result<(), String> {
        let repos = std::iter::once(("repository".to_string(), &self.repository)).chain(
            self.repositories
                .iter()
                .map(|(n, r)| (format!("repositories.{n}"), r)),
        );
        for (section, r) in repos {
            for (key, value) in [
                ("path", &r.path),
                ("work-dir", &r.work_dir),
                ("password-file", &r.password_file),
                ("credentials-file", &r.credentials_file),
                ("identity-file", &r.identity_file),
                ("known-hosts", &r.known_hosts),
            ] {
                if let Some(p) = value {
                    check_path(&format!("[{section}] {key}"), p)?;
                }
            }
        }
        if let Some(p) = &self.monitoring.textfile {
            check_path("[monitoring] textfile", p)?;
        }
        for kind in Kind::ALL {
            for (name, section) in kind.sections(self) {
                for (key, p) in section.path_keys() {
                    check_path(&format!("[{kind}.{name}] {key}"), p)?;
                }
            }
        }
        Ok(())
    }

    /// The secrets written in the config itself, each as `key in [section]`: S3
    /// `secret-access-key`, SSDB `auth`, a password in a MongoDB `uri`, and the webhook URL
    /// (its path or query is the token of most chat services, so it is a secret as a whole).
    /// `access-key-id` alone is not secret.
    #[must_use]
    pub fn inline_secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.repository.secret_access_key.is_some() {
            out.push("secret-access-key in [repository]".to_string());
        }
        for (name, r) in &self.repositories {
            if r.secret_access_key.is_some() {
                out.push(format!("secret-access-key in [repositories.{name}]"));
            }
        }
        for kind in Kind::ALL {
            for (name, section) in kind.sections(self) {
                for (what, _) in section.inline_secrets() {
                    out.push(format!("{what} [{kind}.{name}]"));
                }
            }
        }
        if self.monitoring.webhook.is_some() {
            out.push("webhook in [monitoring]".to_string());
        }
        out
    }

    /// Registers the secrets written in the config with [`crate::redact`], so no log line
    /// can show them.
    fn register_secrets(&self) {
        for r in std::iter::once(&self.repository).chain(self.repositories.values()) {
            if let Some(secret) = &r.secret_access_key {
                crate::redact::register(secret);
            }
        }
        for kind in Kind::ALL {
            for (_, section) in kind.sections(self) {
                for (_, secret) in section.inline_secrets() {
                    crate::redact::register(secret);
                }
            }
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        self.check_paths().map_err(invalid)?;
        for kind in Kind::ALL {
            for (name, section) in kind.sections(self) {
                section
                    .validate()
                    .map_err(|e| invalid(format!("[{kind}.{name}] {e}")))?;
            }
        }
        let repos = std::iter::once(("repository".to_string(), &self.repository)).chain(
            self.repositories
                .iter()
                .map(|(n, r)| (format!("repositories.{n}"), r)),
        );
        for (section, r) in repos {
            match (&r.path, &r.url) {
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "[{section}] has both path and url: keep one"
                    )));
                }
                (None, None) if section != "repository" => {
                    return Err(invalid(format!(
                        "[{section}] has no location: add path = \"/backup/akbackup\" or url = \"s3://bucket/prefix\""
                    )));
                }
                (None, Some(url)) if !url.starts_with("s3://") && !url.starts_with("sftp://") => {
                    return Err(invalid(format!(
                        "[{section}] url \"{url}\" is not supported: use s3://bucket/prefix or sftp://user@host:port/path (or path for a local directory)"
                    )));
                }
                (_, url)
                    if !url.as_deref().is_some_and(|u| u.starts_with("sftp://"))
                        && (r.identity_file.is_some() || r.known_hosts.is_some()) =>
                {
                    return Err(invalid(format!(
                        "[{section}] identity-file and known-hosts apply to sftp:// repositories only"
                    )));
                }
                _ => {}
            }
            for (key, secs) in [
                ("timeout", r.timeout),
                ("connect-timeout", r.connect_timeout),
            ] {
                if let Some(secs) = secs {
                    check_seconds(key, secs).map_err(|e| invalid(format!("[{section}] {e}")))?;
                }
            }
        }
        for (i, h) in self.hooks.iter().enumerate() {
            h.validate()
                .map_err(|e| invalid(format!("[[hooks]] number {}: {e}", i + 1)))?;
            if let Some(c) = &h.component {
                let known = self.component_names().iter().any(|n| n.to_string() == *c);
                if !known {
                    return Err(invalid(format!(
                        "[[hooks]] number {}: component \"{c}\" is not configured",
                        i + 1
                    )));
                }
            }
        }
        for name in &self.copy_to {
            if !self.repositories.contains_key(name) {
                return Err(invalid(format!(
                    "copy-to names \"{name}\", which is not a [repositories.{name}] section"
                )));
            }
        }
        if let Some(url) = &self.monitoring.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(format!(
                "[monitoring] webhook \"{}\" must start with http:// or https://",
                crate::monitoring::redact_url(url)
            )));
        }
        if let Some(secs) = self.monitoring.webhook_timeout {
            check_seconds("webhook-timeout", secs)
                .map_err(|e| invalid(format!("[monitoring] {e}")))?;
        }
        if let Some(w) = &self.retention.keep_within {
            parse_duration(w).map_err(|e| invalid(format!("[retention] keep-within: {e}")))?;
        }
        if let Some(d) = &self.retention.delete_after {
            parse_duration(d).map_err(|e| invalid(format!("[retention] delete-after: {e}")))?;
        }
        // Components must not overlap: each owns its subtree of the snapshot.
        let paths: Vec<_> = self
            .component_paths()
            .into_iter()
            .map(|(n, p)| (n, normalize(&p)))
            .collect();
        for (a, pa) in &paths {
            for (b, pb) in &paths {
                if a != b && pb.starts_with(pa) {
                    return Err(invalid(format!(
                        "{b} ({}) lies inside {a} ({}): components must not overlap",
                        pb.display(),
                        pa.display()
                    )));
                }
            }
        }
        self.check_repositories_outside_components()
            .map_err(invalid)?;
        if matches!(&self.repository.password_command, Some(argv) if argv.is_empty()) {
            return Err(invalid(
                "[repository] password-command is empty".to_string(),
            ));
        }
        Ok(())
    }

    /// Every component's name and the absolute path its data has inside a snapshot.
    #[must_use]
    pub fn component_paths(&self) -> Vec<(ComponentName, PathBuf)> {
        Kind::ALL
            .into_iter()
            .flat_map(|kind| {
                kind.sections(self).into_iter().map(move |(name, c)| {
                    (
                        ComponentName {
                            kind,
                            name: name.to_string(),
                        },
                        c.repo_path(name),
                    )
                })
            })
            .collect()
    }

    /// The names of all configured components, in a stable order.
    #[must_use]
    pub fn component_names(&self) -> Vec<ComponentName> {
        let mut names: Vec<_> = self.component_paths().into_iter().map(|(n, _)| n).collect();
        names.sort();
        names
    }

    /// The config of the repository named `name` (`default` is `[repository]`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the configured repositories.
    pub fn repository_named(&self, name: &str) -> Result<&RepositoryConfig, ConfigError> {
        if name == "default" {
            return Ok(&self.repository);
        }
        self.repositories.get(name).ok_or_else(|| {
            let mut names: Vec<&str> = vec!["default"];
            names.extend(self.repositories.keys().map(String::as_str));
            ConfigError::Invalid {
                path: self.source.clone().unwrap_or_default(),
                message: format!(
                    "no repository \"{name}\"{}: configured are {} (add [repositories.{name}])",
                    closest(name, &names)
                        .map_or_else(String::new, |c| format!(" (did you mean \"{c}\"?)")),
                    names.join(", ")
                ),
            }
        })
    }

    /// Makes the repository named `name` the one every command uses (`--repo NAME`).
    ///
    /// # Errors
    /// As [`Config::repository_named`].
    pub fn select_repository(&mut self, name: &str) -> Result<(), ConfigError> {
        let chosen = self.repository_named(name)?.clone();
        self.repository = chosen;
        Ok(())
    }

    /// A copy with secrets (passwords in URIs) replaced by `***`, for display in any form.
    #[must_use]
    pub fn redacted(&self) -> Self {
        let mut shown = self.clone();
        for kind in Kind::ALL {
            for (_, section) in kind.sections_mut(&mut shown) {
                section.redact();
            }
        }
        for r in std::iter::once(&mut shown.repository).chain(shown.repositories.values_mut()) {
            if r.secret_access_key.is_some() {
                r.secret_access_key = Some("***".to_string());
            }
        }
        if let Some(url) = &mut shown.monitoring.webhook {
            *url = crate::monitoring::redact_url(url);
        }
        shown
    }

    /// The config as TOML with secrets redacted, for `config show`.
    #[must_use]
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted())
            .unwrap_or_else(|err| format!("# cannot render: {err}\n"))
    }
}

/// `path` with `.` dropped and `..` applied, without touching the disk (for comparing the
/// absolute paths of a config; `/..` stays `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count() + 1)
}

/// Rejects keys no struct of the schema has, naming the closest valid one.
fn check_keys(table: &toml::Table, path: &Path) -> Result<(), ConfigError> {
    let unknown = |section: &str, key: &str, valid: &[&str]| ConfigError::UnknownKey {
        path: path.to_path_buf(),
        section: section.to_string(),
        key: key.to_string(),
        hint: closest(key, valid).map_or_else(
            || format!("; valid keys: {}", valid.join(", ")),
            |best| format!("; did you mean \"{best}\"?"),
        ),
    };
    let not_table = |section: &str| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: format!("[{section}] must be a table"),
    };
    let top = keys_of::<Config>();
    for (key, value) in table {
        if let Some(kind) = Kind::parse(key) {
            let valid = kind.keys();
            let t = value.as_table().ok_or_else(|| not_table(key))?;
            for (name, instance) in t {
                let section = format!("{kind}.{name}");
                let it = instance.as_table().ok_or_else(|| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "\"{name}\" in [{kind}] must be a table: write [{kind}.{name}] with its keys"
                    ),
                })?;
                for k in it.keys() {
                    if !valid.contains(&k.as_str()) {
                        return Err(unknown(&section, k, valid));
                    }
                }
            }
            continue;
        }
        match key.as_str() {
            "repository" | "retention" | "monitoring" => {
                let valid = match key.as_str() {
                    "repository" => keys_of::<RepositoryConfig>(),
                    "retention" => keys_of::<RetentionConfig>(),
                    _ => keys_of::<MonitoringConfig>(),
                };
                let t = value.as_table().ok_or_else(|| not_table(key))?;
                for k in t.keys() {
                    if !valid.contains(&k.as_str()) {
                        return Err(unknown(key, k, valid));
                    }
                }
            }
            "repositories" => {
                let valid = keys_of::<RepositoryConfig>();
                let t = value.as_table().ok_or_else(|| not_table("repositories"))?;
                for (name, repo) in t {
                    let section = format!("repositories.{name}");
                    let it = repo.as_table().ok_or_else(|| not_table(&section))?;
                    for k in it.keys() {
                        if !valid.contains(&k.as_str()) {
                            return Err(unknown(&section, k, valid));
                        }
                    }
                }
            }
            "copy-to" => {}
            "hooks" => {
                let valid = keys_of::<crate::hooks::Hook>();
                let list = value.as_array().ok_or_else(|| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: "hooks must be written as [[hooks]] tables".to_string(),
                })?;
                for h in list {
                    let t = h.as_table().ok_or_else(|| not_table("[hooks]"))?;
                    for k in t.keys() {
                        if !valid.contains(&k.as_str()) {
                            return Err(unknown("hooks", k, valid));
                        }
                    }
                }
            }
            other => return Err(unknown("top level", other, top)),
        }
    }
    Ok(())
}

/// The valid key closest to `key`, if it is close enough to be a typo or an abbreviation.
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| {
            let abbreviation = key.len() >= 3 && v.starts_with(key);
            (
                if abbreviation {
                    0
                } else {
                    strsim::damerau_levenshtein(key, v)
                },
                *v,
            )
        })
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    /// A config without component sections gets the standard Altcraft layout.
    fn empty_config_gets_standard_layout() {
        let c = parse("[repository]\npath = \"/backup\"\n").unwrap();
        let names: Vec<String> = c
            .component_names()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "files.control",
                "mongodb.account",
                "mongodb.control",
                "ssdb.actions",
                "ssdb.hb",
                "ssdb.notify",
                "ssdb.stat"
            ]
        );
        assert_eq!(c.files["control"].exclude, ["*.pid", "*.log"]);
        assert_eq!(
            c.files["control"].restart_command("control").unwrap(),
            ["/opt/altcraft/akd", "restart"]
        );
    }

    #[test]
    /// Declaring one component gives exactly that component.
    fn declared_components_replace_defaults() {
        let c = parse("[files.control]\npath = \"/srv/a\"\n").unwrap();
        assert_eq!(c.component_names().len(), 1);
    }

    #[test]
    /// A misspelled key is named with its closest valid key.
    fn unknown_key_suggests_closest() {
        let err = parse("[files.control]\npathh = \"/a\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"pathh\"") && err.contains("did you mean \"path\""),
            "{err}"
        );
        let err = parse("[repository]\npassword_file = \"/a\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean \"password-file\""), "{err}");
        let err = parse("[repo]\n").unwrap_err().to_string();
        assert!(err.contains("did you mean \"repository\""), "{err}");
    }

    #[test]
    /// The webhook keys: a typo is named, a non-HTTP URL refused without showing its
    /// token, and `config show` never prints the URL in full.
    fn webhook_keys() {
        let err = parse("[monitoring]\nwebhook-onn = \"always\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean \"webhook-on\""), "{err}");
        let err = parse("[monitoring]\nwebhook = \"ftp://u:secret@h/x?token=t0k\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://") && !err.contains("secret") && !err.contains("t0k"));
        let c = parse(
            "[monitoring]\nwebhook = \"https://h.example/hook/abc?token=t0k\"\nwebhook-on = \"always\"\n",
        )
        .expect("valid");
        assert_eq!(c.monitoring.webhook_on, WebhookOn::Always);
        assert_eq!(c.monitoring.webhook_timeout().as_secs(), 10);
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("t0k") && !shown.contains("abc"), "{shown}");
    }

    #[test]
    /// A wrong type is one line with the line number.
    fn wrong_type_names_line() {
        let err = parse("[repository]\npath = \"/b\"\n[files.control]\npath = 5\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 4") && !msg.contains('\n'), "{msg}");
    }

    #[test]
    /// Overlapping component paths are rejected.
    fn overlapping_paths_rejected() {
        let err = parse("[files.a]\npath = \"/srv\"\n[files.b]\npath = \"/srv/x\"\n").unwrap_err();
        assert!(err.to_string().contains("must not overlap"));
    }

    #[test]
    /// Numbers that become deadlines are bounded when the config is read: a hook timeout
    /// of i64::MAX seconds, an S3 timeout of 0, a keep-within that overflows.
    fn huge_durations_are_refused() {
        let err = parse(
            "[[hooks]]\non = \"before\"\ncommand = [\"true\"]\ntimeout = 9223372036854775807\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("timeout = 9223372036854775807 is out of range"),
            "{err}"
        );
        let err = parse("[repository]\nurl = \"s3://b/p\"\ntimeout = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[repository] timeout = 0"), "{err}");
        assert!(parse_duration("99999999999999999y").is_err());
        assert!(parse_duration("101y").is_err());
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 2 * 86400);
    }

    #[test]
    /// A repository inside a component is refused even when spelled with `..`; a sibling
    /// whose name merely starts the same (`/srv/a` and `/srv/ab`) is not inside.
    fn repository_inside_component_refused() {
        let err =
            parse("[repository]\npath = \"/srv/x/../a/repo\"\n[files.c]\npath = \"/srv/a\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("/srv/a/repo lies inside the component files.c (/srv/a)"),
            "{err}"
        );
        assert!(parse("[repository]\npath = \"/srv/ab\"\n[files.c]\npath = \"/srv/a\"\n").is_ok());
        assert_eq!(normalize(Path::new("/a/./b/../../../c")), Path::new("/c"));
    }

    #[test]
    /// Passwords in URIs never reach `config show`.
    fn uri_password_redacted() {
        assert_eq!(
            redact_uri("mongodb://u:secret@h:1/db"),
            "mongodb://u:***@h:1/db"
        );
        let c = parse("[mongodb.x]\nuri = \"mongodb://u:secret@h\"\n").unwrap();
        assert!(!c.to_redacted_toml().contains("secret"));
        assert!(
            !serde_json::to_string(&c.redacted())
                .unwrap()
                .contains("secret")
        );
    }
}
