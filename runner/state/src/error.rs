use std::path::{Path, PathBuf};

/// What can go wrong in a state backend or with a checkpoint on disk.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("RocksDB: {0}")]
    Rocks(String),
    #[error("no checkpoint at {0} (expected a checkpoint directory with a MANIFEST.json, or a checkpoint root holding chk-* directories)")]
    Missing(PathBuf),
    #[error("the checkpoint at {path} is corrupt: {reason}; it was left as it is")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the checkpoint at {path} cannot be used: {reason}")]
    Incompatible { path: PathBuf, reason: String },
    #[error("malformed snapshot entry {entry:?}: {reason}")]
    Decode { entry: String, reason: String },
}

impl StateError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        StateError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

impl From<rocksdb::Error> for StateError {
    fn from(e: rocksdb::Error) -> Self {
        StateError::Rocks(e.into_string())
    }
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;
