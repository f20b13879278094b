//! Durable state of a job: which backend holds it, how transforms map to
//! namespaces in it, restoring from a checkpoint, and taking checkpoints.
//!
//! A checkpoint is taken between two streaming epochs, when no bundle runs
//! and no data is in flight between stages (see `streaming/driver.rs`), so
//! it needs no barriers: the driver writes the snapshot entries of its own
//! structures (timers, GroupByKey buffers, deferred splittable-DoFn work,
//! source positions, sinks) into the backend beside the user state, and the
//! backend snapshots itself.  The manifest is written last and atomically.
//!
//! State is found again by *name*: each transform's unique name (or, for a
//! stage's runtime entries, the stage's name) owns a namespace, recorded in
//! the manifest.  A restored job that has no place for some of it fails,
//! listing what would be lost, unless `allow_non_restored_state` is set.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrobeam_proto::pipeline::v1::{state_spec::Spec, Components, ParDoPayload};
use ferrobeam_state::checkpoint::{
    self, CheckpointStore, Manifest, Snapshot, SnapshotKind, StateSpec, TransformEntry,
};
use ferrobeam_state::keys::{self, Namespace};
use ferrobeam_state::{BackendKind, StateBackend, StateError, WriteBatch};
use parking_lot::Mutex;
use prost::Message;

use crate::EngineError;

/// How a job keeps and checkpoints its state.
#[derive(Clone, Debug)]
pub struct DurabilityConfig {
    /// `None`: the backend of the snapshot restored from, else RocksDB when
    /// checkpointing, else memory.
    pub backend: Option<BackendKind>,
    pub checkpoint_dir: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    pub checkpoints_retained: usize,
    /// A checkpoint or savepoint (or a checkpoint root) to start from.
    pub restore_from: Option<PathBuf>,
    pub allow_non_restored_state: bool,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        Self {
            backend: None,
            checkpoint_dir: None,
            checkpoint_interval: Duration::from_secs(10),
            checkpoints_retained: 3,
            restore_from: None,
            allow_non_restored_state: false,
        }
    }
}

/// How long a due checkpoint waits at most for the backend's preparation.
const PREPARE_LIMIT: Duration = Duration::from_secs(2);
/// How often an idle job asks whether the preparation is done.
const PREPARE_POLL: Duration = Duration::from_millis(20);

/// Under the checkpoint root: files being written that the next snapshot
/// will carry (not a `chk-` directory, so never taken for a checkpoint).
const SCRATCH_DIR: &str = "scratch";

/// Names (transform unique names, stage names) → namespaces in the backend.
#[derive(Default)]
pub struct Namespaces {
    inner: Mutex<(HashMap<String, Namespace>, Namespace)>,
}

impl Namespaces {
    fn restored(names: impl IntoIterator<Item = (String, Namespace)>) -> Self {
        let map: HashMap<String, Namespace> = names.into_iter().collect();
        let next = map.values().max().map_or(1, |n| n + 1);
        Self {
            inner: Mutex::new((map, next)),
        }
    }

    /// The namespace of `name`, handed out on first use.
    pub fn of(&self, name: &str) -> Namespace {
        let mut inner = self.inner.lock();
        if let Some(ns) = inner.0.get(name) {
            return *ns;
        }
        let ns = inner.1.max(1);
        inner.1 = ns + 1;
        inner.0.insert(name.to_owned(), ns);
        ns
    }

    pub fn all(&self) -> BTreeMap<String, Namespace> {
        self.inner
            .lock()
            .0
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// One piece of the engine's own state, saved at a checkpoint under the
/// name of what owns it.
pub struct RuntimeEntry {
    pub owner: String,
    pub name: &'static str,
    pub data: Bytes,
}

/// A request for a savepoint, from the job service.
pub struct SavepointRequest {
    pub directory: PathBuf,
    /// End the job once it is written.
    pub stop: bool,
    /// The manifest (JSON), or why the savepoint failed.
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// A job's state backend and, when checkpointing, its checkpoint store.
pub struct Durable {
    pub backend: Arc<dyn StateBackend>,
    pub namespaces: Arc<Namespaces>,
    /// What the job was restored from.
    pub restored: Option<Snapshot>,
    /// Runtime entries of the restored checkpoint not yet claimed by a stage.
    unclaimed: Mutex<BTreeMap<(String, String), Bytes>>,
    store: Option<CheckpointStore>,
    config: DurabilityConfig,
    job_name: String,
    /// User state specs of the pipeline, for manifests and coder checks.
    state_specs: BTreeMap<String, BTreeMap<String, StateSpec>>,
    next_checkpoint: Instant,
    /// When the backend was asked to prepare the due checkpoint.
    preparing_since: Option<Instant>,
}

impl Durable {
    /// Opens the job's backend in `state_dir`, restored from
    /// `config.restore_from`, else from the latest checkpoint in
    /// `config.checkpoint_dir` if there is one.
    pub fn open(
        config: &DurabilityConfig,
        job_name: &str,
        components: &Components,
        state_dir: PathBuf,
    ) -> Result<Self, EngineError> {
        let restored = match (&config.restore_from, &config.checkpoint_dir) {
            (Some(path), _) => Some(checkpoint::resolve(path)?),
            (None, Some(root)) => checkpoint::latest(root)?,
            (None, None) => None,
        };
        let state_specs = state_specs(components);
        let (backend, namespaces) = match &restored {
            None => (
                ferrobeam_state::open(
                    config
                        .backend
                        .unwrap_or(if config.checkpoint_dir.is_some() {
                            BackendKind::Rocksdb
                        } else {
                            BackendKind::Memory
                        }),
                    &state_dir,
                    None,
                )?,
                Namespaces::default(),
            ),
            Some(snapshot) => {
                check_compatible(snapshot, &state_specs, config.allow_non_restored_state)?;
                let kind = config.backend.unwrap_or(snapshot.manifest.backend);
                let backend = restore_backend(kind, snapshot, &state_dir)?;
                let namespaces = Namespaces::restored(
                    snapshot
                        .manifest
                        .transforms
                        .iter()
                        .map(|(name, t)| (name.clone(), t.namespace)),
                );
                (backend, namespaces)
            }
        };
        let mut unclaimed = BTreeMap::new();
        if restored.is_some() {
            let by_ns: HashMap<Namespace, String> =
                namespaces.all().into_iter().map(|(k, v)| (v, k)).collect();
            let mut bad = None;
            backend.scan_prefix(&[keys::RUNTIME], &mut |k, v| {
                match keys::parse_runtime_key(k).and_then(|(ns, n)| Some((by_ns.get(&ns)?, n))) {
                    Some((owner, name)) => {
                        unclaimed.insert((owner.clone(), name.to_owned()), v.clone());
                    }
                    None => bad = Some(format!("{k:?}")),
                }
                true
            })?;
            if let Some(key) = bad {
                return Err(StateError::Decode {
                    entry: key,
                    reason: "a runtime entry of no known namespace".into(),
                }
                .into());
            }
        }
        let store = match &config.checkpoint_dir {
            Some(root) => Some(CheckpointStore::open(root, config.checkpoints_retained)?),
            None => None,
        };
        Ok(Self {
            backend,
            namespaces: Arc::new(namespaces),
            restored,
            unclaimed: Mutex::new(unclaimed),
            store,
            config: config.clone(),
            job_name: job_name.to_owned(),
            state_specs,
            next_checkpoint: Instant::now() + config.checkpoint_interval,
            preparing_since: None,
        })
    }

    /// Takes the restored entry `name` of `owner`, if there is one.
    pub fn claim(&self, owner: &str, name: &str) -> Option<Bytes> {
        self.unclaimed
            .lock()
            .remove(&(owner.to_owned(), name.to_owned()))
    }

    /// After every stage claimed its entries: what is left has no place in
    /// this pipeline.  Fails, listing it, unless that was allowed.
    pub fn finish_restore(&self) -> Result<(), EngineError> {
        let left = std::mem::take(&mut *self.unclaimed.lock());
        if left.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = left.keys().map(|(o, n)| format!("{n} of '{o}'")).collect();
        if self.config.allow_non_restored_state {
            tracing::warn!(dropped = ?list, "state with no place in the new pipeline was dropped (--allow_non_restored_state)");
            // What such a stage kept in the backend goes too, or every
            // later checkpoint would carry it.
            for (owner, _) in left.keys() {
                let ns = self.namespaces.of(owner);
                self.backend.delete_prefix(&keys::gbk_values_prefix(ns))?;
                self.backend.delete_prefix(&keys::timers_prefix(ns))?;
            }
            return Ok(());
        }
        Err(EngineError::State(StateError::Incompatible {
            path: self.restored.as_ref().map(|s| s.dir.clone()).unwrap_or_default(),
            reason: format!(
                "this pipeline has no place for some of its state: {}. Restore the pipeline it came from, or pass --allow_non_restored_state to drop it",
                list.join(", ")
            ),
        }))
    }

    /// When the next periodic checkpoint is due (an idle job wakes for it).
    pub fn next_checkpoint_at(&self) -> Instant {
        match self.preparing_since {
            // Ask again soon whether the preparation is done.
            Some(_) => Instant::now() + PREPARE_POLL,
            None => self.next_checkpoint,
        }
    }

    /// The id the next checkpoint will have.
    pub fn next_checkpoint_id(&self) -> u64 {
        self.store.as_ref().map_or(0, CheckpointStore::next_id)
    }

    pub fn checkpointing(&self) -> bool {
        self.store.is_some()
    }

    /// Where a stage writes files that snapshots will carry (see
    /// [`checkpoint::add_files`]): beside the checkpoints, so they are on
    /// the same file system and a snapshot links them instead of copying.
    /// `None` without checkpoints.
    pub fn scratch_dir(&self) -> Result<Option<PathBuf>, EngineError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let dir = store.root().join(SCRATCH_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| StateError::Io {
            action: "creating",
            path: dir.clone(),
            source: e,
        })?;
        Ok(Some(dir))
    }

    /// The file `name` that the snapshot this job was restored from
    /// carries, if it does.
    pub fn restored_file(&self, name: &str) -> Option<PathBuf> {
        self.restored.as_ref()?.file(name)
    }

    /// Whether the next periodic checkpoint is due.  When its time comes,
    /// the backend first prepares (RocksDB flushes in the background) while
    /// epochs go on; the checkpoint is due once that is done, or after
    /// [`PREPARE_LIMIT`] at the latest.  The pause is then short.  (A
    /// backend error makes it due at once: the checkpoint reports it.)
    pub fn checkpoint_due(&mut self) -> bool {
        if self.store.is_none() || Instant::now() < self.next_checkpoint {
            return false;
        }
        let since = match self.preparing_since {
            Some(since) => since,
            None => {
                if self.backend.prepare_snapshot().is_err() {
                    return true;
                }
                *self.preparing_since.insert(Instant::now())
            }
        };
        since.elapsed() >= PREPARE_LIMIT || self.backend.snapshot_ready().unwrap_or(true)
    }

    /// Writes the runtime entries and snapshots the backend into a new
    /// checkpoint.  A failure removes the incomplete checkpoint and leaves
    /// earlier ones as they were.
    pub fn checkpoint(
        &mut self,
        entries: Vec<RuntimeEntry>,
        files: &[PathBuf],
    ) -> Result<Option<Manifest>, EngineError> {
        let started = Instant::now();
        // The checkpoint's total time counts its preparation too (during
        // which the job did not pause).
        let prepared = self.preparing_since.map_or(0, |t| {
            started.saturating_duration_since(t).as_millis() as u64
        });
        let pending = match self.store.as_mut() {
            Some(store) => store.begin()?,
            None => return Ok(None),
        };
        let result = self
            .write_snapshot(
                SnapshotKind::Checkpoint,
                pending.id,
                &pending.dir,
                entries,
                files,
                started,
            )
            .map(|mut m| {
                m.duration_ms += prepared;
                m
            });
        self.next_checkpoint = Instant::now() + self.config.checkpoint_interval;
        self.preparing_since = None;
        let store = self.store.as_ref().expect("checked above");
        match result.and_then(|m| Ok(store.commit(&pending, &m).map(|()| m)?)) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                store.abandon(pending);
                Err(e)
            }
        }
    }

    /// Writes a savepoint into `dir` (absent or empty): a snapshot like a
    /// checkpoint, outside any retention.  A failure removes what it wrote.
    pub fn savepoint(
        &mut self,
        dir: &std::path::Path,
        entries: Vec<RuntimeEntry>,
        files: &[PathBuf],
    ) -> Result<Manifest, EngineError> {
        let started = Instant::now();
        let existed = dir.exists();
        if existed
            && std::fs::read_dir(dir)
                .map_err(|e| StateError::Io {
                    action: "listing",
                    path: dir.to_path_buf(),
                    source: e,
                })?
                .next()
                .is_some()
        {
            return Err(StateError::Incompatible {
                path: dir.to_path_buf(),
                reason: "a savepoint goes into a new or empty directory, and this one is not empty"
                    .into(),
            }
            .into());
        }
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source: e,
        })?;
        let result = self
            .write_snapshot(SnapshotKind::Savepoint, 0, dir, entries, files, started)
            .and_then(|m| {
                checkpoint::write_manifest(dir, &m)?;
                Ok(m)
            });
        if result.is_err() {
            let _ = if existed {
                std::fs::read_dir(dir).map(|l| {
                    for e in l.flatten() {
                        let _ = std::fs::remove_dir_all(e.path())
                            .or_else(|_| std::fs::remove_file(e.path()));
                    }
                })
            } else {
                std::fs::remove_dir_all(dir)
            };
        }
        result
    }

    /// Runtime entries into the backend, the backend's snapshot into
    /// `dir/state` and `files` into `dir/files`, synced; returns the
    /// manifest to write.
    fn write_snapshot(
        &self,
        kind: SnapshotKind,
        id: u64,
        dir: &std::path::Path,
        entries: Vec<RuntimeEntry>,
        files: &[PathBuf],
        started: Instant,
    ) -> Result<Manifest, EngineError> {
        let mut runtime: BTreeMap<String, Vec<String>> = BTreeMap::new();
        self.backend.delete_prefix(&[keys::RUNTIME])?;
        let mut batch = WriteBatch::default();
        for e in entries {
            let ns = self.namespaces.of(&e.owner);
            batch.put(keys::runtime_key(ns, e.name), e.data);
            runtime.entry(e.owner).or_default().push(e.name.to_owned());
        }
        self.backend.write(batch)?;
        self.backend.snapshot_to(&dir.join(checkpoint::STATE_DIR))?;
        checkpoint::sync_dir(&dir.join(checkpoint::STATE_DIR))?;
        checkpoint::add_files(dir, files)?;
        checkpoint::sync_dir(dir)?;
        let mut manifest = self.manifest(kind, id, runtime);
        manifest.pause_ms = started.elapsed().as_millis() as u64;
        manifest.bytes = checkpoint::dir_bytes(dir);
        manifest.duration_ms = started.elapsed().as_millis() as u64;
        Ok(manifest)
    }

    fn manifest(
        &self,
        kind: SnapshotKind,
        id: u64,
        runtime: BTreeMap<String, Vec<String>>,
    ) -> Manifest {
        let transforms = self
            .namespaces
            .all()
            .into_iter()
            .map(|(name, namespace)| {
                let entry = TransformEntry {
                    namespace,
                    user_state: self.state_specs.get(&name).cloned().unwrap_or_default(),
                    runtime: runtime.get(&name).cloned().unwrap_or_default(),
                };
                (name, entry)
            })
            .collect();
        Manifest {
            format: checkpoint::FORMAT_VERSION,
            ferrobeam_version: env!("CARGO_PKG_VERSION").to_owned(),
            kind,
            id,
            job_name: self.job_name.clone(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            backend: self.backend.kind(),
            transforms,
            pause_ms: 0,
            duration_ms: 0,
            bytes: 0,
        }
    }
}

/// Transform id → unique name.
pub fn transform_names(components: &Components) -> HashMap<String, String> {
    components
        .transforms
        .iter()
        .map(|(id, t)| (id.clone(), t.unique_name.clone()))
        .collect()
}

/// Opens a backend of `kind` holding the snapshot's state: directly when the
/// kinds match, else by copying every entry across.
fn restore_backend(
    kind: BackendKind,
    snapshot: &Snapshot,
    state_dir: &std::path::Path,
) -> Result<Arc<dyn StateBackend>, EngineError> {
    if snapshot.manifest.backend == kind {
        return Ok(ferrobeam_state::open(
            kind,
            state_dir,
            Some(&snapshot.state_dir()),
        )?);
    }
    let from = ferrobeam_state::open_snapshot(snapshot.manifest.backend, &snapshot.state_dir())?;
    let to = ferrobeam_state::open(kind, state_dir, None)?;
    let mut batch = WriteBatch::default();
    let mut failed = None;
    from.scan_prefix(&[], &mut |k, v| {
        batch.put(k.to_vec(), v.clone());
        if batch.len() >= 10_000 {
            if let Err(e) = to.write(std::mem::take(&mut batch)) {
                failed = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    to.write(batch)?;
    Ok(to)
}

/// Every stateful ParDo's state ids with a description of their coders,
/// by transform unique name.
fn state_specs(components: &Components) -> BTreeMap<String, BTreeMap<String, StateSpec>> {
    let mut out = BTreeMap::new();
    for t in components.transforms.values() {
        let Some(spec) = &t.spec else { continue };
        if spec.urn != "beam:transform:pardo:v1" {
            continue;
        }
        let Ok(payload) = ParDoPayload::decode(spec.payload.as_ref()) else {
            continue;
        };
        let states: BTreeMap<String, StateSpec> = payload
            .state_specs
            .iter()
            .map(|(id, s)| {
                let coder = match &s.spec {
                    Some(Spec::ReadModifyWriteSpec(x)) => describe_coder(components, &x.coder_id),
                    Some(Spec::BagSpec(x)) => describe_coder(components, &x.element_coder_id),
                    Some(Spec::CombiningSpec(x)) => {
                        describe_coder(components, &x.accumulator_coder_id)
                    }
                    Some(Spec::SetSpec(x)) => describe_coder(components, &x.element_coder_id),
                    Some(Spec::OrderedListSpec(x)) => {
                        describe_coder(components, &x.element_coder_id)
                    }
                    Some(Spec::MapSpec(x)) => format!(
                        "map({}, {})",
                        describe_coder(components, &x.key_coder_id),
                        describe_coder(components, &x.value_coder_id)
                    ),
                    Some(Spec::MultimapSpec(x)) => format!(
                        "multimap({}, {})",
                        describe_coder(components, &x.key_coder_id),
                        describe_coder(components, &x.value_coder_id)
                    ),
                    None => "unknown".into(),
                };
                (id.clone(), StateSpec { coder })
            })
            .collect();
        if !states.is_empty() {
            out.insert(t.unique_name.clone(), states);
        }
    }
    out
}

/// A coder tree as text: its URN and its components' (pickled Python
/// coders carry their payload's length, which changes when the class does).
fn describe_coder(components: &Components, id: &str) -> String {
    let Some(c) = components.coders.get(id) else {
        return format!("missing coder {id}");
    };
    let spec = c.spec.as_ref();
    let urn = spec.map_or("?", |s| s.urn.as_str());
    let mut out = urn.to_owned();
    if urn == "beam:coders:python:pickled:v1" || urn == "beam:coder:custom_window:v1" {
        let payload = spec.map_or(&[][..], |s| s.payload.as_ref());
        out.push_str(&format!(
            "#{:016x}",
            ferrobeam_state::codec::fnv1a(payload, ferrobeam_state::codec::FNV_OFFSET)
        ));
    }
    if !c.component_coder_ids.is_empty() {
        let parts: Vec<String> = c
            .component_coder_ids
            .iter()
            .map(|p| describe_coder(components, p))
            .collect();
        out.push_str(&format!("({})", parts.join(", ")));
    }
    out
}

/// Refuses, before anything runs, a restore that would read state with a
/// different coder than it was written with, or drop user state the new
/// pipeline has no place for (unless allowed).
fn check_compatible(
    snapshot: &Snapshot,
    specs: &BTreeMap<String, BTreeMap<String, StateSpec>>,
    allow_non_restored: bool,
) -> Result<(), EngineError> {
    let mut changed = Vec::new();
    let mut orphaned = Vec::new();
    for (name, entry) in &snapshot.manifest.transforms {
        for (state_id, old) in &entry.user_state {
            match specs.get(name).and_then(|s| s.get(state_id)) {
                Some(new) if new.coder != old.coder => changed.push(format!(
                    "'{name}' state '{state_id}': written with {}, now read with {}",
                    old.coder, new.coder
                )),
                Some(_) => {}
                None if !allow_non_restored => {
                    orphaned.push(format!("'{name}' state '{state_id}'"))
                }
                None => {}
            }
        }
    }
    let incompatible = |reason: String| {
        EngineError::State(StateError::Incompatible {
            path: snapshot.dir.clone(),
            reason,
        })
    };
    if !changed.is_empty() {
        return Err(incompatible(format!(
            "state coders changed, which would corrupt the state: {}. Keep the old coders, or migrate the state in a new transform with a new name",
            changed.join("; ")
        )));
    }
    if !orphaned.is_empty() && !allow_non_restored {
        return Err(incompatible(format!(
            "this pipeline has no place for some of its user state: {}. Restore the pipeline it came from, or pass --allow_non_restored_state to drop it",
            orphaned.join(", ")
        )));
    }
    Ok(())
}
