//! Nightly runs under systemd: a oneshot service running `akbackup backup` and a timer.
//!
//! The timer is `Persistent=true` (a night missed while the server was off runs at the next
//! boot) with a randomized delay (several servers sharing one bucket do not all start at
//! once); the service runs at low CPU and idle I/O priority, because on a platform server
//! what a backup takes is what the platform loses.

use std::path::{Path, PathBuf};

use crate::service;

/// Unit names.
pub const SERVICE: &str = "akbackup.service";
/// Timer name.
pub const TIMER: &str = "akbackup.timer";
/// Where units are installed by default.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Errors of schedule management.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A time that is not HH:MM.
    #[error("--daily {0}: give a time as HH:MM, e.g. 02:30")]
    Time(String),
    /// Writing or removing a unit file.
    #[error("{path}: {error}")]
    Io {
        /// The unit file.
        path: PathBuf,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// systemctl failed.
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    /// A path that cannot be written into a unit file faithfully.
    #[error(
        "{what} {path:?} holds a control character (a newline would start a new unit setting): rename it"
    )]
    ControlCharacter {
        /// `the config path` or `the akbackup binary`.
        what: &'static str,
        /// The path as given (shown escaped).
        path: String,
    },
    /// A path that is not UTF-8, which a unit file cannot name.
    #[error("{what} {path:?} is not UTF-8: a systemd unit cannot name it; rename it")]
    NotUtf8 {
        /// `the config path` or `the akbackup binary`.
        what: &'static str,
        /// The path, lossily decoded.
        path: String,
    },
}

/// The two unit files.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Units {
    /// `akbackup.service`.
    pub service: String,
    /// `akbackup.timer`.
    pub timer: String,
}

/// Checks `HH:MM` and returns it normalised.
///
/// # Errors
/// [`ScheduleError::Time`].
pub fn parse_daily(s: &str) -> Result<String, ScheduleError> {
    let bad = || ScheduleError::Time(s.to_string());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let h: u8 = h.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(format!("{h:02}:{m:02}"))
}

/// One `ExecStart=` word for `path`, as systemd reads it back: `%` (specifiers) doubled, `$`
/// (variable expansion) doubled, and the word double-quoted with `\\` and `\"` escaped when it
/// holds anything beyond plain path characters. Control characters are refused: a newline
/// would end the setting and start another (`ExecStartPre=` of the attacker's choice).
///
/// # Errors
/// [`ScheduleError::ControlCharacter`], [`ScheduleError::NotUtf8`].
pub fn unit_word(what: &'static str, path: &Path) -> Result<String, ScheduleError> {
    let s = path.to_str().ok_or_else(|| ScheduleError::NotUtf8 {
        what,
        path: path.display().to_string(),
    })?;
    if s.chars().any(char::is_control) {
        return Err(ScheduleError::ControlCharacter {
            what,
            path: s.to_string(),
        });
    }
    let escaped = s.replace('%', "%%").replace('$', "$$");
    let plain = escaped
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@=%$".contains(c));
    Ok(if plain {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    })
}

/// The units for running `binary --config config backup` daily at `daily` (HH:MM).
///
/// # Errors
/// A path a unit cannot hold (see [`unit_word`]).
pub fn units(binary: &Path, config: &Path, daily: &str) -> Result<Units, ScheduleError> {
    let service = format!(
        "# Written by `akbackup schedule install`; `akbackup schedule remove` deletes it.\n\
         [Unit]\n\
         Description=akbackup: back up the Altcraft platform\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={bin} --config {cfg} backup\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         # Exit 1 (a component failed) and 2 (config, lock, space) both mark the unit failed,\n\
         # so `systemctl --failed` and monitoring see it.\n",
        bin = unit_word("the akbackup binary", binary)?,
        cfg = unit_word("the config path", config)?,
    );
    let timer = format!(
        "# Written by `akbackup schedule install`; `akbackup schedule remove` deletes it.\n\
         [Unit]\n\
         Description=akbackup: nightly backup of the Altcraft platform\n\
         \n\
         [Timer]\n\
         OnCalendar=*-*-* {daily}:00\n\
         # A night missed while the server was off runs at the next boot.\n\
         Persistent=true\n\
         RandomizedDelaySec=15min\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    );
    Ok(Units { service, timer })
}

/// Writes the units into `dir` (atomically, each through a temporary file), then, when
/// `enable`, reloads systemd and enables and starts the timer.
///
/// # Errors
/// Writing the files or systemctl; files already written stay, so `remove` cleans up.
pub fn install(units: &Units, dir: &Path, enable: bool) -> Result<Vec<PathBuf>, ScheduleError> {
    let mut written = Vec::new();
    for (name, text) in [(SERVICE, &units.service), (TIMER, &units.timer)] {
        let path = dir.join(name);
        let io = |source| ScheduleError::Io {
            path: path.clone(),
            error: source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(io)?;
        }
        tmp.persist(&path).map_err(|e| io(e.error))?;
        written.push(path);
    }
    if enable {
        service::run(&["systemctl".into(), "daemon-reload".into()])?;
        service::run(&[
            "systemctl".into(),
            "enable".into(),
            "--now".into(),
            TIMER.into(),
        ])?;
    }
    Ok(written)
}

/// Disables the timer (when `enable` was used) and deletes the unit files from `dir`.
///
/// # Errors
/// systemctl or deleting the files; a missing file is not an error.
pub fn remove(dir: &Path, disable: bool) -> Result<Vec<PathBuf>, ScheduleError> {
    if disable {
        service::run(&[
            "systemctl".into(),
            "disable".into(),
            "--now".into(),
            TIMER.into(),
        ])?;
    }
    let mut removed = Vec::new();
    for name in [TIMER, SERVICE] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ScheduleError::Io {
                    path,
                    error: source,
                });
            }
        }
    }
    if disable {
        service::run(&["systemctl".into(), "daemon-reload".into()])?;
    }
    Ok(removed)
}

/// What systemd says of the timer and the last run: `systemctl show` properties
/// (`NextElapseUSecRealtime`, `LastTriggerUSec` of the timer; `Result`, `ExecMainStatus`,
/// `ActiveState` of the service), each prefixed `timer.` or `service.`.
///
/// # Errors
/// systemctl cannot be run.
pub fn status() -> Result<Vec<(String, String)>, ScheduleError> {
    let mut out = Vec::new();
    for (unit, prefix, props) in [
        (
            TIMER,
            "timer",
            "UnitFileState,ActiveState,NextElapseUSecRealtime,LastTriggerUSec",
        ),
        (SERVICE, "service", "ActiveState,Result,ExecMainStatus"),
    ] {
        let output = crate::process::child_command("systemctl")
            .args(["show", unit, "--property", props])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| service::ServiceError::Spawn {
                command: format!("systemctl show {unit}"),
                error: source,
            })?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                out.push((format!("{prefix}.{k}"), v.to_string()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_checked_and_normalised() {
        assert_eq!(parse_daily("2:30").unwrap(), "02:30");
        assert_eq!(parse_daily("23:59").unwrap(), "23:59");
        for bad in ["24:00", "12:60", "noon", "12", ":30", "-1:00"] {
            assert!(parse_daily(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn units_carry_the_schedule_and_quote_paths() {
        let u = units(
            Path::new("/usr/bin/akbackup"),
            Path::new("/etc/akbackup/my config.toml"),
            "02:30",
        )
        .unwrap();
        assert!(
            u.timer.contains("OnCalendar=*-*-* 02:30:00\n"),
            "{}",
            u.timer
        );
        assert!(u.timer.contains("Persistent=true\n"));
        assert!(u.timer.contains("RandomizedDelaySec="));
        assert!(
            u.service.contains(
                "ExecStart=/usr/bin/akbackup --config \"/etc/akbackup/my config.toml\" backup\n"
            ),
            "{}",
            u.service
        );
        assert!(u.service.contains("IOSchedulingClass=idle\n"));
        assert!(u.service.contains("Nice=10\n"));
    }

    #[test]
    /// `%` and `$` are escaped for systemd, quotes and backslashes inside quotes, and a
    /// newline (which would inject a setting) is refused.
    fn unit_words_escape_specifiers_and_refuse_newlines() {
        let word = |s: &str| unit_word("the config path", Path::new(s));
        assert_eq!(word("/etc/a.toml").unwrap(), "/etc/a.toml");
        assert_eq!(word("/etc/100%.toml").unwrap(), "/etc/100%%.toml");
        assert_eq!(word("/etc/$HOME.toml").unwrap(), "/etc/$$HOME.toml");
        assert_eq!(
            word("/etc/a \"b\\.toml").unwrap(),
            "\"/etc/a \\\"b\\\\.toml\""
        );
        let err = word("/etc/a\nExecStartPre=/bin/sh")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("control character") && !err.contains('\n'),
            "{err}"
        );
        assert!(word("/etc/a\tb").is_err());
    }
}
