//! Progress reporting from long operations to whoever renders them.
//!
//! The core never draws: it calls a [`Progress`] implementation given by the caller. The binary
//! implements it with progress bars on a terminal and plain log lines otherwise.

use std::sync::Arc;

/// Receives progress of a long operation. Implementations must be cheap: `advance` is called
/// for every file.
pub trait Progress: Send + Sync {
    /// A unit of work (usually a component) starts; `total` is the expected number of bytes.
    fn begin(&self, label: &str, total: Option<u64>);
    /// `bytes` more bytes of the current unit were processed.
    fn advance(&self, label: &str, bytes: u64);
    /// The unit is finished.
    fn end(&self, label: &str);
    /// A line worth showing to the operator (a step started).
    fn note(&self, message: &str);
    /// A problem that does not change the outcome (a metrics file not written); shown even
    /// when notes are not.
    fn warn(&self, message: &str) {
        self.note(message);
    }
    /// A problem that makes the run fail (a hook, a copy); shown even when notes are not.
    fn error(&self, message: &str) {
        self.note(message);
    }
}

/// Progress that goes nowhere, for tests and library callers that do not care.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, _label: &str, _bytes: u64) {}
    fn end(&self, _label: &str) {}
    fn note(&self, _message: &str) {}
}

/// Shared handle to a progress sink.
pub type ProgressRef = Arc<dyn Progress>;

/// A handle that reports nothing.
#[must_use]
pub fn none() -> ProgressRef {
    Arc::new(NoProgress)
}
