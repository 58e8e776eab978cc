//! The error rule of akbackup, in one place. Every error enum of the core follows it; the
//! binary prints an error as its chain, `akbackup: <message>: <source>: <source>...`, and
//! needs no guessing about repeats.
//!
//! - **Never downgrade an error to a string across a module boundary.** A variant keeps the
//!   typed cause (an `io::Error`, a driver error, another module's error), with the instance,
//!   path or host it happened to. Strings are for causes that are themselves only text (a
//!   server's reply, a finding).
//! - **A variant either prints its cause or returns it from `source()`, never both.** Printed
//!   (`"cannot read {path}: {error}"`, the field named `error`: thiserror makes any field named
//!   `source` the source, attribute or not) when the message must stand alone: the
//!   core writes error text into places no chain walker reads (a set's manifest, `--json`
//!   reports, webhook bodies, progress lines). Returned (`#[source]`, `#[from]`, or
//!   `#[error(transparent)]`) when the message is only the layer's own step ("backup failed")
//!   and the cause follows it in the chain. `tests/error_rule.rs` reads the sources and fails
//!   on a variant that does both.
//! - **Attach context where it is known**: the component (`ssdb.actions: ...`), the path, the
//!   repository; and guidance where there is a fix (`run chmod 600 ...`, `pass --as KIND.NAME`).
//!
//! [`chain`] renders any error the way the binary does, for the places in the core that turn
//! an error into a line (a failure hook's context, a webhook body).

/// `error: source: source ...`, each part once: the form of every error line akbackup prints.
#[must_use]
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cur = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("backup failed")]
    struct Outer(#[source] std::io::Error);

    /// The chain is the message, then each source once.
    #[test]
    fn chain_joins_each_part_once() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(super::chain(&e), "backup failed: disk on fire");
    }
}
