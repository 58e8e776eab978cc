//! Facts about processes and this host, by which locks, stages and the journal of stopped
//! services judge whether their owner is still there.
//!
//! One place, so that the local lock, restic's lock files, the stages and the journal all
//! agree on what "this host" and "a live akbackup run" mean.

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
