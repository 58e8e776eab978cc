//! What goes wrong in the MongoDB component: connecting, dumping, loading, and the files in
//! between. Each variant keeps its typed cause (the driver's error, an `io::Error` with its
//! path, a dump [`FormatError`], a [`PasswordError`]) with the server, database, namespace or
//! file it happened to.
//!
//! Every variant prints its cause and returns nothing from `source()` (the rule in
//! [`crate::error`]): these lines go into a set's manifest, restore reports and `config
//! check` findings, where no chain walker reads, so each must stand alone. A driver error is
//! described for an operator ([`ServerError`]) instead of printed as the driver words it: the
//! driver's text can carry a whole topology dump, and must never carry a password.

use std::path::PathBuf;

use mongodb::error::ErrorKind;

use super::{client::first_line, format::FormatError};
use crate::{repository::password::PasswordError, service::ServiceError, tree::TreeError};

/// Errors of the MongoDB component.
#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    /// The URI does not parse.
    #[error("invalid uri {shown}: {}", first_line(&.error.to_string()))]
    InvalidUri {
        /// The URI with its password redacted.
        shown: String,
        /// The driver's refusal (its first line is printed).
        error: mongodb::error::Error,
    },
    /// The configured `password-file` cannot be used.
    #[error("password-file: {error}")]
    PasswordFile {
        /// Cause, naming the file and the fix (printed in the message).
        error: PasswordError,
    },
    /// A `password-file` is set but the URI names no user to give the password to.
    #[error("password-file is set but {shown} names no user: write mongodb://USER@host:port")]
    NoUser {
        /// The URI with its password redacted.
        shown: String,
    },
    /// The driver refused to build a client from the options.
    #[error("{shown}: {error}")]
    Client {
        /// The URI with its password redacted.
        shown: String,
        /// Cause (printed in the message).
        error: mongodb::error::Error,
    },
    /// The server cannot be reached, or refused or failed an operation.
    #[error("{0}")]
    Server(ServerError),
    /// One step of a dump or a load failed at the server.
    #[error("{step}: {error}")]
    Step {
        /// `listIndexes`, `find`, `insert`, `oplog replay`, ...
        step: &'static str,
        /// Cause (printed in the message).
        error: ServerError,
    },
    /// A reply of the server does not decode.
    #[error("unreadable {what}: {error}")]
    Unreadable {
        /// `listCollections entry`, `index spec`.
        what: &'static str,
        /// Cause (printed in the message).
        error: mongodb::error::Error,
    },
    /// Something failed in one database (listing its collections).
    #[error("{db}: {error}")]
    InDatabase {
        /// The database.
        db: String,
        /// Cause (printed in the message).
        error: Box<MongoError>,
    },
    /// Dumping one namespace failed.
    #[error("{ns}: {error}")]
    InNamespace {
        /// `db.collection`.
        ns: String,
        /// Cause (printed in the message).
        error: Box<MongoError>,
    },
    /// Loading one namespace failed; the ones loaded before it stay loaded.
    #[error("{ns} -> {target}: {error}")]
    Loading {
        /// `db.collection` in the dump.
        ns: String,
        /// `db.collection` written.
        target: String,
        /// Cause (printed in the message).
        error: Box<MongoError>,
    },
    /// A file or directory cannot be created, read or written.
    #[error("cannot {doing} {}: {error}", path.display())]
    Io {
        /// `create`, `read`, `write`, `create the dump directory`, ...
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// The dump directory does not read as mongodump writes it.
    #[error("{error}")]
    Format {
        /// Cause, naming the file (printed in the message).
        error: FormatError,
    },
    /// A `.bson` file (collection or oplog) does not read as mongodump writes it.
    #[error("{}: {error}", path.display())]
    BsonFile {
        /// The file.
        path: PathBuf,
        /// Cause (printed in the message).
        error: FormatError,
    },
    /// A document of a `.bson` file is not BSON.
    #[error("{}: bad document: {error}", path.display())]
    BadDocument {
        /// The file.
        path: PathBuf,
        /// Cause (printed in the message).
        error: mongodb::bson::raw::Error,
    },
    /// An entry of `oplog.bson` is not BSON.
    #[error("{}: bad oplog entry: {error}", path.display())]
    BadOplogEntry {
        /// The file.
        path: PathBuf,
        /// Cause (printed in the message).
        error: mongodb::bson::de::Error,
    },
    /// A `.metadata.json` is not JSON.
    #[error("{}: not JSON: {error}", path.display())]
    MetadataJson {
        /// The file.
        path: PathBuf,
        /// Cause (printed in the message).
        error: serde_json::Error,
    },
    /// A `.metadata.json` is JSON but not an object.
    #[error("{}: not a JSON object", path.display())]
    MetadataNotObject {
        /// The file.
        path: PathBuf,
    },
    /// A `.metadata.json` is not Extended JSON.
    #[error("{}: bad Extended JSON: {error}", path.display())]
    MetadataExtJson {
        /// The file.
        path: PathBuf,
        /// Cause (printed in the message).
        error: mongodb::bson::extjson::de::Error,
    },
    /// A rename turns a namespace of the dump into something that is not `db.collection`.
    #[error("{from} would be renamed to \"{target}\", which is not db.collection")]
    RenamedOutOfShape {
        /// `db.collection` in the dump.
        from: String,
        /// What the rename made of it.
        target: String,
    },
    /// A namespace to load into is not `db.collection`.
    #[error("\"{target}\" is not db.collection")]
    NotNamespace {
        /// The namespace.
        target: String,
    },
    /// `--ns-from` and `--ns-to` have different numbers of `*`.
    #[error("--ns-from has {from} wildcard(s) and --ns-to {to}: use the same number of *")]
    RenameWildcards {
        /// Wildcards in `--ns-from`.
        from: usize,
        /// Wildcards in `--ns-to`.
        to: usize,
    },
    /// Only one of `--ns-from` and `--ns-to` was given.
    #[error(
        "--ns-from and --ns-to go together: give both, e.g. --ns-from 'control.*' --ns-to 'control_copy.*'"
    )]
    RenameHalf,
    /// A replica set's oplog holds nothing to start a point-in-time dump from.
    #[error("local.oplog.rs is empty: cannot take a point-in-time dump")]
    OplogEmpty,
    /// The newest oplog entry has no timestamp.
    #[error("local.oplog.rs entry without ts")]
    OplogWithoutTs,
    /// The oplog entry the dump started from was overwritten before the dump ended.
    #[error(
        "the oplog rolled over while the dump ran (its start is gone): make the oplog larger or back up at a quieter hour"
    )]
    OplogRolledOver,
    /// A task dumping or loading collections panicked.
    #[error("{what} task failed: {error}")]
    Task {
        /// `dump`, `load`.
        what: &'static str,
        /// Cause (printed in the message).
        error: tokio::task::JoinError,
    },
    /// The limit on parallel collections was closed (a bug: it never is).
    #[error("{error}")]
    Limit {
        /// Cause (printed in the message).
        error: tokio::sync::AcquireError,
    },
    /// Snapshot mode failed.
    #[error("{error}")]
    Physical {
        /// Cause (printed in the message).
        error: Box<PhysicalError>,
    },
    /// The async runtime the driver needs does not start.
    #[error("cannot start the async runtime: {error}")]
    Runtime {
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// The dump does not come out of the repository.
    #[error("{error}; the server was not touched")]
    Unpack {
        /// Cause (printed in the message).
        error: Box<TreeError>,
    },
    /// The data is loaded but the service's restart failed.
    #[error("the data is loaded, but the restart failed: {error}")]
    Restart {
        /// Cause (printed in the message).
        error: ServiceError,
    },
}

/// Errors of snapshot mode (physical copies of the dbpath); each prints its cause.
#[derive(Debug, thiserror::Error)]
pub enum PhysicalError {
    /// The server does not say where its files are, and the config does not either.
    #[error(
        "{shown} does not report its dbPath (getCmdLineOpts): set dbpath in the section to the server's data directory"
    )]
    NoDbPath {
        /// The server, password redacted.
        shown: String,
    },
    /// The config names another directory than the server uses.
    #[error(
        "dbpath is {configured}, but {shown} reports {reported}: fix dbpath (a snapshot of another directory is not a backup of this server)"
    )]
    DbPathDiffers {
        /// From the config.
        configured: PathBuf,
        /// From `getCmdLineOpts`.
        reported: PathBuf,
        /// The server, password redacted.
        shown: String,
    },
    /// The engine keeps no files that a snapshot can copy this way.
    #[error(
        "{shown} runs the {engine} storage engine: snapshot mode copies WiredTiger's data files; use mode = \"dump\""
    )]
    NotWiredTiger {
        /// The server, password redacted.
        shown: String,
        /// What `serverStatus` reports.
        engine: String,
    },
    /// The snapshot could not be taken.
    #[error("{error}")]
    Snapshot {
        /// Cause (printed in the message).
        error: crate::snapshot::SnapshotError,
    },
    /// `fsyncLock` failed: nothing was snapshotted.
    #[error("fsyncLock: {error}")]
    Lock {
        /// Cause (printed in the message).
        error: ServerError,
    },
    /// `fsyncUnlock` failed after the snapshot: the server may still hold writes.
    #[error(
        "fsyncUnlock failed: {error}; the server may still hold writes back: run db.fsyncUnlock() in mongosh now"
    )]
    Unlock {
        /// Cause (printed in the message).
        error: ServerError,
    },
    /// The server that would open the files is of another version.
    #[error(
        "the set holds the files of MongoDB {set}, and {found}: a physical copy opens only in the same major.minor version; run MongoDB {set} on it, or restore a set taken with mode = \"dump\""
    )]
    VersionMismatch {
        /// The version recorded in the set.
        set: String,
        /// What was found here, in words (`this server runs 6.0.5`).
        found: String,
    },
    /// No version could be found here to compare with.
    #[error(
        "cannot tell which MongoDB version would open the files of MongoDB {set}: {why}; start the server (or put mongod on PATH) and retry, or restore with --target DIR and start a mongod {set} on it by hand"
    )]
    VersionUnknown {
        /// The version recorded in the set.
        set: String,
        /// What was tried and how it failed.
        why: String,
    },
    /// The set's kind of copy does not fit the config's mode in `restore --all`.
    #[error(
        "the set holds {held} of this instance, but its section has mode = \"{mode}\": restore --all stops and starts services by the config's mode; restore this one alone (restore SET --only NAME) or with --target DIR"
    )]
    ModeMismatch {
        /// `a physical copy` or `a dump`.
        held: &'static str,
        /// The config's mode.
        mode: &'static str,
    },
    /// A restore option that only a dump can follow.
    #[error(
        "{option} applies to sets taken with mode = \"dump\"; this set is a physical copy of the dbpath: restore it whole, or with --target DIR"
    )]
    NotForPhysical {
        /// The option.
        option: &'static str,
    },
    /// A restored copy is not a WiredTiger data directory.
    #[error("the restored dbpath has no {missing}: it is not a WiredTiger data directory")]
    NotDbpath {
        /// The file that should be there.
        missing: &'static str,
    },
}

impl From<PhysicalError> for MongoError {
    fn from(error: PhysicalError) -> Self {
        Self::Physical {
            error: Box::new(error),
        }
    }
}

impl MongoError {
    /// [`MongoError::Io`]: cannot `doing` (`create`, `read`, `write`) `path`.
    pub(super) fn io(doing: &'static str, path: &std::path::Path, error: std::io::Error) -> Self {
        Self::Io {
            doing,
            path: path.to_path_buf(),
            error,
        }
    }
}

/// A driver error at one server, described in one line: what happened and what to do, with
/// no password in it. The driver's error is kept ([`ServerError::driver`]) for callers that
/// look at it; it is described rather than chained, so a topology dump never reaches a
/// message.
#[derive(Debug)]
pub struct ServerError {
    /// The URI with its password redacted.
    server: String,
    /// The description, with the password scrubbed.
    line: String,
    /// The driver's error.
    error: Box<mongodb::error::Error>,
}

impl ServerError {
    /// Describes `error` at `server` (a redacted URI), scrubbing `secret` from the text.
    pub(super) fn new(server: &str, secret: Option<&str>, error: mongodb::error::Error) -> Self {
        let line = match error.kind.as_ref() {
            ErrorKind::ServerSelection { .. } => format!(
                "cannot reach {server}: no answer within the timeout; is the server running and \
                 the uri right?"
            ),
            ErrorKind::Authentication { message, .. } => format!(
                "authentication failed at {server}: {}; check the user and password (uri or \
                 password-file)",
                first_line(message)
            ),
            ErrorKind::Io(io) => format!("connection to {server} lost: {io}"),
            ErrorKind::ConnectionPoolCleared { .. } => {
                format!("connection to {server} lost (server went away)")
            }
            ErrorKind::Command(c) => format!(
                "{server} answered {} ({}): {}",
                c.code_name,
                c.code,
                first_line(&c.message)
            ),
            _ => format!("{server}: {}", first_line(&error.to_string())),
        };
        let line = match secret {
            Some(s) if !s.is_empty() => line.replace(s, "***"),
            _ => line,
        };
        Self {
            server: server.to_string(),
            line,
            error: Box::new(error),
        }
    }

    /// The server, its URI with the password redacted.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The driver's error, as the driver reported it (it may name the password's user, and
    /// its text may be long: print [`ServerError`] instead).
    #[must_use]
    pub fn driver(&self) -> &mongodb::error::Error {
        &self.error
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// Described, not chained: no `source()`.
impl std::error::Error for ServerError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password the server echoes never reaches the line, and the line names the server.
    #[test]
    fn the_description_scrubs_the_secret() {
        let error = mongodb::error::Error::custom("boom");
        let e = ServerError::new("mongodb://u:***@h:1", Some("hunter2"), error);
        assert!(e.to_string().starts_with("mongodb://u:***@h:1: "), "{e}");
        let io = mongodb::error::Error::from(std::io::Error::other("reset by hunter2"));
        let e = ServerError::new("h:1", Some("hunter2"), io);
        assert_eq!(e.to_string(), "connection to h:1 lost: reset by ***");
        assert_eq!(
            MongoError::Step {
                step: "insert",
                error: e
            }
            .to_string(),
            "insert: connection to h:1 lost: reset by ***"
        );
    }
}
