//! Where a repository lives: a local directory or an S3-compatible bucket, and how to reach it.
//!
//! Owns [`Location`] and [`S3Options`] and their translation into OpenDAL's options, which
//! both the engine's backend and `repository::store::Store` use. It does not open anything,
//! nor read the config: `repository::location` builds these from the typed config.

use std::path::PathBuf;

/// Where a repository lives, in the engine's terms.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Options),
}

impl Location {
    /// For messages: the path, or `s3://bucket/prefix`.
    #[must_use]
    pub fn display(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::S3(s) => format!("s3://{}/{}", s.bucket, s.root.trim_start_matches('/')),
        }
    }
}

/// An S3 location and how to talk to it (the options OpenDAL's S3 service and
/// rustic_backend take; built from our typed config, never from user-given keys, because
/// OpenDAL silently ignores keys it does not know).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Bucket.
    pub bucket: String,
    /// Prefix inside the bucket, with a leading `/`.
    pub root: String,
    /// Endpoint URL; AWS when `None`.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Virtual-host style instead of path style.
    pub virtual_host_style: bool,
    /// Explicit credentials; `None` leaves them to the environment (`AWS_*`, `~/.aws`).
    pub credentials: Option<(String, String, Option<String>)>,
    /// Parallel requests.
    pub connections: u32,
    /// Retries per request.
    pub retry: u32,
    /// Seconds one attempt of a request may take before it fails (and is retried).
    pub timeout_secs: u32,
    /// Seconds connecting to the endpoint may take.
    pub connect_timeout_secs: u32,
    /// Bandwidth limit ("10MiB").
    pub bandwidth: Option<String>,
}

impl S3Options {
    /// The options of OpenDAL's S3 service (and rustic_backend's own keys, which OpenDAL
    /// ignores), shared by the engine's backend and [`crate::repository::store::Store`].
    pub(crate) fn opendal_options(&self) -> std::collections::BTreeMap<String, String> {
        let mut o = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: String| {
            o.insert(k.to_string(), v);
        };
        put("bucket", self.bucket.clone());
        put("root", self.root.clone());
        if let Some(e) = &self.endpoint {
            put("endpoint", e.clone());
        }
        put("region", self.region.clone());
        put(
            "enable_virtual_host_style",
            self.virtual_host_style.to_string(),
        );
        // Outside EC2 the metadata endpoint hangs instead of failing; never ask it.
        put("disable_ec2_metadata", "true".to_string());
        if let Some((id, secret, token)) = &self.credentials {
            // The signing library logs its credential provider, secret included, at debug.
            crate::redact::register(secret);
            if let Some(t) = token {
                crate::redact::register(t);
            }
            put("access_key_id", id.clone());
            put("secret_access_key", secret.clone());
            if let Some(t) = token {
                put("session_token", t.clone());
            }
            // Explicit credentials win over anything in the environment.
            put("disable_config_load", "true".to_string());
        }
        put("retry", self.retry.to_string());
        // Read by our patch of rustic_backend (vendor/rustic_backend/PATCHED.md): without
        // them a server that never answers hangs the run.
        put("timeout", self.timeout_secs.max(1).to_string());
        put(
            "connect-timeout",
            self.connect_timeout_secs.max(1).to_string(),
        );
        put("connections", self.connections.to_string());
        if let Some(b) = &self.bandwidth {
            // The burst must hold the largest single upload (a pack, up to ~32 MiB and
            // more), or every pack write fails; the rate is what limits.
            put("throttle", format!("{b},64MiB"));
        }
        o
    }
}
