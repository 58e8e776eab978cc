//! Where a repository lives: a local directory or an S3-compatible bucket, and how to reach it.
//!
//! Owns [`Location`] and [`S3Options`], which the storage adapter (`storage.rs`) turns into an
//! OpenDAL operator for both the engine's backend and `repository::store::Store`. It does not open anything,
//! nor read the config: `repository::location` builds these from the typed config.

use std::path::PathBuf;

/// Where a repository lives, in the engine's terms.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Options),
    /// A directory on another server, over SFTP.
    Sftp(SftpOptions),
}

impl Location {
    /// For messages: the path, or `s3://bucket/prefix`.
    #[must_use]
    pub fn display(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::S3(s) => format!("s3://{}/{}", s.bucket, s.root.trim_start_matches('/')),
            Self::Sftp(s) => format!("sftp://{}@{}:{}{}", s.user, s.host, s.port, s.root),
        }
    }
}

/// An S3 location and how to talk to it, built from our typed config.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Bucket.
    pub bucket: String,
    /// Prefix inside the bucket, with a leading `/`.
    pub root: String,
    /// Endpoint URL; AWS when `None`.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Virtual-host style instead of path style.
    pub virtual_host_style: bool,
    /// Explicit credentials; `None` leaves them to the environment (`AWS_*`, `~/.aws`).
    pub credentials: Option<(String, String, Option<String>)>,
    /// Parallel requests.
    pub connections: u32,
    /// Retries per request.
    pub retry: u32,
    /// Seconds one attempt of a request may take before it fails (and is retried).
    pub timeout_secs: u32,
    /// Seconds connecting to the endpoint may take.
    pub connect_timeout_secs: u32,
    /// Bandwidth limit ("10MiB").
    pub bandwidth: Option<String>,
}

/// An SFTP location and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct SftpOptions {
    /// The user to log in as.
    pub user: String,
    /// The server.
    pub host: String,
    /// Its SSH port.
    pub port: u16,
    /// The repository's absolute path on the server.
    pub root: String,
    /// The private key (mode 0600); `None`: the SSH agent or ssh's defaults.
    pub identity_file: Option<PathBuf>,
    /// The known_hosts file the server's key must be in; `None`: `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Parallel requests (SSH sessions).
    pub connections: u32,
    /// Retries per request.
    pub retry: u32,
    /// Seconds one attempt of a request may take.
    pub timeout_secs: u32,
    /// Seconds connecting may take.
    pub connect_timeout_secs: u32,
    /// Bandwidth limit ("10MiB").
    pub bandwidth: Option<String>,
    /// The repository's local work directory, where the ssh client config akbackup writes
    /// for it lives.
    pub work_dir: PathBuf,
}
