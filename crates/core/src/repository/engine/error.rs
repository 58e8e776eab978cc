//! The engine's errors, and the reading of the library's errors into them.
//!
//! Owns [`EngineError`] and the classification of what `rustic_core` and OpenDAL report: a
//! full disk, a file that vanished, a storage failure named by its cause. It does not attach
//! the repository's location where the engine cannot know it (`Repository::located` does),
//! nor decide exit codes (`RepoError` does).

use rustic_core::RusticError;

use super::Location;

/// Errors of the engine, already sorted into what the operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The password does not open any key of the repository.
    #[error(
        "wrong password for repository {0} (or its key file is damaged): check password-file / AKBACKUP_PASSWORD"
    )]
    WrongPassword(String),
    /// No repository at the location.
    #[error(
        "no repository at {0}: run `akbackup init` first, or fix [repository] path / url (and check that the bucket exists)"
    )]
    NotFound(String),
    /// A repository already exists at the location.
    #[error("a repository already exists at {0}: refusing to overwrite it")]
    AlreadyExists(String),
    /// A blob's content does not match its id, or could not be decrypted.
    #[error("blob {id} is damaged: {reason}")]
    DamagedBlob {
        /// Hex id of the blob.
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// A tree of the set holds an entry no backup writes: a name that is empty, `.`, `..`, or
    /// holds `/` or NUL, or a name twice in one directory. Restic and akbackup never store
    /// one; a crafted repository does, to make a restore write outside its destination.
    #[error(
        "set {set} is damaged: its entry {entry} {reason}, which no backup writes (the repository was tampered with or written by another program); nothing of the set is written to disk"
    )]
    DamagedTree {
        /// The set (snapshot id, 8 digits).
        set: String,
        /// The entry: its directory in the snapshot and its name, quoted.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A snapshot or path that does not exist.
    #[error("{0}")]
    NotInSnapshot(String),
    /// The storage ran out of space (`ENOSPC`) during `what`.
    #[error("{what}: no space left on {}", holding(path))]
    NoSpace {
        /// The operation.
        what: &'static str,
        /// The repository (filled in by the layer that knows it; empty here).
        path: String,
    },
    /// Anything else the library reported; `what` says which operation.
    #[error("{what}: {message}")]
    Library {
        /// The operation.
        what: &'static str,
        /// The library's message, first line only.
        message: String,
    },
}

/// Where a full disk is, for [`EngineError::NoSpace`]: the path once a layer that knows it
/// filled it in (see `Repository::located`), else the repository in general.
fn holding(path: &str) -> String {
    if path.is_empty() {
        "the filesystem holding the repository".to_string()
    } else {
        format!("the filesystem holding {path}")
    }
}

impl EngineError {
    /// A library error during an operation on `location`: the storage cause when there is
    /// one, else the library's first line.
    pub(super) fn storage(what: &'static str, location: &Location, err: &RusticError) -> Self {
        match storage_cause(err, location) {
            Some(message) => Self::Library { what, message },
            None => Self::library(what, err),
        }
    }

    pub(super) fn library(what: &'static str, err: &RusticError) -> Self {
        if is_no_space(err) {
            return Self::NoSpace {
                what,
                path: String::new(),
            };
        }
        let mut message = first_line(err);
        if message.is_empty() {
            message = "unknown error".to_string();
        }
        if message.contains("related to a key") {
            message = format!(
                "a key file of the repository is damaged or unreadable ({message}); a key made with another password may still open it (`akbackup key list`)"
            );
        } else if message.contains("related to cryptographic operations") {
            message = format!(
                "a repository file failed authentication: it is damaged ({message}){}",
                if what == "loading index" {
                    "; the packs are intact if `verify` can still read them: rebuild the index with the standard client, `restic -r REPO repair index` (restic 0.14: `rebuild-index`)"
                } else {
                    ""
                }
            );
        }
        Self::Library { what, message }
    }
}

/// True when the error chain holds an `ENOSPC` (the library reports it with a generic first
/// line, which would hide the one fact the operator needs).
fn is_no_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(nix::libc::ENOSPC))
        {
            return true;
        }
        if e.to_string().contains("No space left on device") {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Whether a file vanished under us (listed, then gone when read).
pub(super) fn is_not_found(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            || e.downcast_ref::<opendal::Error>()
                .is_some_and(|o| o.kind() == opendal::ErrorKind::NotFound)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Result type of the engine.
pub type EngineResult<T> = Result<T, EngineError>;

/// What a storage error means, from the OpenDAL error in the chain (the engine's own first
/// line is the same generic text for every storage failure).
fn storage_cause(err: &RusticError, location: &Location) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut found = None;
    let mut root = String::new();
    while let Some(e) = cur {
        if found.is_none()
            && let Some(o) = e.downcast_ref::<opendal::Error>()
        {
            found = Some((o.kind(), o.message().to_string()));
        }
        root = e.to_string();
        cur = e.source();
    }
    let (kind, message) = found?;
    let root = root.lines().next().unwrap_or("").trim().to_string();
    let at = location.display();
    if let Location::Sftp(s) = location
        && let Some(line) = super::storage::sftp_cause(s, kind, &message)
    {
        return Some(line);
    }
    Some(match kind {
        opendal::ErrorKind::PermissionDenied => format!(
            "access denied by the storage at {at}: check access-key-id / secret-access-key \
             (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the bucket policy"
        ),
        opendal::ErrorKind::NotFound => {
            format!("not found at {at}: does the bucket exist? ({root})")
        }
        opendal::ErrorKind::ConfigInvalid if root.contains("NoSuchBucket") => {
            format!("the bucket of {at} does not exist: create it first")
        }
        opendal::ErrorKind::ConfigInvalid => {
            format!("invalid storage settings for {at}: {message}")
        }
        _ if message.contains("signing") => format!(
            "no S3 credentials for {at}: set access-key-id / secret-access-key, a \
             credentials-file, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ({root})"
        ),
        _ if message.contains("timeout reached") => match location {
            Location::S3(s3) => format!(
                "no answer from the storage endpoint {} of {at} within the timeout of {} s \
                 ({} attempts): check the endpoint and the server, or raise timeout in the \
                 repository's section for a slow link",
                s3.endpoint.as_deref().unwrap_or("(AWS)"),
                s3.timeout_secs,
                u64::from(s3.retry) + 1,
            ),
            Location::Sftp(s) => format!(
                "no answer from {at} within the timeout of {} s ({} attempts): check the server, or raise timeout in the repository's section for a slow link",
                s.timeout_secs,
                u64::from(s.retry) + 1,
            ),
            Location::Local(_) => format!("no answer from {at} within the timeout"),
        },
        _ if message.contains("send http request") => {
            format!("cannot reach the storage endpoint of {at}: {root}; check endpoint and network")
        }
        _ => format!("storage error at {at}: {message} ({root})"),
    })
}

/// The error of an operation on a repository whose state an earlier panic left unusable.
pub(super) fn poisoned() -> EngineError {
    EngineError::Library {
        what: "repository state",
        message: "an earlier operation panicked".to_string(),
    }
}

/// The library's error on one line: its guidance with the context filled in, its kind, and
/// its cause. Its `Display` form spreads over a page and opens with the kind alone ("an error
/// related to `the backend`"), which is all an operator saw when only its first line was
/// kept; the cause (a timeout, a refused request, a missing file) is what names the fix.
pub(super) fn first_line(err: &RusticError) -> String {
    let log = err.display_log();
    let log = log.strip_prefix("Error: ").unwrap_or(&log);
    log.split_whitespace().collect::<Vec<_>>().join(" ")
}
