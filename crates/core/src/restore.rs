//! `restore`: puts the components of one set back, in place or under a target directory.
//!
//! Each component restores on its own terms (see [`crate::component::Component::restore`]);
//! this module runs them in plan order and stops at the first failure, so the operator sees
//! exactly which components were restored and which were not touched.

use serde::Serialize;

use crate::{
    backup_set::Status,
    component::{Component, ComponentError, ComponentRestore, RestoreTarget},
    plan::RestorePlan,
    progress::ProgressRef,
    repository::{LockMode, RepoError, Repository},
};

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    /// The set restored.
    pub set: String,
    /// Per component, in order.
    pub components: Vec<ComponentRestore>,
    /// Components not attempted because an earlier one failed.
    pub not_attempted: Vec<String>,
    /// The first failure, if any.
    pub error: Option<String>,
    /// Overall.
    pub status: Status,
}

/// Errors that stop a restore before it starts.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Repository problems.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Executes a restore plan.
///
/// # Errors
/// Lock problems; component failures are in the summary.
pub fn run(
    repo: &Repository,
    components: &[Box<dyn Component>],
    plan: &RestorePlan,
    target: &RestoreTarget,
    progress: &ProgressRef,
) -> Result<RestoreSummary, RestoreError> {
    // Reading only, but an in-place restore must not race a forget --prune removing its data.
    let lock = repo.lock("restore", LockMode::Shared)?;
    let mut done = Vec::new();
    let mut error = None;
    let mut not_attempted = Vec::new();
    for step in &plan.steps {
        let Some(c) = components
            .iter()
            .find(|c| c.name().to_string() == step.name)
        else {
            continue;
        };
        if error.is_some() {
            not_attempted.push(step.name.clone());
            continue;
        }
        progress.note(&format!(
            "{}: restoring to {}",
            step.name,
            step.destination.display()
        ));
        let req = crate::component::RestoreRequest {
            repo,
            set_id: &plan.set,
            target,
            progress,
        };
        match c.restore(&req) {
            Ok(r) => done.push(r),
            Err(e) => error = Some(describe(&e)),
        }
    }
    drop(lock);
    let status = if error.is_some() || done.iter().any(|d| d.status == Status::Failed) {
        Status::Failed
    } else {
        Status::Complete
    };
    Ok(RestoreSummary {
        set: plan.set.clone(),
        components: done,
        not_attempted,
        error,
        status,
    })
}

fn describe(e: &ComponentError) -> String {
    e.to_string()
}
