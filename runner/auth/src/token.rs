//! The shared secret itself: where it comes from, what a valid one looks
//! like, and comparing it without leaking it through timing or `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variable a token may come from (and that workers we
/// start are given).
pub const TOKEN_ENV: &str = "FERROBEAM_AUTH_TOKEN";

/// The shortest token accepted: 16 characters (128 bits of hex would be
/// 32; `openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 16;

/// How to make a good token, for error messages.
pub const TOKEN_HINT: &str = "e.g. `openssl rand -hex 32 > token && chmod 600 token`";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the auth token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the auth token from {origin} is empty; write a random token of at least {MIN_TOKEN_LEN} characters ({TOKEN_HINT})")]
    Empty { origin: String },
    #[error("the auth token from {origin} is {len} characters long; it must have at least {MIN_TOKEN_LEN} ({TOKEN_HINT})")]
    TooShort { origin: String, len: usize },
    #[error("the auth token from {origin} has a character that is not allowed (at byte {at}): use letters, digits and `-._~+/=` only ({TOKEN_HINT})")]
    BadCharacter { origin: String, at: usize },
}

/// A shared secret every caller must present.
///
/// Cheap to clone.  Its `Debug` and `Display` never show the secret; the
/// only ways to read it are [`AuthToken::expose`] (to hand it to a worker
/// process) and [`AuthToken::bearer`] (to send it).
#[derive(Clone)]
pub struct AuthToken {
    secret: Arc<str>,
}

impl AuthToken {
    /// A token from a string, with surrounding whitespace (a file's final
    /// newline) removed.  Refuses empty and short tokens and characters that
    /// cannot travel in an HTTP header, a cookie and a URL unchanged.
    pub fn new(secret: &str, origin: &str) -> Result<Self, AuthError> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(AuthError::Empty {
                origin: origin.into(),
            });
        }
        if let Some(at) = secret.bytes().position(|b| !allowed(b)) {
            return Err(AuthError::BadCharacter {
                origin: origin.into(),
                at,
            });
        }
        if secret.len() < MIN_TOKEN_LEN {
            return Err(AuthError::TooShort {
                origin: origin.into(),
                len: secret.len(),
            });
        }
        Ok(Self {
            secret: secret.into(),
        })
    }

    /// The token in `path` (its whole content, trimmed).  Warns if other
    /// users may read the file.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let read_err = |source| AuthError::Read {
            path: path.to_owned(),
            source,
        };
        let content = std::fs::read_to_string(path).map_err(read_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        "the auth token file is readable by other users; `chmod 600` it"
                    );
                }
            }
        }
        Self::new(&content, &format!("file {}", path.display()))
    }

    /// The token in `FERROBEAM_AUTH_TOKEN`, if it is set (an empty value is
    /// an error, not "no token": whoever set it meant to protect something).
    pub fn from_env() -> Result<Option<Self>, AuthError> {
        match std::env::var(TOKEN_ENV) {
            Ok(v) => Self::new(&v, &format!("${TOKEN_ENV}")).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(AuthError::BadCharacter {
                origin: format!("${TOKEN_ENV}"),
                at: 0,
            }),
        }
    }

    /// The token a command uses: `--auth_token_file` if given, else
    /// `FERROBEAM_AUTH_TOKEN`, else none.
    pub fn resolve(file: Option<&Path>) -> Result<Option<Self>, AuthError> {
        match file {
            Some(path) => Self::from_file(path).map(Some),
            None => Self::from_env(),
        }
    }

    /// Whether `presented` is this token, in time that depends only on the
    /// length of `presented` (which the caller knows anyway).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.secret.as_bytes(), presented)
    }

    /// Whether an `authorization` header value is `Bearer <this token>`.
    pub fn matches_bearer(&self, header: &[u8]) -> bool {
        match strip_bearer(header) {
            Some(presented) => self.matches(presented),
            None => false,
        }
    }

    /// `Bearer <token>`, the value of the `authorization` header to send.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.secret)
    }

    /// The secret itself: only to hand to a process we start (through
    /// `FERROBEAM_AUTH_TOKEN`).  Never log it.
    pub fn expose(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl fmt::Display for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Characters that pass unchanged through a header, a cookie value and a
/// URL query (base64, base64url and hex tokens all fit).
fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)
}

/// `presented` without a leading `Bearer ` (the scheme is case-insensitive).
pub(crate) fn strip_bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() < SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &header[SCHEME.len()..];
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    Some(&rest[start..])
}

/// Compares without an early exit: every byte of `presented` is compared
/// (against the secret, cycled), so the time does not depend on where the
/// first difference is, nor on the secret's length.
pub(crate) fn constant_time_eq(secret: &[u8], presented: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    let mut diff = (secret.len() != presented.len()) as u8;
    for (i, b) in presented.iter().enumerate() {
        diff |= b ^ secret[i % secret.len()];
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_a_good_token_and_trims_it() {
        let t = AuthToken::new(&format!("  {GOOD}\n"), "test").unwrap();
        assert_eq!(t.expose(), GOOD);
        assert!(t.matches(GOOD.as_bytes()));
        assert_eq!(t.bearer(), format!("Bearer {GOOD}"));
    }

    #[test]
    fn refuses_empty_short_and_odd_tokens() {
        assert!(matches!(
            AuthToken::new(" \n", "t"),
            Err(AuthError::Empty { .. })
        ));
        assert!(matches!(
            AuthToken::new("short", "t"),
            Err(AuthError::TooShort { len: 5, .. })
        ));
        assert!(matches!(
            AuthToken::new("0123456789abcdef;x", "t"),
            Err(AuthError::BadCharacter { at: 16, .. })
        ));
        assert!(matches!(
            AuthToken::new("0123456789 abcdef", "t"),
            Err(AuthError::BadCharacter { .. })
        ));
        let msg = AuthToken::new("short", "file /x").unwrap_err().to_string();
        assert!(msg.contains("file /x") && msg.contains("16"), "{msg}");
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let t = AuthToken::new(GOOD, "t").unwrap();
        assert!(!format!("{t:?}").contains(GOOD));
        assert!(!format!("{t}").contains(GOOD));
        assert!(!format!("{:?}", Some(t.clone())).contains(GOOD));
    }

    #[test]
    fn compares_exactly() {
        let t = AuthToken::new(GOOD, "t").unwrap();
        assert!(!t.matches(b""));
        assert!(!t.matches(&GOOD.as_bytes()[..31]));
        assert!(!t.matches(format!("{GOOD}0").as_bytes()));
        assert!(!t.matches(GOOD.to_uppercase().as_bytes()));
        // The secret cycled is not the secret.
        assert!(!t.matches(format!("{GOOD}{GOOD}").as_bytes()));
    }

    #[test]
    fn parses_bearer_headers() {
        let t = AuthToken::new(GOOD, "t").unwrap();
        assert!(t.matches_bearer(format!("Bearer {GOOD}").as_bytes()));
        assert!(t.matches_bearer(format!("bearer  {GOOD}").as_bytes()));
        assert!(!t.matches_bearer(GOOD.as_bytes()));
        assert!(!t.matches_bearer(format!("Basic {GOOD}").as_bytes()));
        assert!(!t.matches_bearer(b"Bearer "));
    }

    #[test]
    fn reads_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{GOOD}\n")).unwrap();
        assert_eq!(AuthToken::from_file(&path).unwrap().expose(), GOOD);
        assert_eq!(
            AuthToken::resolve(Some(&path)).unwrap().unwrap().expose(),
            GOOD
        );
        std::fs::write(&path, "").unwrap();
        let err = AuthToken::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let missing = dir.path().join("missing");
        assert!(matches!(
            AuthToken::from_file(&missing),
            Err(AuthError::Read { .. })
        ));
    }
}
