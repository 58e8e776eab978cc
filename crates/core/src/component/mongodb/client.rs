//! Connecting to an instance, turning driver errors into [`MongoError`]s an operator can act
//! on, and the namespace rules shared by dump and restore (include/exclude globs, renames).

use std::time::Duration;

use mongodb::{Client, bson::doc, error::Error, options::ClientOptions};

use super::{
    MongodbConfig,
    error::{MongoError, ServerError},
};
use crate::redact::redact_uri;

/// Databases never dumped: server-internal state, not the platform's.
pub const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// A connected client and what is needed to describe its errors. Cheap to clone (the
/// driver's client is a handle to one pool).
#[derive(Clone)]
pub struct Connection {
    /// The driver's client.
    pub client: Client,
    /// The URI with its password redacted, for messages.
    pub shown: String,
    /// A password to scrub from any message (from the URI or the password file).
    secret: Option<String>,
}

impl Connection {
    /// Opens a client and checks the server answers (`ping`), within `timeout`.
    ///
    /// # Errors
    /// [`MongoError`] naming what failed: the URI, the password file, reachability,
    /// authentication.
    pub async fn open(
        uri: &str,
        config: &MongodbConfig,
        timeout: Duration,
    ) -> Result<Self, MongoError> {
        let shown = redact_uri(uri);
        let mut options = match ClientOptions::parse(uri).await {
            Ok(o) => o,
            Err(error) => return Err(MongoError::InvalidUri { shown, error }),
        };
        let mut secret = options.credential.as_ref().and_then(|c| c.password.clone());
        if let Some(path) = &config.password_file {
            let password = crate::repository::password::read_secret_file(path)
                .map_err(|error| MongoError::PasswordFile { error })?;
            let credential = options.credential.get_or_insert_with(Default::default);
            if credential.username.is_none() {
                return Err(MongoError::NoUser { shown });
            }
            credential.password = Some(password.clone());
            secret = Some(password);
        }
        options.server_selection_timeout.get_or_insert(timeout);
        options.connect_timeout.get_or_insert(timeout);
        options
            .app_name
            .get_or_insert_with(|| "akbackup".to_string());
        if config.mode == super::MongodbMode::Snapshot {
            // The files snapshotted are this server's: the lock, the dbpath, the version and
            // the health check after a restore must reach it, never the primary a replica
            // set's discovery would choose.
            options.direct_connection = Some(true);
        }
        let client = match Client::with_options(options) {
            Ok(c) => c,
            Err(error) => return Err(MongoError::Client { shown, error }),
        };
        let conn = Self {
            client,
            shown,
            secret,
        };
        conn.client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| conn.error(e))?;
        Ok(conn)
    }

    /// The driver's error `e` at this server: one line saying what happened and what to do,
    /// with no secret in it.
    #[must_use]
    pub fn error(&self, e: Error) -> MongoError {
        MongoError::Server(self.server_error(e))
    }

    /// The same for one `step` of a dump or load (`listIndexes`, `insert`, ...), which the
    /// line starts with.
    #[must_use]
    pub fn failed(&self, step: &'static str, e: Error) -> MongoError {
        MongoError::Step {
            step,
            error: self.server_error(e),
        }
    }

    /// The driver's error `e` at this server, described.
    pub(super) fn server_error_of(&self, e: Error) -> ServerError {
        self.server_error(e)
    }

    fn server_error(&self, e: Error) -> ServerError {
        ServerError::new(&self.shown, self.secret.as_deref(), e)
    }
}

/// The first line of a message, trimmed: driver errors can carry whole topology dumps.
#[must_use]
pub fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.len() > 300 {
        let mut end = 300;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &line[..end])
    } else {
        line.to_string()
    }
}

/// Which namespaces (`db.collection`) a dump or restore takes.
#[derive(Debug, Clone)]
pub struct NsFilter {
    include: globset::GlobSet,
    exclude: globset::GlobSet,
    any_include: bool,
}

impl NsFilter {
    /// From include and exclude globs; an empty include list takes everything.
    #[must_use]
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        Self {
            include: crate::fsutil::glob_set(include),
            exclude: crate::fsutil::glob_set(exclude),
            any_include: !include.is_empty(),
        }
    }

    /// Whether the database could hold wanted namespaces (dump skips the system databases
    /// unless an include names them explicitly).
    #[must_use]
    pub fn wants_database(&self, db: &str) -> bool {
        if SYSTEM_DATABASES.contains(&db) {
            return self.any_include && self.include.is_match(format!("{db}.x"));
        }
        true
    }

    /// Whether `ns` is taken.
    #[must_use]
    pub fn wants(&self, ns: &str) -> bool {
        (!self.any_include || self.include.is_match(ns)) && !self.exclude.is_match(ns)
    }
}

/// A rename of namespaces as `mongorestore --nsFrom/--nsTo` does it: each `*` in `from`
/// captures a run of characters, and the captures fill the `*`s of `to` in order.
#[derive(Debug, Clone)]
pub struct NsRename {
    from: Vec<String>,
    to: Vec<String>,
}

impl NsRename {
    /// Checks that both patterns have the same number of `*`.
    ///
    /// # Errors
    /// [`MongoError::RenameWildcards`], saying how to fix the patterns.
    pub fn new(from: &str, to: &str) -> Result<Self, MongoError> {
        let from: Vec<String> = from.split('*').map(str::to_string).collect();
        let to: Vec<String> = to.split('*').map(str::to_string).collect();
        if from.len() != to.len() {
            return Err(MongoError::RenameWildcards {
                from: from.len() - 1,
                to: to.len() - 1,
            });
        }
        Ok(Self { from, to })
    }

    /// The new name of `ns`, or `None` when the pattern does not match it.
    #[must_use]
    pub fn apply(&self, ns: &str) -> Option<String> {
        let captures = capture(&self.from, ns)?;
        let mut out = String::new();
        for (i, lit) in self.to.iter().enumerate() {
            out.push_str(lit);
            if let Some(c) = captures.get(i) {
                out.push_str(c);
            }
        }
        Some(out)
    }
}

/// Matches `s` against literal pieces separated by wildcards; returns what each wildcard
/// took (leftmost, shortest match for all but the last).
fn capture<'a>(pieces: &[String], s: &'a str) -> Option<Vec<&'a str>> {
    let (first, rest) = pieces.split_first()?;
    let mut pos = first.len();
    if !s.starts_with(first.as_str()) {
        return None;
    }
    if rest.is_empty() {
        return (s.len() == first.len()).then(Vec::new);
    }
    let mut out = Vec::new();
    for (i, lit) in rest.iter().enumerate() {
        let last = i == rest.len() - 1;
        let found = if last {
            // The last literal must end the string.
            let start = s.len().checked_sub(lit.len())?;
            (start >= pos && s.ends_with(lit.as_str())).then_some(start)
        } else {
            s.get(pos..)?.find(lit.as_str()).map(|off| pos + off)
        }?;
        out.push(s.get(pos..found)?);
        pos = found + lit.len();
    }
    Some(out)
}

/// Waits for every task; on the first failure the others are aborted (a dump or load that
/// has failed should not go on reading or writing) and that failure is returned.
///
/// # Errors
/// The first task's error, or [`MongoError::Task`] for a task that panicked.
pub async fn join_all<T: 'static>(
    mut tasks: tokio::task::JoinSet<Result<T, MongoError>>,
    what: &'static str,
) -> Result<Vec<T>, MongoError> {
    let mut done = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(v)) => done.push(v),
            Ok(Err(e)) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    tasks.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(error) => {
                first_error.get_or_insert(MongoError::Task { what, error });
            }
        }
    }
    first_error.map_or(Ok(done), Err)
}

/// Splits `db.collection` at the first dot (collection names may contain dots).
#[must_use]
pub fn split_ns(ns: &str) -> Option<(&str, &str)> {
    ns.split_once('.')
        .filter(|(db, coll)| !db.is_empty() && !coll.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_with_wildcards() {
        let r = NsRename::new("control.*", "restored.*").unwrap();
        assert_eq!(r.apply("control.users").as_deref(), Some("restored.users"));
        assert_eq!(r.apply("control.a.b").as_deref(), Some("restored.a.b"));
        assert_eq!(r.apply("account_1.users"), None);
        let r = NsRename::new("*.users", "*.people").unwrap();
        assert_eq!(r.apply("control.users").as_deref(), Some("control.people"));
        assert_eq!(r.apply("control.users2"), None);
        let r = NsRename::new("a.b", "c.d").unwrap();
        assert_eq!(r.apply("a.b").as_deref(), Some("c.d"));
        assert_eq!(r.apply("a.bc"), None);
        let r = NsRename::new("acc_*.*", "*_old.*").unwrap();
        assert_eq!(r.apply("acc_1.contacts").as_deref(), Some("1_old.contacts"));
        assert_eq!(
            NsRename::new("a.*", "b.c").unwrap_err().to_string(),
            "--ns-from has 1 wildcard(s) and --ns-to 0: use the same number of *"
        );
    }

    #[test]
    fn filter_defaults_skip_system_databases() {
        let f = NsFilter::new(&[], &["*.system.*".to_string()]);
        assert!(f.wants_database("control"));
        assert!(!f.wants_database("admin"));
        assert!(!f.wants_database("local"));
        assert!(f.wants("control.users"));
        assert!(!f.wants("control.system.profile"));
        let f = NsFilter::new(&["control.*".to_string()], &[]);
        assert!(f.wants("control.users"));
        assert!(!f.wants("account_1.contacts"));
        let f = NsFilter::new(&["admin.*".to_string()], &[]);
        assert!(f.wants_database("admin"));
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(1000) + "\nsecond";
        assert!(first_line(&long).len() < 310);
        assert_eq!(first_line("a\nb"), "a");
    }
}
