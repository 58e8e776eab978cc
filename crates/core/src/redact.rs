//! The process-wide list of secret values that must never reach any output: the repository
//! passwords, the S3 secret key and session token, SSDB `auth` and MongoDB URI passwords.
//!
//! Each value is registered where akbackup reads it (config load, password resolution, S3
//! options, the environment at start-up); the binary's log writer passes every line through
//! [`redact`], so a library that one day logs a credential in a debug line (reqsign did:
//! its static provider's `Debug` holds the secret key in clear) still prints `***`.
//! Deliberately not here: deciding what to log; this is the net under it, not the filter.

use std::{borrow::Cow, sync::RwLock};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: replacing every `ab` in a log would garble it
/// and hide nothing a guess could not find.
const MIN_LEN: usize = 4;

/// Environment variables akbackup (or the storage library on its behalf) reads secrets from.
pub const SECRET_ENV: &[&str] = &[
    crate::repository::password::PASSWORD_ENV,
    crate::repository::password::NEW_PASSWORD_ENV,
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds `secret` to the values every log line is cleaned of.
pub fn register(secret: &str) {
    if secret.len() < MIN_LEN {
        return;
    }
    // A poisoned lock only means another thread panicked while registering; the list is
    // still a list.
    let mut list = SECRETS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !list.iter().any(|s| s == secret) {
        list.push(secret.to_string());
        // Longest first, so a secret containing another is masked whole.
        list.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the secrets in akbackup's environment ([`SECRET_ENV`]).
pub fn register_from_env() {
    for name in SECRET_ENV {
        if let Ok(value) = std::env::var(name) {
            register(&value);
        }
    }
}

/// `text` with every registered secret replaced by [`MASK`].
#[must_use]
pub fn redact(text: &str) -> Cow<'_, str> {
    let list = SECRETS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    for secret in list.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// Replaces the password in `scheme://user:password@host` with `***`.
#[must_use]
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return uri.to_string();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{scheme}://{user}:***@{host}")
}

/// The password in `scheme://user:password@host`, if there is one.
#[must_use]
pub fn uri_password(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let (userinfo, _) = rest.split_once('@')?;
    userinfo.split_once(':').map(|(_, pw)| pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A registered secret is masked wherever it appears, a short one is left alone, and a
    /// text without secrets is not copied.
    fn registered_secrets_are_masked() {
        register("Sup3rSecretKeyForRedactTest");
        register("Sup3rSecretKeyForRedactTestLonger");
        register("ab");
        let line = "provider { secret_access_key: \"Sup3rSecretKeyForRedactTestLonger\" } ab";
        assert_eq!(redact(line), "provider { secret_access_key: \"***\" } ab");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }
}
