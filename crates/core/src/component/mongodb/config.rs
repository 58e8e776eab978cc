//! `[mongodb.NAME]`: the config of a MongoDB instance, its defaults, validation and
//! redaction.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    component::kind::Section,
    redact::{redact_uri, uri_password},
};

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
        self.password_file
            .as_deref()
            .map(|p| ("password-file", p))
            .into_iter()
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
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
