//! Filesystem helpers that keep client-supplied names from escaping our roots.
//!
//! Every path the job service writes is built from a canonical root plus
//! components that went through [`sanitize_component`], so no client input
//! (environment ids, staged names, job names) can introduce `..`, a path
//! separator or an absolute path.

use std::io;
use std::path::{Path, PathBuf};

/// Longest component we generate; keeps paths far below `PATH_MAX`.
const MAX_COMPONENT_LEN: usize = 80;

/// Turns untrusted text into one safe path component.
///
/// Keeps only ASCII letters, digits, `-`, `_` and `.`, replaces everything
/// else with `_`, strips leading dots (no `.`, `..` or hidden files) and
/// truncates.  Returns `fallback` when nothing is left.
pub(crate) fn sanitize_component(raw: &str, fallback: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .skip_while(|c| *c == '.')
        .take(MAX_COMPONENT_LEN)
        .collect();
    // A trailing dot is legal on Unix but confusing elsewhere; drop it.
    while out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        fallback.to_string()
    } else {
        out
    }
}

/// The last path segment of a client-supplied name (either separator),
/// sanitised.  Used for staged artifact names such as `pickled_main_session`.
pub(crate) fn sanitized_basename(raw: &str, fallback: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    sanitize_component(base, fallback)
}

/// Creates `path` and missing parents, readable by our user only: staged
/// artifacts include pickled sessions, which are code.
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Removes a directory tree, treating "already gone" as success.
pub(crate) fn remove_dir_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Why a requested path may not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PathCheckError {
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} is outside the artifact directory")]
    OutsideRoot(String),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("cannot access {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Resolves `requested` (absolute, or relative to `root`) to a regular file
/// inside `root`.  `root` must be canonical.
///
/// The path is first normalised lexically and checked, so requests for
/// paths outside the root are refused without touching the filesystem (no
/// probing which outside files exist).  It is then canonicalised and checked
/// again, so a symlink inside the root cannot point out of it either.
pub(crate) async fn resolve_file_within(
    root: &Path,
    requested: &str,
) -> Result<PathBuf, PathCheckError> {
    let outside = || PathCheckError::OutsideRoot(requested.to_string());
    let lexical = normalize_lexically(&root.join(requested)).ok_or_else(outside)?;
    if !lexical.starts_with(root) {
        return Err(outside());
    }
    let canonical = match tokio::fs::canonicalize(&lexical).await {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(PathCheckError::NotFound(requested.to_string()))
        }
        Err(source) => {
            return Err(PathCheckError::Io {
                path: requested.to_string(),
                source,
            })
        }
    };
    if !canonical.starts_with(root) {
        return Err(outside());
    }
    let meta = tokio::fs::metadata(&canonical)
        .await
        .map_err(|source| PathCheckError::Io {
            path: requested.to_string(),
            source,
        })?;
    if !meta.is_file() {
        return Err(PathCheckError::NotAFile(requested.to_string()));
    }
    Ok(canonical)
}

/// Resolves `.` and `..` without consulting the filesystem; `None` if `..`
/// climbs above the filesystem root.
fn normalize_lexically(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => out.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_removes_traversal_and_separators() {
        assert_eq!(
            sanitize_component("../../etc/passwd", "x"),
            "_.._etc_passwd"
        );
        assert_eq!(sanitize_component("..", "x"), "x");
        assert_eq!(sanitize_component(".", "x"), "x");
        assert_eq!(sanitize_component("", "x"), "x");
        assert_eq!(sanitize_component("/abs", "x"), "_abs");
        assert_eq!(sanitize_component(".hidden", "x"), "hidden");
        assert_eq!(sanitize_component("ok-name_1.txt", "x"), "ok-name_1.txt");
        assert_eq!(sanitize_component("a\0b", "x"), "a_b");
        assert_eq!(sanitize_component("ünï", "x"), "_n_");
        assert_eq!(
            sanitize_component(&"a".repeat(500), "x").len(),
            MAX_COMPONENT_LEN
        );
    }

    #[test]
    fn basename_takes_last_segment() {
        assert_eq!(
            sanitized_basename("/tmp/x/pickled_main_session", "a"),
            "pickled_main_session"
        );
        assert_eq!(sanitized_basename("..\\..\\evil.whl", "a"), "evil.whl");
        assert_eq!(sanitized_basename("dir/..", "a"), "a");
        assert_eq!(sanitized_basename("", "a"), "a");
    }

    #[tokio::test]
    async fn resolve_rejects_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let root = root.canonicalize().unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();

        assert!(resolve_file_within(&root, "f").await.is_ok());
        assert!(resolve_file_within(&root, root.join("f").to_str().unwrap())
            .await
            .is_ok());
        assert!(matches!(
            resolve_file_within(&root, "../secret").await,
            Err(PathCheckError::OutsideRoot(_))
        ));
        assert!(matches!(
            resolve_file_within(&root, dir.path().join("secret").to_str().unwrap()).await,
            Err(PathCheckError::OutsideRoot(_))
        ));
        // Outside paths are refused whether or not they exist.
        assert!(matches!(
            resolve_file_within(&root, "../does-not-exist").await,
            Err(PathCheckError::OutsideRoot(_))
        ));
        assert!(matches!(
            resolve_file_within(&root, "nope").await,
            Err(PathCheckError::NotFound(_))
        ));
        assert!(matches!(
            resolve_file_within(&root, ".").await,
            Err(PathCheckError::NotAFile(_))
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
            assert!(matches!(
                resolve_file_within(&root, "link").await,
                Err(PathCheckError::OutsideRoot(_))
            ));
        }
    }
}
