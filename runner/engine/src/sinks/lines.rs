//! `ferrobeam.io.WriteLines`, run natively: UTF-8 lines into files that are
//! published (renamed into place) only when a checkpoint completes.
//!
//! Lines go to a hidden pending file (`.pending-<tag>-…`).  At a checkpoint
//! the file is closed and synced, and the checkpoint records it with the
//! name it will be published under (`part-<checkpoint>-<tag>-<run>-<n>.txt`).
//! Once the checkpoint's manifest is written the file is renamed.  So:
//!
//! * a crash before the manifest: restore goes back to the previous
//!   checkpoint, whose files are all published; pending files are deleted
//!   and their lines replayed;
//! * a crash after the manifest, before the rename: restore renames what
//!   that checkpoint recorded (renaming is idempotent by name).
//!
//! Without checkpointing, files are published as they close (once a
//! second, and at the end of the job).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrobeam_coders::varint::read_len;
use ferrobeam_state::codec::{fnv1a, Reader, Writer, FNV_OFFSET};
use ferrobeam_state::StateError;

use crate::wire::WireFormat;
use crate::EngineError;

const PENDING: &str = ".pending-";
/// Without checkpoints, how often the open file is published.
pub const ROLL_EVERY: Duration = Duration::from_secs(1);

pub struct LineSink {
    directory: PathBuf,
    /// Tells this sink's files from other sinks' in the same directory.
    tag: String,
    format: WireFormat,
    /// The open pending file: its name, number and writer.
    current: Option<(String, u64, BufWriter<std::fs::File>)>,
    /// Closed files waiting to be published: (pending name, final name).
    closed: Vec<(String, String)>,
    opened_at: Instant,
    /// Numbers files within one label.
    seq: u64,
    run: String,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |e| {
        EngineError::State(StateError::Io {
            action,
            path,
            source: e,
        })
    }
}

impl LineSink {
    /// A sink for the transform named `unique_name`, writing into `directory`.
    pub fn new(
        directory: &Path,
        unique_name: &str,
        format: WireFormat,
    ) -> Result<Self, EngineError> {
        std::fs::create_dir_all(directory).map_err(io("creating", directory))?;
        Ok(Self {
            directory: directory.to_path_buf(),
            tag: format!("{:08x}", fnv1a(unique_name.as_bytes(), FNV_OFFSET) as u32),
            format,
            current: None,
            closed: Vec::new(),
            opened_at: Instant::now(),
            seq: 0,
            run: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        })
    }

    /// The sink of a `LineSink` stage: its transform's unique name tells
    /// its files apart, its input port how to read elements.
    pub fn for_stage(
        components: &ferrobeam_proto::pipeline::v1::Components,
        transform_id: &str,
        input: &ferrobeam_graph::PortRef,
        directory: &Path,
    ) -> Result<Self, EngineError> {
        let name = components
            .transforms
            .get(transform_id)
            .map_or(transform_id, |t| t.unique_name.as_str());
        Self::new(
            directory,
            name,
            WireFormat::new(components, &input.coder_id)?,
        )
    }

    /// Appends each element's value as one line.
    pub fn write(&mut self, chunk: &Bytes) -> Result<(), EngineError> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let name = format!("{PENDING}{}-{}-{}.txt", self.tag, self.run, self.seq);
            self.seq += 1;
            let path = self.directory.join(&name);
            let file = std::fs::File::create(&path).map_err(io("creating", &path))?;
            self.current = Some((
                name,
                self.seq - 1,
                BufWriter::with_capacity(256 << 10, file),
            ));
            self.opened_at = Instant::now();
        }
        let (name, _, out) = self.current.as_mut().expect("opened above");
        let directory = &self.directory;
        let mut failed = None;
        self.format.for_each(chunk, |e| {
            // Values are str or bytes (checked at Prepare), length-prefixed
            // on the data plane.
            let (len, start) = read_len(chunk, e.value.start).map_err(|err| {
                EngineError::Internal(format!("WriteLines: undecodable element: {err}"))
            })?;
            let line = chunk.get(start..start + len).ok_or_else(|| {
                EngineError::Internal("WriteLines: element shorter than its length".into())
            })?;
            if let Err(err) = out.write_all(line).and_then(|()| out.write_all(b"\n")) {
                failed.get_or_insert(err);
            }
            Ok(())
        })?;
        match failed {
            Some(e) => Err(io("writing", &directory.join(name))(e)),
            None => Ok(()),
        }
    }

    /// Whether the open file is due to be published (no checkpoints).
    pub fn roll_due(&self) -> bool {
        self.current.is_some() && self.opened_at.elapsed() >= ROLL_EVERY
    }

    /// Closes and syncs the open file; it will be published under `label`.
    pub fn close(&mut self, label: &str) -> Result<(), EngineError> {
        let Some((pending, seq, out)) = self.current.take() else {
            return Ok(());
        };
        let path = self.directory.join(&pending);
        let file = out
            .into_inner()
            .map_err(|e| io("writing", &path)(e.into_error()))?;
        file.sync_all().map_err(io("syncing", &path))?;
        // The run id keeps names unique when checkpoint numbers start over
        // (a restore into another checkpoint directory): a rename must never
        // replace a file published before.
        self.closed.push((
            pending,
            format!("part-{label}-{}-{}-{seq}.txt", self.tag, self.run),
        ));
        Ok(())
    }

    /// Renames every closed file into place.
    pub fn publish(&mut self) -> Result<(), EngineError> {
        for (pending, published) in self.closed.drain(..) {
            let from = self.directory.join(&pending);
            std::fs::rename(&from, self.directory.join(&published))
                .map_err(io("publishing", &from))?;
        }
        std::fs::File::open(&self.directory)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", &self.directory))
    }

    /// The closed files a checkpoint must see published (see the module docs).
    pub fn save(&self, w: &mut Writer) {
        w.len(self.closed.len());
        for (pending, published) in &self.closed {
            w.str(pending).str(published);
        }
    }

    /// Reads what [`LineSink::save`] wrote and recovers from it.
    pub fn load(&mut self, r: &mut Reader) -> Result<(), EngineError> {
        let recorded = (0..r.len()?)
            .map(|_| Ok((r.string()?, r.string()?)))
            .collect::<Result<Vec<_>, StateError>>()?;
        self.recover(recorded)
    }

    /// At start: publishes what the checkpoint restored from recorded (if a
    /// crash came between its manifest and the rename) and deletes every
    /// other pending file of this sink (one job per directory), whose lines
    /// will be written again.
    pub fn recover(&mut self, recorded: Vec<(String, String)>) -> Result<(), EngineError> {
        for (pending, published) in recorded {
            let from = self.directory.join(&pending);
            if from.exists() {
                std::fs::rename(&from, self.directory.join(&published))
                    .map_err(io("publishing", &from))?;
            }
        }
        let prefix = format!("{PENDING}{}-", self.tag);
        let listing = std::fs::read_dir(&self.directory).map_err(io("listing", &self.directory))?;
        for entry in listing.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
            {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io("removing", &path))?;
            }
        }
        Ok(())
    }
}
