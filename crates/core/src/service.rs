//! Running operator commands (restart commands, later systemd units), always as argv lists,
//! never through a shell, so config values cannot be interpreted as shell syntax.

/// Errors running a command.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// It could not be started.
    #[error("cannot run `{command}`: {error}")]
    Spawn {
        /// The command line, for the message.
        command: String,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// It exited non-zero.
    #[error("`{command}` failed with {status}{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// `: <last stderr line>` or empty.
        stderr: String,
    },
}

/// Runs `argv` and waits; stdout and stderr are captured, the last stderr line goes into the
/// error.
///
/// # Errors
/// [`ServiceError`].
pub fn run(argv: &[String]) -> Result<(), ServiceError> {
    output(argv).map(drop)
}

/// [`run`], returning what the command printed on stdout (for queries such as `lvs`).
///
/// # Errors
/// [`ServiceError`].
pub fn output(argv: &[String]) -> Result<String, ServiceError> {
    let command = shell_words::join(argv);
    let Some((program, args)) = argv.split_first() else {
        return Err(ServiceError::Spawn {
            command,
            error: std::io::Error::other("empty command"),
        });
    };
    // Restart and service commands never see the repository password.
    let out = crate::process::child_command(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| ServiceError::Spawn {
            command: command.clone(),
            error: source,
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()));
    Err(ServiceError::Failed {
        command,
        status: out.status.to_string(),
        stderr: last.unwrap_or_default(),
    })
}

/// `systemctl VERB UNIT`, found on `PATH` (tests put a recording stand-in there).
///
/// # Errors
/// [`ServiceError`] naming the unit.
pub fn systemctl(verb: &str, unit: &str) -> Result<(), ServiceError> {
    run(&["systemctl".to_string(), verb.to_string(), unit.to_string()])
}
