//! The repository password: from `AKBACKUP_PASSWORD`, `password-command` or `password-file`,
//! in that order. A password file readable by group or others is refused, because the
//! password decrypts every backup of the platform.

use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use crate::{config::RepositoryConfig, process::child_command};

/// Environment variable that overrides the configured password source.
pub const PASSWORD_ENV: &str = crate::process::PASSWORD_ENV;
/// The new password of `key add` / `key passwd`, in the environment.
pub const NEW_PASSWORD_ENV: &str = crate::process::NEW_PASSWORD_ENV;

/// Errors resolving the password. None of them contains the password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// No source configured.
    #[error(
        "no repository password: set password-file in [repository], AKBACKUP_PASSWORD, or password-command"
    )]
    Missing,
    /// The file cannot be read.
    #[error("cannot read password file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is readable by others.
    #[error(
        "password file {path} is readable by group or others (mode {mode:04o}): run chmod 600 {path}"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Empty password.
    #[error("the repository password from {0} is empty")]
    Empty(String),
    /// The command failed.
    #[error("password-command {program} failed: {reason}")]
    Command {
        /// argv[0].
        program: String,
        /// Exit status or spawn error.
        reason: String,
    },
}

/// Finds the password.
///
/// # Errors
/// [`PasswordError`] naming the source and the fix.
pub fn resolve(config: &RepositoryConfig) -> Result<String, PasswordError> {
    if let Ok(pw) = std::env::var(PASSWORD_ENV) {
        return non_empty(pw, PASSWORD_ENV);
    }
    if let Some(argv) = &config.password_command {
        let program = argv.first().cloned().unwrap_or_default();
        let out = child_command(&program)
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| PasswordError::Command {
                program: program.clone(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(PasswordError::Command {
                program,
                reason: out.status.to_string(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        return non_empty(
            text.lines().next().unwrap_or("").to_string(),
            "password-command",
        );
    }
    if let Some(path) = &config.password_file {
        return read_secret_file(path);
    }
    Err(PasswordError::Missing)
}

/// Reads the first line of a secret file, refusing one that group or others can access.
///
/// # Errors
/// [`PasswordError`] naming the file and the fix.
pub fn read_secret_file(path: &std::path::Path) -> Result<String, PasswordError> {
    let meta = std::fs::metadata(path).map_err(|source| PasswordError::Read {
        path: path.to_path_buf(),
        error: source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PasswordError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| PasswordError::Read {
        path: path.to_path_buf(),
        error: source,
    })?;
    non_empty(
        text.lines().next().unwrap_or("").to_string(),
        &path.display().to_string(),
    )
}

fn non_empty(pw: String, from: &str) -> Result<String, PasswordError> {
    if pw.is_empty() {
        Err(PasswordError::Empty(from.to_string()))
    } else {
        crate::redact::register(&pw);
        Ok(pw)
    }
}
