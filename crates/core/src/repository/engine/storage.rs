//! The storage under a remote repository: our adapter from `rustic_core`'s backend traits to an
//! OpenDAL operator, and the one place that builds such operators.
//!
//! Every request to remote storage goes through the same layers, in OpenDAL's required order:
//! a timeout per attempt (control operations and every IO step: a server that accepts the
//! connection and never answers must not hang a run and its lock), then retries with jittered
//! backoff (a timed-out attempt is a temporary error and is retried), then the bandwidth limit,
//! then the number of parallel requests, then logging (OpenDAL's logging layer prints paths and
//! operations, never the service's options, so no credential reaches a log line). The HTTP
//! client gives up connecting after `connect-timeout` instead of the kernel's two minutes.
//!
//! Only the OpenDAL services akbackup tests are compiled in (`services-s3`, `services-sftp`). The engine and
//! [`crate::repository::store::Store`] (restic's `locks/`, the pack listing) use the same
//! operator, so both see the same timeouts. A local repository does not come here: it uses
//! `rustic_backend`'s local backend (atomic writes through a temporary file and a rename,
//! restic's layout), the one thing akbackup still takes from that crate.

use std::{sync::OnceLock, time::Duration};

use bytes::Bytes;
use opendal::{
    blocking::Operator,
    layers::{ConcurrentLimitLayer, LoggingLayer, RetryLayer, ThrottleLayer, TimeoutLayer},
    options::{ListOptions, ReadOptions},
};
use rustic_core::{
    ALL_FILE_TYPES, BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult,
    WriteBackend,
};

use super::{Location, S3Options, SftpOptions};

/// The limits every request to a remote location goes by.
struct Limits<'a> {
    timeout_secs: u32,
    retry: u32,
    bandwidth: Option<&'a str>,
    connections: u32,
}

/// The runtime every blocking operator drives its requests on; built once, on first use.
///
/// # Errors
/// When the runtime cannot be started.
pub(crate) fn runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    // hyper runs each connection's socket and TLS work on it: a thread per core, as the
    // runtime of the library's own backend had.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("akbackup-storage")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The blocking operator of a remote location, with the layers of the module header.
///
/// # Errors
/// OpenDAL's error when the options do not make an operator (or the location is local).
pub(crate) fn operator(location: &Location) -> opendal::Result<Operator> {
    match location {
        Location::Local(path) => Err(opendal::Error::new(
            opendal::ErrorKind::ConfigInvalid,
            format!("{} is a local repository", path.display()),
        )),
        Location::S3(s3) => layered(
            s3_operator(s3)?,
            &Limits {
                timeout_secs: s3.timeout_secs,
                retry: s3.retry,
                bandwidth: s3.bandwidth.as_deref(),
                connections: s3.connections,
            },
        ),
        Location::Sftp(sftp) => layered(
            sftp_operator(sftp)?,
            &Limits {
                timeout_secs: sftp.timeout_secs,
                retry: sftp.retry,
                bandwidth: sftp.bandwidth.as_deref(),
                connections: sftp.connections,
            },
        ),
    }
}

/// OpenDAL's SFTP service (our patched copy: `vendor/opendal-service-sftp/PATCHED.md`): the
/// system's `ssh` logs in, with the identity file (or the agent), checking the server's key
/// strictly against the known_hosts file, within `connect-timeout`.
fn sftp_operator(sftp: &SftpOptions) -> opendal::Result<opendal::Operator> {
    let config = ssh_config(sftp).map_err(|e| {
        opendal::Error::new(
            opendal::ErrorKind::ConfigInvalid,
            format!(
                "cannot write the ssh client config in {}",
                sftp.work_dir.display()
            ),
        )
        .set_source(e)
    })?;
    let mut b = opendal::services::Sftp::default()
        .config_file(&config.display().to_string())
        .endpoint(&format!("ssh://{}@{}:{}", sftp.user, sftp.host, sftp.port))
        .user(&sftp.user)
        .root(&sftp.root)
        .known_hosts_strategy("strict")
        .connect_timeout(u64::from(sftp.connect_timeout_secs.max(1)))
        .max_sessions(usize::try_from(sftp.connections.max(1)).unwrap_or(8));
    if let Some(key) = &sftp.identity_file {
        b = b.key(&key.display().to_string());
    }
    if let Some(file) = &sftp.known_hosts {
        b = b.known_hosts_file(&file.display().to_string());
    }
    opendal::Operator::new(b)
}

/// Writes the ssh client config of this repository into its work directory (`ssh -F`): the
/// server's key is checked against the given known_hosts file only (no system-wide file, no
/// `~/.ssh/config` redirecting the host), strictly, and only the given key is offered.
fn ssh_config(sftp: &SftpOptions) -> std::io::Result<std::path::PathBuf> {
    let known = sftp.known_hosts.as_ref().map_or_else(
        || "~/.ssh/known_hosts".to_string(),
        |p| p.display().to_string(),
    );
    let mut text = format!(
        "# Written by akbackup for {}; rewritten on every run.\n\
         StrictHostKeyChecking yes\nUserKnownHostsFile \"{known}\"\nGlobalKnownHostsFile /dev/null\n\
         BatchMode yes\nServerAliveInterval 15\nServerAliveCountMax 4\n",
        Location::Sftp(sftp.clone()).display()
    );
    if sftp.identity_file.is_some() {
        text.push_str("IdentitiesOnly yes\n");
    }
    std::fs::create_dir_all(&sftp.work_dir)?;
    let path = sftp.work_dir.join("ssh_config");
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// The line for an SFTP failure ssh explained: a host key it refused (with the key's
/// fingerprint, asked of the server with `ssh-keyscan`, so the operator can compare it with
/// the one the server's administrator reads off `ssh-keygen -lf`), or a login it was denied.
pub(super) fn sftp_cause(
    sftp: &SftpOptions,
    kind: opendal::ErrorKind,
    message: &str,
) -> Option<String> {
    let at = Location::Sftp(sftp.clone()).display();
    let server = format!("[{}]:{}", sftp.host, sftp.port);
    let known = sftp.known_hosts.as_ref().map_or_else(
        || "~/.ssh/known_hosts".to_string(),
        |p| p.display().to_string(),
    );
    let fingerprint =
        || fingerprint(&sftp.host, sftp.port).unwrap_or_else(|| "fingerprint unknown".to_string());
    if message.contains("HOST IDENTIFICATION HAS CHANGED") || message.contains("has changed") {
        return Some(format!(
            "the SSH host key of {server} CHANGED: it now offers {}, which {known} does not have for it; if the server was not reinstalled, someone may be in between: check with its administrator before replacing the line in {known}",
            fingerprint()
        ));
    }
    if message.contains("host key is known") || message.contains("Host key verification failed") {
        return Some(format!(
            "the SSH host key of {server} ({}) is not in {known}: check the fingerprint with the server's administrator, then add it: ssh-keyscan -p {} {} >> {known}",
            fingerprint(),
            sftp.port,
            sftp.host
        ));
    }
    // ssh's own words for a server that does not answer, and the pool's wait for a session
    // that never came; a stall in the middle of a transfer ("timeout reached") is the
    // request timeout's, said by the caller.
    if [
        "Connection timed out",
        "banner exchange",
        "connection request: timeout",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        return Some(format!(
            "no SSH answer from {server} within connect-timeout ({} s, {} attempts): is an SSH server listening there? check host, port and firewall",
            sftp.connect_timeout_secs,
            u64::from(sftp.retry) + 1
        ));
    }
    if kind == opendal::ErrorKind::PermissionDenied && message.contains("Permission denied") {
        return Some(format!(
            "{at}: the server refused the login of {}: check identity-file (or the SSH agent) and the server's authorized_keys",
            sftp.user
        ));
    }
    match kind {
        opendal::ErrorKind::PermissionDenied => Some(format!(
            "the server refused access at {at}: check that {} owns the repository directory and can write it ({message})",
            sftp.user
        )),
        opendal::ErrorKind::NotFound => Some(format!(
            "not found at {at}: does the directory exist on the server? ({message})"
        )),
        _ => None,
    }
}

/// `SHA256:...` of the server's host key, as `ssh-keygen -l` prints it.
fn fingerprint(host: &str, port: u16) -> Option<String> {
    use std::io::Write;
    let scan = crate::service::output(&[
        "ssh-keyscan".to_string(),
        "-T".to_string(),
        "5".to_string(),
        "-p".to_string(),
        port.to_string(),
        host.to_string(),
    ])
    .ok()?;
    let mut keygen = crate::process::child_command("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    keygen.stdin.take()?.write_all(scan.as_bytes()).ok()?;
    let out = keygen.wait_with_output().ok()?;
    let shown: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(format!("{} {}", f.get(1)?, f.last()?))
        })
        .collect();
    (!shown.is_empty()).then(|| shown.join(", "))
}

/// OpenDAL's S3 service from our typed options (never from user-given keys: OpenDAL ignores
/// keys it does not know, so a typo would pass silently).
fn s3_operator(s3: &S3Options) -> opendal::Result<opendal::Operator> {
    let mut b = opendal::services::S3::default()
        .bucket(&s3.bucket)
        .root(&s3.root)
        .region(&s3.region)
        // Outside EC2 the metadata endpoint hangs instead of failing; never ask it.
        .disable_ec2_metadata();
    if let Some(e) = &s3.endpoint {
        b = b.endpoint(e);
    }
    if s3.virtual_host_style {
        b = b.enable_virtual_host_style();
    }
    if let Some((id, secret, token)) = &s3.credentials {
        // The signing library logs its credential provider, secret included, at debug.
        crate::redact::register(secret);
        b = b.access_key_id(id).secret_access_key(secret);
        if let Some(t) = token {
            crate::redact::register(t);
            b = b.session_token(t);
        }
        // Explicit credentials win over anything in the environment.
        b = b.disable_config_load();
    }
    let op = opendal::Operator::new(b)?;
    // An HTTP client that gives up connecting after `connect-timeout` (the default client
    // waits for the kernel, about two minutes per address).
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(u64::from(
            s3.connect_timeout_secs.max(1),
        )))
        .build()
        .map_err(|e| {
            opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                "cannot build the HTTP client",
            )
            .set_source(e)
        })?;
    let transport = opendal::HttpTransporter::new(
        opendal_http_transport_reqwest::ReqwestTransport::new(client),
    );
    let context = op.base_context().with_http_transport(transport);
    Ok(op.with_context(context))
}

/// Bytes per second of a `bandwidth` value ("10MiB").
fn bandwidth(value: &str) -> opendal::Result<u32> {
    let bad = |why: String| {
        opendal::Error::new(
            opendal::ErrorKind::ConfigInvalid,
            format!("bandwidth \"{value}\": {why}; write it like \"10MiB\""),
        )
    };
    let size: bytesize::ByteSize = value.trim().parse().map_err(bad)?;
    u32::try_from(size.as_u64())
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| bad("out of range (1 B to 4 GiB per second)".to_string()))
}

/// The layers of the module header, then the blocking operator.
fn layered(op: opendal::Operator, s3: &Limits<'_>) -> opendal::Result<Operator> {
    let timeout = Duration::from_secs(u64::from(s3.timeout_secs.max(1)));
    let mut op = op
        .layer(
            TimeoutLayer::new()
                .with_timeout(timeout)
                .with_io_timeout(timeout),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(usize::try_from(s3.retry).unwrap_or(3))
                .with_jitter(),
        );
    if let Some(b) = s3.bandwidth {
        // The burst must hold the largest single upload (a pack, up to ~32 MiB and more),
        // or every pack write fails; the rate is what limits.
        op = op.layer(ThrottleLayer::new(bandwidth(b)?, 64 << 20));
    }
    let op = op
        .layer(ConcurrentLimitLayer::new(
            usize::try_from(s3.connections.max(1)).unwrap_or(8),
        ))
        .layer(LoggingLayer::default());
    let rt = runtime().map_err(|e| {
        opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "cannot start the storage runtime",
        )
        .set_source(e)
    })?;
    let _guard = rt.enter();
    Operator::new(op)
}

/// The step of [`write_renamed`] that failed, where, and OpenDAL's error.
#[derive(Debug)]
pub(crate) struct WriteFailed {
    /// `writing`, `checking` or `renaming`.
    pub what: &'static str,
    /// The file it was done to.
    pub path: String,
    /// The cause.
    pub error: opendal::Error,
}

/// Writes `path` through a temporary name beside it and a rename, checking the size before
/// the rename: a write that the retry layer repeated after a partial attempt (an SFTP
/// writer keeps its offset) must never be published under the real name. The temporary file
/// is removed on failure. Returns the step, the path and OpenDAL's error.
pub(crate) fn write_renamed(
    op: &Operator,
    path: &str,
    content: Vec<Bytes>,
) -> Result<(), Box<WriteFailed>> {
    let expected: u64 = content.iter().map(|b| b.len() as u64).sum();
    // Not an id: listings skip it, as restic skips its own temporary files.
    let tmp = format!("{path}-tmp-{:016x}", rand::random::<u64>());
    let fail = |what, at: &str, error| {
        let _ = op.delete(&tmp);
        Err(Box::new(WriteFailed {
            what,
            path: at.to_string(),
            error,
        }))
    };
    if let Err(e) = op.write(&tmp, content) {
        return fail("writing", &tmp, e);
    }
    match op.stat(&tmp) {
        Ok(m) if m.content_length() == expected => {}
        Ok(m) => {
            let e = opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                format!(
                    "{} bytes arrived, {expected} were sent: not published",
                    m.content_length()
                ),
            )
            .set_temporary();
            return fail("writing", &tmp, e);
        }
        Err(e) => return fail("checking", &tmp, e),
    }
    match op.rename(&tmp, path) {
        Ok(()) => Ok(()),
        // The rename may have happened and only its answer been lost.
        Err(_) if op.stat(path).is_ok_and(|m| m.content_length() == expected) => {
            let _ = op.delete(&tmp);
            Ok(())
        }
        Err(e) => fail("renaming", &tmp, e),
    }
}

/// `rustic_core`'s backend over an OpenDAL operator: restic's layout (`config`,
/// `data/XX/ID`, `keys|snapshots|index|locks/ID`).
pub(super) struct OpendalBackend {
    op: Operator,
    location: String,
    /// Write through a temporary name and a rename (SFTP: a file is visible while it is
    /// written, and a killed run would leave half a pack under its final name; S3 objects
    /// appear whole).
    atomic_rename: bool,
}

impl OpendalBackend {
    /// The backend of a remote location.
    ///
    /// # Errors
    /// OpenDAL's error when the operator cannot be built.
    pub(super) fn new(location: &Location) -> opendal::Result<Self> {
        Ok(Self {
            op: operator(location)?,
            location: location.display(),
            atomic_rename: matches!(location, Location::Sftp(_)),
        })
    }

    fn path(tpe: FileType, id: &Id) -> String {
        let hex = id.to_hex();
        match tpe {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("data/{}/{}", &hex[0..2], &*hex),
            _ => format!("{}/{}", tpe.dirname(), &*hex),
        }
    }

    /// The library's error for a failed storage `what`, keeping OpenDAL's error as its
    /// source (the engine reads its kind: not found, permission, timeout).
    fn error(what: &'static str, path: &str, err: opendal::Error) -> Box<RusticError> {
        RusticError::with_source(ErrorKind::Backend, "{what} `{path}` failed.", err)
            .attach_context("what", what)
            .attach_context("path", path.to_string())
    }

    /// Every file of type `tpe` with its size.
    fn listing(&self, tpe: FileType) -> RusticResult<Vec<(Id, u64)>> {
        if tpe == FileType::Config {
            return match self.op.stat("config") {
                Ok(meta) => Ok(vec![(Id::default(), meta.content_length())]),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Self::error("reading", "config", e)),
            };
        }
        let dir = format!("{}/", tpe.dirname());
        let entries = match self.op.list_options(
            &dir,
            ListOptions {
                recursive: true,
                ..Default::default()
            },
        ) {
            Ok(e) => e,
            // A directory nobody wrote to yet (S3 has no empty directories).
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Self::error("listing", &dir, e)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .filter_map(|e| {
                Some((
                    Id::parse_some(e.name(), tpe)?,
                    e.metadata().content_length(),
                ))
            })
            .collect())
    }
}

impl ReadBackend for OpendalBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        Ok(self
            .listing(tpe)?
            .into_iter()
            .filter_map(|(id, size)| {
                // Larger files are not restic's: skipped, as rustic_backend does, with a line.
                u32::try_from(size)
                    .inspect_err(|_| {
                        tracing::warn!("{tpe:?} {id} is {size} bytes, too large: ignored");
                    })
                    .ok()
                    .map(|s| (id, s))
            })
            .collect())
    }

    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        Ok(self.listing(tpe)?.into_iter().map(|(id, _)| id).collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let path = Self::path(tpe, id);
        self.op
            .read(&path)
            .map(|b| b.to_bytes())
            .map_err(|e| Self::error("reading", &path, e))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let path = Self::path(tpe, id);
        let start = u64::from(offset);
        let options = ReadOptions {
            range: (start..start + u64::from(length)).into(),
            ..Default::default()
        };
        self.op
            .read_options(&path, options)
            .map(|b| b.to_bytes())
            .map_err(|e| Self::error("reading", &path, e))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        Self::path(tpe, id)
    }
}

impl WriteBackend for OpendalBackend {
    fn create(&self) -> RusticResult<()> {
        let dirs: Vec<String> = ALL_FILE_TYPES
            .iter()
            .map(|t| format!("{}/", t.dirname()))
            .chain((0..=255u8).map(|i| format!("data/{i:02x}/")))
            .collect();
        // 260 requests: eight at a time.
        std::thread::scope(|scope| {
            let handles: Vec<_> = dirs
                .chunks(dirs.len().div_ceil(8))
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk.iter().try_for_each(|d| {
                            self.op
                                .create_dir(d)
                                .map_err(|e| Self::error("creating", d, e))
                        })
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(RusticError::new(
                        ErrorKind::Backend,
                        "a thread creating the repository's directories panicked",
                    ))
                })
            })
        })
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let path = Self::path(tpe, id);
        if !self.atomic_rename {
            return self
                .op
                .write(&path, content.into_vec())
                .map(drop)
                .map_err(|e| Self::error("writing", &path, e));
        }
        write_renamed(&self.op, &path, content.into_vec())
            .map_err(|f| Self::error(f.what, &f.path, f.error))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let path = Self::path(tpe, id);
        self.op
            .delete(&path)
            .map_err(|e| Self::error("removing", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// restic's layout: packs under a directory named after their first byte.
    #[test]
    fn paths_follow_restics_layout() {
        let id = Id::default();
        let hex = id.to_hex().to_string();
        assert_eq!(OpendalBackend::path(FileType::Config, &id), "config");
        assert_eq!(
            OpendalBackend::path(FileType::Pack, &id),
            format!("data/{}/{hex}", &hex[..2])
        );
        assert_eq!(
            OpendalBackend::path(FileType::Snapshot, &id),
            format!("snapshots/{hex}")
        );
    }

    /// A bandwidth is bytes per second, in the units people write.
    #[test]
    fn bandwidth_values() {
        assert_eq!(bandwidth("10MiB").unwrap(), 10 << 20);
        assert_eq!(bandwidth(" 512 KiB ").unwrap(), 512 << 10);
        assert!(bandwidth("fast").is_err());
        assert!(bandwidth("0").is_err());
        assert!(bandwidth("8GiB").is_err());
    }
}
