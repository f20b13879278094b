//! `ferrobeam checkpoint inspect DIR`: what a checkpoint or savepoint holds.
//!
//! Reads the manifest, then opens the snapshot read-only and counts, per
//! transform and state id, the cells (one per key and window) and their
//! bytes; counts the pending timers and GroupByKey values kept in the
//! backend (RocksDB); and lists the engine's own entries (buffers, sources,
//! sinks, in-memory timers) with their sizes.  Nothing in the directory is changed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ferrobeam_state::checkpoint::{self, SnapshotKind};
use ferrobeam_state::keys;

#[derive(Default, serde::Serialize)]
struct Usage {
    cells: u64,
    bytes: u64,
}

impl Usage {
    /// Counts an entry's bytes, and it as a cell if `cell`.
    fn add(&mut self, cell: bool, k: &[u8], v: &[u8]) {
        self.cells += u64::from(cell);
        self.bytes += (k.len() + v.len()) as u64;
    }
}

#[derive(serde::Serialize)]
struct Report {
    directory: String,
    kind: SnapshotKind,
    id: u64,
    job_name: String,
    backend: &'static str,
    created_unix_ms: i64,
    bytes: u64,
    pause_ms: u64,
    duration_ms: u64,
    /// transform → state id → usage.
    user_state: BTreeMap<String, BTreeMap<String, Usage>>,
    /// transform → pending timers kept in the backend (cells = timers).
    timers: BTreeMap<String, Usage>,
    /// GroupByKey → values buffered in the backend (cells = values).
    buffered: BTreeMap<String, Usage>,
    /// owner → entry → bytes.
    runtime: BTreeMap<String, BTreeMap<String, u64>>,
}

fn report(dir: &Path) -> Result<Report, String> {
    let snapshot = checkpoint::resolve(dir).map_err(|e| e.to_string())?;
    let m = &snapshot.manifest;
    let backend = ferrobeam_state::open_snapshot(m.backend, &snapshot.state_dir())
        .map_err(|e| e.to_string())?;
    let names: HashMap<keys::Namespace, &str> = m
        .transforms
        .iter()
        .map(|(name, t)| (t.namespace, name.as_str()))
        .collect();
    let name_of = |ns| {
        names
            .get(&ns)
            .map_or_else(|| format!("namespace {ns}"), |n| n.to_string())
    };
    let mut user_state: BTreeMap<String, BTreeMap<String, Usage>> = BTreeMap::new();
    let mut runtime: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut timers: BTreeMap<String, Usage> = BTreeMap::new();
    let mut buffered: BTreeMap<String, Usage> = BTreeMap::new();
    backend
        .scan_prefix(&[], &mut |k, v| {
            if let Some(p) = keys::parse_user_state_key(k) {
                let usage = user_state
                    .entry(name_of(p.ns))
                    .or_default()
                    .entry(String::from_utf8_lossy(p.state_id).into_owned())
                    .or_default();
                usage.add(true, k, v);
            } else if let Some((ns, rest)) = keys::parse_timers_key(k) {
                let usage = timers.entry(name_of(ns)).or_default();
                usage.add(rest.first() == Some(&keys::TIMER_IDENTITY), k, v);
            } else if let Some(ns) = keys::parse_gbk_values_key(k) {
                let usage = buffered.entry(name_of(ns)).or_default();
                usage.add(true, k, v);
            } else if let Some((ns, entry)) = keys::parse_runtime_key(k) {
                runtime
                    .entry(name_of(ns))
                    .or_default()
                    .insert(entry.to_owned(), v.len() as u64);
            }
            true
        })
        .map_err(|e| e.to_string())?;
    Ok(Report {
        directory: snapshot.dir.display().to_string(),
        kind: m.kind,
        id: m.id,
        job_name: m.job_name.clone(),
        backend: m.backend.name(),
        created_unix_ms: m.created_unix_ms,
        bytes: m.bytes,
        pause_ms: m.pause_ms,
        duration_ms: m.duration_ms,
        user_state,
        timers,
        buffered,
        runtime,
    })
}

/// Prints the report (as text, or JSON with `json`); returns the exit code.
pub fn inspect(dir: &Path, json: bool) -> i32 {
    let r = match report(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrobeam: {e}");
            return 1;
        }
    };
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("ferrobeam: {e}");
                return 1;
            }
        }
        return 0;
    }
    let kind = match r.kind {
        SnapshotKind::Checkpoint => "checkpoint",
        SnapshotKind::Savepoint => "savepoint",
    };
    println!("{kind} {} of job '{}' at {}", r.id, r.job_name, r.directory);
    println!(
        "backend {}, {} bytes on disk, processing paused {} ms, written in {} ms",
        r.backend, r.bytes, r.pause_ms, r.duration_ms
    );
    println!("\nuser state (transform / state id: cells = keys x windows, bytes)");
    if r.user_state.is_empty() {
        println!("  (none)");
    }
    for (transform, states) in &r.user_state {
        for (state, u) in states {
            println!(
                "  {transform} / {state}: {} cells, {} bytes",
                u.cells, u.bytes
            );
        }
    }
    if !r.timers.is_empty() {
        println!("\ntimers (transform: pending timers, bytes)");
        for (transform, u) in &r.timers {
            println!("  {transform}: {} timers, {} bytes", u.cells, u.bytes);
        }
    }
    if !r.buffered.is_empty() {
        println!("\nGroupByKey buffers (transform: values waiting for a pane, bytes)");
        for (transform, u) in &r.buffered {
            println!("  {transform}: {} values, {} bytes", u.cells, u.bytes);
        }
    }
    println!("\nengine state (owner / entry: bytes)");
    for (owner, entries) in &r.runtime {
        for (entry, bytes) in entries {
            println!("  {owner} / {entry}: {bytes} bytes");
        }
    }
    0
}
