//! Checkpoints and savepoints on disk.
//!
//! ```text
//! <checkpoint_dir>/
//!   chk-000007/
//!     state/           the backend's snapshot (RocksDB checkpoint, or state.kv)
//!     MANIFEST.json    written last, atomically: its presence marks the
//!                      checkpoint complete
//!   chk-000008/        in progress (no manifest yet): ignored by restore
//! ```
//!
//! A savepoint has the same layout in a directory of its own (no `chk-`
//! parent) and is never pruned.  Nothing here modifies a complete
//! checkpoint: restore reads it, and a failed checkpoint only removes its
//! own, incomplete directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::error::{Result, StateError};
use crate::keys::Namespace;

pub const MANIFEST: &str = "MANIFEST.json";
pub const STATE_DIR: &str = "state";
/// Files a snapshot carries for its stages (a transactional Kafka sink's
/// log), by file name.
pub const FILES_DIR: &str = "files";
/// Bumped when a checkpoint written by this version could not be read by
/// the previous one (or the other way round).
pub const FORMAT_VERSION: u32 = 3;
const PREFIX: &str = "chk-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

/// What a checkpoint holds, in a form people and tools can read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub ferrobeam_version: String,
    pub kind: SnapshotKind,
    /// Sequence number within its checkpoint directory (0 for savepoints).
    pub id: u64,
    pub job_name: String,
    pub created_unix_ms: i64,
    pub backend: BackendKind,
    /// Per transform unique name: where its state lives and what it is.
    pub transforms: BTreeMap<String, TransformEntry>,
    /// How long processing stood still while the snapshot was taken.
    pub pause_ms: u64,
    /// From the start of the checkpoint to the manifest written.
    pub duration_ms: u64,
    /// Bytes of the snapshot directory (hard links counted in full).
    pub bytes: u64,
}

/// One transform's part of a checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TransformEntry {
    pub namespace: Namespace,
    /// User state by state id: the coder it was written with, so that a
    /// changed pipeline reading it with another coder is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_state: BTreeMap<String, StateSpec>,
    /// Names of the engine's snapshot entries (timers, buffers, sink, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSpec {
    /// The state's coder, as a readable description of the coder tree
    /// (URNs and components; see `ferrobeam_engine::durable`).
    pub coder: String,
}

/// A complete checkpoint or savepoint found on disk.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Snapshot {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR)
    }

    /// The file `name` this snapshot carries, if it does.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        let path = self.dir.join(FILES_DIR).join(name);
        path.is_file().then_some(path)
    }
}

/// Puts `files` (already synced by their writers) into the snapshot being
/// written in `dir`, under their file names: hard links where the file
/// system allows (the writer may go on appending to a file that a failed
/// checkpoint leaves it), copies otherwise.
pub fn add_files(dir: &Path, files: &[PathBuf]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let into = dir.join(FILES_DIR);
    std::fs::create_dir_all(&into).map_err(StateError::io("creating", &into))?;
    for file in files {
        let name = file.file_name().ok_or_else(|| {
            StateError::corrupt(dir, format!("{} has no file name", file.display()))
        })?;
        let to = into.join(name);
        if std::fs::hard_link(file, &to).is_err() {
            std::fs::copy(file, &to).map_err(StateError::io("copying", file))?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(StateError::io("syncing", &to))?;
        }
    }
    sync_dir(&into)
}

/// Reads and checks the manifest of the checkpoint in `dir`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::Missing(dir.to_path_buf()))
        }
        Err(e) => return Err(StateError::io("reading", &path)(e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| StateError::corrupt(dir, format!("{MANIFEST} does not parse: {e}")))?;
    if manifest.format != FORMAT_VERSION {
        return Err(StateError::Incompatible {
            path: dir.to_path_buf(),
            reason: format!(
                "it was written in checkpoint format {} (by ferrobeam {}); this ferrobeam reads format {FORMAT_VERSION}",
                manifest.format, manifest.ferrobeam_version
            ),
        });
    }
    if !dir.join(STATE_DIR).is_dir() {
        return Err(StateError::corrupt(
            dir,
            format!("its {STATE_DIR}/ directory is missing"),
        ));
    }
    Ok(manifest)
}

/// Finds the snapshot `path` names: a checkpoint or savepoint directory
/// itself, or a checkpoint root (its latest complete checkpoint).
pub fn resolve(path: &Path) -> Result<Snapshot> {
    if path.join(MANIFEST).exists() {
        return Ok(Snapshot {
            dir: path.to_path_buf(),
            manifest: read_manifest(path)?,
        });
    }
    latest(path)?.ok_or_else(|| StateError::Missing(path.to_path_buf()))
}

/// The `chk-*` directories under `root` with their ids, newest first.
fn numbered(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let listing = match std::fs::read_dir(root) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StateError::io("listing", root)(e)),
    };
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry.map_err(StateError::io("listing", root))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((id, entry.path()));
    }
    out.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    Ok(out)
}

/// The newest complete checkpoint under `root`, if any.  A newer
/// directory without a manifest is a checkpoint that never finished and is
/// skipped; a newer one whose manifest is damaged is an error (restoring an
/// older one silently would replay output the sinks already committed).
pub fn latest(root: &Path) -> Result<Option<Snapshot>> {
    for (_, dir) in numbered(root)? {
        match read_manifest(&dir) {
            Ok(manifest) => return Ok(Some(Snapshot { dir, manifest })),
            Err(StateError::Missing(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Where checkpoints of one job go, and their retention.
pub struct CheckpointStore {
    root: PathBuf,
    retained: usize,
    next_id: u64,
}

/// A checkpoint being written: its directory exists, its manifest does not.
pub struct Pending {
    pub id: u64,
    pub dir: PathBuf,
}

impl Pending {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR)
    }
}

impl CheckpointStore {
    /// Checkpoints under `root`, numbered after any already there.
    pub fn open(root: &Path, retained: usize) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(StateError::io("creating", root))?;
        let next_id = numbered(root)?.first().map_or(1, |(id, _)| id + 1);
        Ok(Self {
            root: root.to_path_buf(),
            retained: retained.max(1),
            next_id,
        })
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts checkpoint number `next`: an empty directory.
    pub fn begin(&mut self) -> Result<Pending> {
        let id = self.next_id;
        self.next_id += 1;
        let dir = self.root.join(format!("{PREFIX}{id:06}"));
        // A directory left by a crash while writing this id: never complete
        // (ids only grow), so it can go.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(StateError::io("removing", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(StateError::io("creating", &dir))?;
        Ok(Pending { id, dir })
    }

    /// Completes `pending` by writing its manifest, then removes the
    /// checkpoints beyond the retained count and any incomplete ones
    /// older than it.
    pub fn commit(&self, pending: &Pending, manifest: &Manifest) -> Result<()> {
        write_manifest(&pending.dir, manifest)?;
        let mut complete = 0;
        for (id, dir) in numbered(&self.root)? {
            if id > pending.id {
                continue;
            }
            let done = dir.join(MANIFEST).exists();
            complete += usize::from(done);
            if !done || complete > self.retained {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove an old checkpoint");
                }
            }
        }
        Ok(())
    }

    /// Removes what a failed checkpoint left (never a complete one).
    pub fn abandon(&self, pending: Pending) {
        if pending.dir.join(MANIFEST).exists() {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&pending.dir) {
            tracing::warn!(dir = %pending.dir.display(), error = %e, "could not remove a failed checkpoint");
        }
    }
}

/// Writes `MANIFEST.json` atomically: a temporary file, synced, renamed
/// over, and the directory synced, so a crash leaves either no manifest or
/// a whole one.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| StateError::corrupt(dir, format!("manifest not serializable: {e}")))?;
    let tmp = dir.join(format!(".{MANIFEST}.tmp"));
    let path = dir.join(MANIFEST);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StateError::io("writing", &path)(e)
    })
}

/// Bytes under `dir` (files counted in full, hard links included).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return 0;
    };
    listing
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Syncs `dir` itself, so the entries just made in it (the snapshot's
/// directory) survive a crash.  The files were synced by whoever wrote them:
/// [`crate::StateBackend::snapshot_to`] leaves its snapshot durable
/// (RocksDB syncs what it copies, and SST files are synced when written; the
/// memory backend syncs its file).  Syncing every hard-linked SST again cost
/// a fsync per file, most of a checkpoint's pause.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(StateError::io("syncing", dir))
}
