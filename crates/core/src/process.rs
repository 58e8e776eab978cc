//! Facts about processes and this host, by which locks, stages and the journal of stopped
//! services judge whether their owner is still there.
//!
//! One place, so that the local lock, restic's lock files, the stages and the journal all
//! agree on what "this host" and "a live akbackup run" mean. It also builds every child
//! process akbackup starts ([`child_command`]), so what a child inherits is decided once.

use std::process::Command;

/// The variable holding the repository password (see `repository::password`); no child
/// inherits it.
pub const PASSWORD_ENV: &str = "AKBACKUP_PASSWORD";

/// The variable holding a new password for `key add` / `key passwd`; no child inherits it.
pub const NEW_PASSWORD_ENV: &str = "AKBACKUP_NEW_PASSWORD";

/// This machine's host name, as locks, stages and backups record it.
#[must_use]
pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Whether process `pid` on this host exists (one we may not signal exists too).
#[must_use]
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Whether process `pid` runs an akbackup binary (its command line names one: a reused pid is
/// not our run), or cannot be examined (then assume it does: never act on a guess).
#[must_use]
pub fn is_akbackup(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(argv0).contains("akbackup")
        }
        Err(_) => true,
    }
}

/// A command for a child process (hook, service command, password command, `systemctl`,
/// `tar`) that does not inherit akbackup's secrets from its environment: the repository
/// passwords and every `AWS_*` variable (the S3 keys, session token, profile and credential
/// file locations the storage library reads). The child gets what it needs in its own
/// arguments and variables, never a secret it might log. Every child akbackup starts is
/// built here; the README ("Hooks") lists what a child gets.
#[must_use]
pub fn child_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove(PASSWORD_ENV).env_remove(NEW_PASSWORD_ENV);
    for (name, _) in std::env::vars_os() {
        if is_secret_env(&name) {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// True for a variable a child must not inherit: the password variables and every `AWS_*`
/// one (`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and the ones that point at
/// credentials, such as `AWS_SHARED_CREDENTIALS_FILE` or `AWS_PROFILE`).
fn is_secret_env(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name == PASSWORD_ENV.as_bytes()
        || name == NEW_PASSWORD_ENV.as_bytes()
        || name.starts_with(b"AWS_")
}
