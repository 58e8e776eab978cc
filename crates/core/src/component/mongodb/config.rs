//! `[mongodb.NAME]`: the config of a MongoDB instance, its defaults, validation and
//! redaction.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    component::kind::Section,
    redact::{redact_uri, uri_password},
};

/// How a MongoDB instance is backed up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MongodbMode {
    /// A logical dump through the driver (mongodump's layout), loaded back document by
    /// document: any server version, namespaces selectable, indexes rebuilt on load.
    #[default]
    Dump,
    /// A physical copy of the dbpath read from a filesystem snapshot: restores in the time
    /// it takes to write the files, into the same MongoDB version only.
    Snapshot,
}

/// `[mongodb.<name>]`: a MongoDB instance, dumped through the official driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MongodbConfig {
    /// Connection string (TLS and auth options pass through to the driver); a password in
    /// it is redacted everywhere.
    pub uri: String,
    /// systemd unit restarted after an in-place restore (default `mongod-<name>`).
    pub service: Option<String>,
    /// A file whose first line is the password of the user named in `uri` (mode 0600),
    /// so the URI in the config can stay free of secrets.
    pub password_file: Option<PathBuf>,
    /// Namespace globs to back up (`db.*`, `db.coll`); empty means every database except
    /// `admin`, `local` and `config`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Namespace globs to leave out (`*.system.*`), applied after `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Collections dumped (and restored) at once.
    #[serde(default = "default_parallel_collections")]
    pub parallel_collections: usize,
    /// Seconds to wait for the server to answer before giving up (server selection and
    /// connection); keeps a dead instance from hanging a nightly run.
    #[serde(default = "default_mongodb_timeout")]
    pub timeout: u64,
    /// Documents per insert on restore (at most 8 MiB a batch either way), like
    /// `mongorestore --batchSize`; smaller batches go easier on a busy server.
    #[serde(default = "default_insert_batch")]
    pub insert_batch: usize,
    /// `dump` (default) or `snapshot`.
    #[serde(default)]
    pub mode: MongodbMode,
    /// `mode = "snapshot"`: `btrfs` or `lvm`.
    pub snapshot: Option<crate::snapshot::Backend>,
    /// `snapshot = "lvm"`, classic volumes: room for changes (`20G`, default `10%` of the LV).
    pub snapshot_size: Option<String>,
    /// `snapshot = "lvm"`: the logical volume (`vg0/mongo`) when the mount table does not say.
    pub snapshot_volume: Option<String>,
    /// `mode = "snapshot"`: the server's data directory (default: what the server reports,
    /// `getCmdLineOpts`'s `storage.dbPath`).
    pub dbpath: Option<PathBuf>,
    /// `mode = "snapshot"`: hold `fsyncLock` around the snapshot (writes wait for it, well
    /// under a second). Not needed when the journal is on the data's volume, which
    /// snapshot mode requires; for a belt-and-braces copy with everything flushed.
    #[serde(default)]
    pub lock: bool,
}

const fn default_insert_batch() -> usize {
    1000
}

const fn default_parallel_collections() -> usize {
    4
}

const fn default_mongodb_timeout() -> u64 {
    10
}

impl MongodbConfig {
    /// How many hosts the uri names (`mongodb://a:1,b:2/...` names two).
    fn hosts(&self) -> usize {
        let rest = self.uri.trim_start_matches("mongodb://");
        let hosts = rest.split(['/', '?']).next().unwrap_or_default();
        let hosts = hosts.rsplit('@').next().unwrap_or_default();
        hosts.split(',').filter(|h| !h.is_empty()).count()
    }

    /// The snapshot settings when the instance is backed up from a snapshot.
    #[must_use]
    pub fn snapshot_settings(&self) -> Option<crate::snapshot::Settings> {
        crate::snapshot::Settings::of(
            self.mode == MongodbMode::Snapshot,
            self.snapshot,
            &self.snapshot_size,
            &self.snapshot_volume,
        )
    }

    /// The systemd unit after defaults.
    #[must_use]
    pub fn unit(&self, name: &str) -> String {
        self.service
            .clone()
            .unwrap_or_else(|| format!("mongod-{name}"))
    }
}

impl MongodbConfig {
    /// The two instances of a standard install: `control` on 127.0.0.1:27017 and `account`
    /// on 127.0.0.1:27018.
    #[must_use]
    pub fn standard() -> Vec<(String, Self)> {
        [("control", 27017), ("account", 27018)]
            .into_iter()
            .map(|(name, port)| {
                (
                    name.to_string(),
                    Self {
                        uri: format!("mongodb://127.0.0.1:{port}"),
                        service: None,
                        password_file: None,
                        include: Vec::new(),
                        exclude: Vec::new(),
                        parallel_collections: default_parallel_collections(),
                        timeout: default_mongodb_timeout(),
                        insert_batch: default_insert_batch(),
                        mode: MongodbMode::Dump,
                        snapshot: None,
                        snapshot_size: None,
                        snapshot_volume: None,
                        dbpath: None,
                        lock: false,
                    },
                )
            })
            .collect()
    }
}

impl Section for MongodbConfig {
    /// A dump is not a live directory: it sits under `/akbackup/mongodb/NAME` in a set.
    fn repo_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/akbackup/mongodb/{name}"))
    }

    fn live_dir(&self) -> Option<&Path> {
        None
    }

    fn path_keys(&self) -> Vec<(&'static str, &Path)> {
        let password = self.password_file.as_deref().map(|p| ("password-file", p));
        let dbpath = self.dbpath.as_deref().map(|p| ("dbpath", p));
        password.into_iter().chain(dbpath).collect()
    }

    fn validate(&self) -> Result<(), String> {
        let snapshot_mode = self.mode == MongodbMode::Snapshot;
        crate::snapshot::Settings::check_keys(
            snapshot_mode,
            self.snapshot,
            &self.snapshot_size,
            &self.snapshot_volume,
        )?;
        if snapshot_mode && self.hosts() != 1 {
            return Err(format!(
                "uri \"{}\": mode = \"snapshot\" copies one server's files: name that one server (mongodb://127.0.0.1:27017)",
                redact_uri(&self.uri)
            ));
        }
        if !snapshot_mode && (self.dbpath.is_some() || self.lock) {
            return Err(
                "dbpath and lock apply to mode = \"snapshot\" only: set it, or remove them"
                    .to_string(),
            );
        }
        if self.uri.starts_with("mongodb+srv://") {
            return Err("uri: mongodb+srv:// (DNS seed lists) is not supported; \
                 list the hosts: mongodb://host1:27017,host2:27017/?replicaSet=NAME"
                .to_string());
        }
        if !self.uri.starts_with("mongodb://") {
            return Err(format!(
                "uri \"{}\" must start with mongodb://",
                redact_uri(&self.uri)
            ));
        }
        for glob in self.include.iter().chain(&self.exclude) {
            globset::Glob::new(glob)
                .map_err(|err| format!("namespace glob \"{glob}\" is not valid: {err}"))?;
        }
        if self.parallel_collections == 0 || self.timeout == 0 || self.insert_batch == 0 {
            return Err(
                "parallel-collections, timeout and insert-batch must be at least 1".to_string(),
            );
        }
        crate::units::check_seconds("timeout", self.timeout)
    }

    fn inline_secrets(&self) -> Vec<(&'static str, &str)> {
        uri_password(&self.uri)
            .map(|pw| ("a password in the uri of", pw))
            .into_iter()
            .collect()
    }

    fn redact(&mut self) {
        self.uri = redact_uri(&self.uri);
    }
}
