//! The same behaviour from both backends, and checkpoints on disk.

use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_state::checkpoint::{self, CheckpointStore, Manifest, SnapshotKind};
use ferrobeam_state::{open, open_snapshot, BackendKind, StateBackend, StateError, WriteBatch};

fn kinds() -> [BackendKind; 2] {
    [BackendKind::Memory, BackendKind::Rocksdb]
}

fn fill(b: &dyn StateBackend) {
    let mut batch = WriteBatch::default();
    for i in 0..100u32 {
        let prefix = if i % 2 == 0 { b"a" } else { b"b" };
        let mut key = prefix.to_vec();
        key.extend_from_slice(&i.to_be_bytes());
        batch.put(key, Bytes::from(format!("v{i}")));
    }
    b.write(batch).unwrap();
}

fn count(b: &dyn StateBackend, prefix: &[u8]) -> usize {
    let mut n = 0;
    b.scan_prefix(prefix, &mut |_, _| {
        n += 1;
        true
    })
    .unwrap();
    n
}

#[test]
fn put_get_scan_delete() {
    for kind in kinds() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(kind, &tmp.path().join("db"), None).unwrap();
        fill(b.as_ref());
        assert_eq!(
            b.get(b"a\0\0\0\x02").unwrap().as_deref(),
            Some(&b"v2"[..]),
            "{kind:?}"
        );
        assert_eq!(b.get(b"nope").unwrap(), None);
        assert_eq!(count(b.as_ref(), b"a"), 50, "{kind:?}");
        assert_eq!(count(b.as_ref(), b""), 100);
        let mut batch = WriteBatch::default();
        batch.delete(b"a\0\0\0\x02".to_vec());
        b.write(batch).unwrap();
        assert_eq!(b.get(b"a\0\0\0\x02").unwrap(), None);
        assert_eq!(b.delete_prefix(b"b").unwrap(), 50);
        assert_eq!(count(b.as_ref(), b""), 49, "{kind:?}");
    }
}

#[test]
fn snapshots_restore_and_stay_untouched() {
    for kind in kinds() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(kind, &tmp.path().join("db"), None).unwrap();
        fill(b.as_ref());
        let snap = tmp.path().join("snap");
        b.snapshot_to(&snap).unwrap();
        // Later writes are not in the snapshot.
        b.delete_prefix(b"a").unwrap();
        drop(b);
        let before = checkpoint::dir_bytes(&snap);
        let restored = open(kind, &tmp.path().join("db2"), Some(&snap)).unwrap();
        assert_eq!(count(restored.as_ref(), b""), 100, "{kind:?}");
        // Writing to the restored backend leaves the snapshot as it was.
        restored.delete_prefix(b"").unwrap();
        restored.snapshot_to(&tmp.path().join("snap2")).unwrap();
        drop(restored);
        assert_eq!(checkpoint::dir_bytes(&snap), before);
        let again = open_snapshot(kind, &snap).unwrap();
        assert_eq!(count(again.as_ref(), b""), 100, "{kind:?}");
    }
}

#[test]
fn a_damaged_memory_snapshot_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let b = open(BackendKind::Memory, tmp.path(), None).unwrap();
    fill(b.as_ref());
    let snap = tmp.path().join("snap");
    b.snapshot_to(&snap).unwrap();
    let file = snap.join(ferrobeam_state::memory::SNAPSHOT_FILE);
    let mut raw = std::fs::read(&file).unwrap();
    raw[40] ^= 0xff;
    std::fs::write(&file, &raw).unwrap();
    let err = open(BackendKind::Memory, tmp.path(), Some(&snap))
        .err()
        .unwrap();
    assert!(err.to_string().contains("checksum"), "{err}");
    std::fs::write(&file, &raw[..raw.len() / 2]).unwrap();
    let err = open(BackendKind::Memory, tmp.path(), Some(&snap))
        .err()
        .unwrap();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
}

fn manifest(id: u64) -> Manifest {
    Manifest {
        format: checkpoint::FORMAT_VERSION,
        ferrobeam_version: "test".into(),
        kind: SnapshotKind::Checkpoint,
        id,
        job_name: "job".into(),
        created_unix_ms: 0,
        backend: BackendKind::Memory,
        transforms: Default::default(),
        pause_ms: 0,
        duration_ms: 0,
        bytes: 0,
    }
}

fn take(store: &mut CheckpointStore, b: &Arc<dyn StateBackend>) -> u64 {
    let pending = store.begin().unwrap();
    b.snapshot_to(&pending.state_dir()).unwrap();
    store.commit(&pending, &manifest(pending.id)).unwrap();
    pending.id
}

#[test]
fn checkpoints_are_retained_and_the_latest_complete_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("chk");
    let b = open(BackendKind::Memory, tmp.path(), None).unwrap();
    let mut store = CheckpointStore::open(&root, 2).unwrap();
    for _ in 0..4 {
        take(&mut store, &b);
    }
    let names = |root: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&root), ["chk-000003", "chk-000004"]);
    // A checkpoint that never finished is skipped by restore...
    let failed = store.begin().unwrap();
    assert_eq!(checkpoint::latest(&root).unwrap().unwrap().manifest.id, 4);
    store.abandon(failed);
    assert_eq!(names(&root), ["chk-000003", "chk-000004"]);
    // ...and a reopened store numbers after what is there.
    let mut reopened = CheckpointStore::open(&root, 2).unwrap();
    assert_eq!(take(&mut reopened, &b), 5);
    assert_eq!(checkpoint::resolve(&root).unwrap().manifest.id, 5);
}

#[test]
fn missing_and_corrupt_checkpoints_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = checkpoint::resolve(&tmp.path().join("nowhere")).unwrap_err();
    assert!(matches!(err, StateError::Missing(_)), "{err}");
    assert!(err.to_string().contains("nowhere"));
    let root = tmp.path().join("chk");
    let b = open(BackendKind::Memory, tmp.path(), None).unwrap();
    let mut store = CheckpointStore::open(&root, 3).unwrap();
    take(&mut store, &b);
    let dir = root.join("chk-000001");
    std::fs::write(dir.join(checkpoint::MANIFEST), b"{not json").unwrap();
    let err = checkpoint::resolve(&root).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("chk-000001"), "{err}");
    let mut m = manifest(1);
    m.format = 99;
    checkpoint::write_manifest(&dir, &m).unwrap();
    let err = checkpoint::resolve(&dir).unwrap_err();
    assert!(err.to_string().contains("format 99"), "{err}");
}
