//! Hooks: operator commands run before a backup, after it, or when it failed, for the whole
//! run or for one component (stop a queue consumer, notify a chat, ...).
//!
//! Commands are argv lists run without a shell, so config values are never shell syntax;
//! `shell = true` is the explicit opt-in to `/bin/sh -c`. Each has a timeout: a hung hook
//! must not hold the nightly run (and the repository lock) forever. What the hook needs to
//! know comes in the environment: `AKBACKUP_HOOK` (before, after, failure), `AKBACKUP_SET`,
//! `AKBACKUP_STATUS` and `AKBACKUP_COMPONENT`.

use std::{
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use crate::process::child_command;
use serde::{Deserialize, Serialize};

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// Before anything is read; a failure cancels the backup.
    Before,
    /// After a complete backup.
    After,
    /// After a failed backup (including one a `before` hook cancelled).
    Failure,
}

impl When {
    /// The name in the config and in `AKBACKUP_HOOK`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Before => "before",
            Self::After => "after",
            Self::Failure => "failure",
        }
    }
}

/// One `[[hooks]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Hook {
    /// When it runs.
    pub on: When,
    /// argv (or, with `shell = true`, one string for `/bin/sh -c`).
    pub command: Vec<String>,
    /// Run through `/bin/sh -c` (the only way a shell is involved).
    #[serde(default)]
    pub shell: bool,
    /// Seconds before the hook is killed (default 60).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Only around this component (`ssdb.stat`); the whole run when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

const fn default_timeout() -> u64 {
    60
}

impl Hook {
    /// The command as shown in messages.
    #[must_use]
    pub fn shown(&self) -> String {
        if self.shell {
            format!("sh -c {}", shell_words::quote(&self.command.join(" ")))
        } else {
            shell_words::join(&self.command)
        }
    }

    /// Checks the entry (config validation).
    ///
    /// # Errors
    /// A message saying what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.command.first().is_none_or(String::is_empty) {
            return Err("command is empty".to_string());
        }
        if self.shell && self.command.len() != 1 {
            return Err("with shell = true, command is one string: command = [\"...\"]".into());
        }
        // The timeout becomes a deadline (`Instant + Duration`), which panics on overflow.
        crate::config::check_seconds("timeout", self.timeout)
    }
}

/// What a hook is told.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The set id, once there is one.
    pub set: Option<String>,
    /// `complete` or `failed`, after the run.
    pub status: Option<String>,
    /// The component the hook is around.
    pub component: Option<String>,
}

/// Why a hook failed: one line naming the hook (`before hook \`cmd\``) and what happened.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The command could not be started.
    #[error("{when} hook `{shown}` cannot start: {error}")]
    Start {
        /// When it ran.
        when: &'static str,
        /// The command as configured.
        shown: String,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("{when} hook `{shown}`: {error}")]
    Wait {
        /// When it ran.
        when: &'static str,
        /// The command as configured.
        shown: String,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// It ran longer than its timeout and was killed.
    #[error("{when} hook `{shown}` timed out after {seconds} s and was killed")]
    Timeout {
        /// When it ran.
        when: &'static str,
        /// The command as configured.
        shown: String,
        /// Its timeout.
        seconds: u64,
    },
    /// It exited with a failure.
    #[error("{when} hook `{shown}` failed with {status}{}", last.as_ref().map_or_else(String::new, |l| format!(": {l}")))]
    Failed {
        /// When it ran.
        when: &'static str,
        /// The command as configured.
        shown: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last non-empty line it wrote to stderr.
        last: Option<String>,
    },
}

/// Runs one hook and waits for it, at most its timeout.
///
/// # Errors
/// [`HookError`]: the command, and its exit status and last stderr line, or the timeout.
pub fn run(hook: &Hook, when: When, ctx: &Context) -> Result<(), HookError> {
    let mut cmd = if hook.shell {
        let mut c = child_command("/bin/sh");
        c.arg("-c").arg(hook.command.join(" "));
        c
    } else {
        let mut c = child_command(&hook.command[0]);
        c.args(&hook.command[1..]);
        c
    };
    // The repository password stays with akbackup: a hook gets what it needs in its own
    // variables, never the secret it might log.
    cmd.env("AKBACKUP_HOOK", when.as_str())
        .env("AKBACKUP_SET", ctx.set.as_deref().unwrap_or(""))
        .env("AKBACKUP_STATUS", ctx.status.as_deref().unwrap_or(""))
        .env("AKBACKUP_COMPONENT", ctx.component.as_deref().unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let shown = hook.shown();
    let mut child = cmd.spawn().map_err(|error| HookError::Start {
        when: when.as_str(),
        shown: shown.clone(),
        error,
    })?;
    let deadline = Instant::now() + Duration::from_secs(hook.timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout {
                    when: when.as_str(),
                    shown,
                    seconds: hook.timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => {
                return Err(HookError::Wait {
                    when: when.as_str(),
                    shown,
                    error,
                });
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string());
    Err(HookError::Failed {
        when: when.as_str(),
        shown,
        status,
        last,
    })
}

/// Runs every hook for `when`: those of the whole run, then each component's (with
/// `AKBACKUP_COMPONENT` set). `before` stops at the first failure; the others run all and
/// return every failure.
///
/// # Errors
/// The failures, one line each.
pub fn run_all(
    hooks: &[Hook],
    when: When,
    components: &[String],
    ctx: &Context,
    component_status: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Vec<HookError>> {
    let mut failures = Vec::new();
    for hook in hooks.iter().filter(|h| h.on == when) {
        let mut c = ctx.clone();
        if let Some(comp) = &hook.component {
            if !components.iter().any(|n| n == comp) {
                continue;
            }
            c.component = Some(comp.clone());
            if when != When::Before {
                c.status = component_status(comp).or(c.status);
            }
        }
        if let Err(e) = run(hook, when, &c) {
            failures.push(e);
            if when == When::Before {
                break;
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(command: &[&str], shell: bool, timeout: u64) -> Hook {
        Hook {
            on: When::Before,
            command: command.iter().map(ToString::to_string).collect(),
            shell,
            timeout,
            component: None,
        }
    }

    #[test]
    fn exit_status_stderr_and_timeout_are_reported() {
        let ctx = Context::default();
        assert!(run(&hook(&["true"], false, 5), When::Before, &ctx).is_ok());
        let e = run(
            &hook(&["sh", "-c", "echo nope >&2; exit 3"], false, 5),
            When::After,
            &ctx,
        )
        .unwrap_err();
        assert!(
            matches!(&e, HookError::Failed { last: Some(l), .. } if l == "nope"),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.contains("after hook") && e.contains("nope"), "{e}");
        let started = Instant::now();
        let e = run(&hook(&["sleep", "30"], false, 1), When::Before, &ctx).unwrap_err();
        assert!(matches!(e, HookError::Timeout { seconds: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("timed out after 1 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // No shell unless asked: the `;` is an argument, not syntax.
        assert!(run(&hook(&["true;", "false"], false, 5), When::Before, &ctx).is_err());
        assert!(run(&hook(&["true; true"], true, 5), When::Before, &ctx).is_ok());
    }

    #[test]
    fn validation() {
        assert!(hook(&[], false, 5).validate().is_err());
        assert!(hook(&["a", "b"], true, 5).validate().is_err());
        assert!(hook(&["a"], false, 0).validate().is_err());
        assert!(hook(&["a"], false, 1).validate().is_ok());
    }
}
