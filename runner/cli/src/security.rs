//! The command line's side of `ferrobeam_auth`: where the token comes from
//! (`--auth_token_file`, else `FERROBEAM_AUTH_TOKEN`), the size limits a
//! job server applies to what clients and workers send, and the header our
//! own client commands send.

use std::path::PathBuf;
use std::sync::OnceLock;

use ferrobeam_auth::{AuthError, AuthToken};
use ferrobeam_fnapi::FnServerOptions;
use ferrobeam_jobs::JobServiceConfig;

/// What a server enforces besides binding loopback.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    /// Every gRPC call and dashboard request must carry it (required for a
    /// non-loopback bind).
    pub auth_token: Option<AuthToken>,
    /// Largest gRPC message accepted (Job API and Fn API); `None` keeps
    /// each one's default (64 MiB and 256 MiB).
    pub max_message_bytes: Option<usize>,
    /// Largest single staged artifact; `None`: 1 GiB.
    pub max_artifact_bytes: Option<u64>,
    /// Largest sum of one job's artifacts; `None`: 4 GiB, or the
    /// per-artifact limit if that is larger.
    pub max_total_artifact_bytes: Option<u64>,
}

impl SecurityConfig {
    /// Applies the token and limits to the job service's configuration.
    pub fn apply_to_jobs(&self, c: &mut JobServiceConfig) {
        c.auth_token = self.auth_token.clone();
        if let Some(n) = self.max_message_bytes {
            c.max_decoding_message_bytes = n;
            c.max_encoding_message_bytes = n;
        }
        if let Some(n) = self.max_artifact_bytes {
            c.max_artifact_bytes = n;
            c.max_total_artifact_bytes = c.max_total_artifact_bytes.max(n);
        }
        if let Some(n) = self.max_total_artifact_bytes {
            c.max_total_artifact_bytes = n;
        }
    }

    /// The Fn API server's token and message limit.
    pub fn fn_server_options(&self) -> FnServerOptions {
        let defaults = FnServerOptions::default();
        FnServerOptions {
            auth_token: self.auth_token.clone(),
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
        }
    }
}

/// The size flags of `ferrobeam job-server`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Largest gRPC message accepted from clients and workers, in bytes
    /// (suffixes KiB, MiB, GiB, KB, MB, GB) [default: 64MiB for the Job API,
    /// 256MiB for the Fn API].
    #[arg(long = "max_message_bytes", visible_alias = "max-message-bytes",
          value_name = "BYTES", value_parser = parse_bytes)]
    pub max_message_bytes: Option<u64>,
    /// Largest single staged artifact, in bytes; staging stops reading at
    /// the limit and fails the job [default: 1GiB].
    #[arg(long = "max_artifact_bytes", visible_alias = "max-artifact-bytes",
          value_name = "BYTES", value_parser = parse_bytes)]
    pub max_artifact_bytes: Option<u64>,
    /// Largest sum of one job's staged artifacts, in bytes [default: 4GiB].
    #[arg(long = "max_total_artifact_bytes", visible_alias = "max-total-artifact-bytes",
          value_name = "BYTES", value_parser = parse_bytes)]
    pub max_total_artifact_bytes: Option<u64>,
}

impl LimitArgs {
    /// The limits with `token`.
    pub fn with_token(&self, auth_token: Option<AuthToken>) -> SecurityConfig {
        SecurityConfig {
            auth_token,
            max_message_bytes: self
                .max_message_bytes
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_artifact_bytes: self.max_artifact_bytes,
            max_total_artifact_bytes: self.max_total_artifact_bytes,
        }
    }
}

/// `123`, `64MiB`, `1GiB`, `500MB`, ... as a number of bytes (at least 1).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "expected a size like 1048576, 64MiB or 1GiB, got {text:?}"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("expected a positive size like 64MiB, got {text:?}"))
}

/// `--auth_token_file` as given on the command line (global: the servers
/// read it, and so do the client commands).
static TOKEN_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Remembers `--auth_token_file` for [`token`] (first call wins).
pub fn set_token_file(path: Option<PathBuf>) {
    let _ = TOKEN_FILE.set(path);
}

tokio::task_local! {
    /// A token given by an embedding program (the Python package) for the
    /// client calls of one future.
    static TOKEN_OVERRIDE: AuthToken;
}

/// Runs `future` (client calls) with `token` instead of the command's.
pub async fn with_token<F: std::future::Future>(token: AuthToken, future: F) -> F::Output {
    TOKEN_OVERRIDE.scope(token, future).await
}

/// The token of this command: one given by [`with_token`], else from
/// `--auth_token_file` if it was given, else from `FERROBEAM_AUTH_TOKEN`,
/// else none.  Servers check it on every call; client commands send it.
pub fn token() -> Result<Option<AuthToken>, AuthError> {
    if let Ok(t) = TOKEN_OVERRIDE.try_with(AuthToken::clone) {
        return Ok(Some(t));
    }
    AuthToken::resolve(TOKEN_FILE.get().and_then(|p| p.as_deref()))
}

/// What a client command says when a server wants a token it did not send.
pub const CLIENT_TOKEN_HINT: &str = "this job server needs its auth token: pass \
    --auth_token_file PATH (the file the server was given) or set FERROBEAM_AUTH_TOKEN";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2gb"), Ok(2_000_000_000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn limits_reach_the_job_service() {
        let mut c = JobServiceConfig::with_root("/tmp/x");
        LimitArgs {
            max_message_bytes: Some(1 << 20),
            max_artifact_bytes: Some(8 << 30),
            max_total_artifact_bytes: None,
        }
        .with_token(None)
        .apply_to_jobs(&mut c);
        assert_eq!(c.max_decoding_message_bytes, 1 << 20);
        assert_eq!(c.max_artifact_bytes, 8 << 30);
        // The total follows a per-artifact limit above it.
        assert_eq!(c.max_total_artifact_bytes, 8 << 30);
    }
}
