//! The write-ahead log of a transactional sink: what one Kafka transaction
//! sent, kept until the transaction is committed.
//!
//! A transaction is committed only after the checkpoint that counts its
//! records is complete.  If the job dies in between, the restarted producer
//! fences the old one and the broker aborts that transaction: its records
//! are gone from Kafka, but the checkpoint says they were written.  The log,
//! synced and taken into the checkpoint, is where they are sent again from.
//! (Flink's sink instead resumes the dead producer's transaction through
//! internals of the Java client; librdkafka has no such door.)
//!
//! The format is a magic line, then frames of a little-endian `u32` length
//! and that many bytes; what a frame holds is the caller's business.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::KafkaIoError;

const MAGIC: &[u8; 8] = b"FBKWAL1\n";

fn io_error(action: &str, path: &Path, e: std::io::Error) -> KafkaIoError {
    KafkaIoError::Log(format!("{action} {}: {e}", path.display()))
}

/// A log being written.
pub struct WriteAheadLog {
    path: PathBuf,
    file: BufWriter<File>,
    frames: u64,
}

impl WriteAheadLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: PathBuf) -> Result<Self, KafkaIoError> {
        let file = File::create(&path).map_err(|e| io_error("creating", &path, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(MAGIC)
            .map_err(|e| io_error("writing", &path, e))?;
        Ok(Self {
            path,
            file,
            frames: 0,
        })
    }

    pub fn append(&mut self, frame: &[u8]) -> Result<(), KafkaIoError> {
        let len = u32::try_from(frame.len()).map_err(|_| {
            KafkaIoError::Log(format!("a {} byte record is too large", frame.len()))
        })?;
        self.file
            .write_all(&len.to_le_bytes())
            .and_then(|()| self.file.write_all(frame))
            .map_err(|e| io_error("writing", &self.path, e))?;
        self.frames += 1;
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), KafkaIoError> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_data())
            .map_err(|e| io_error("syncing", &self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Closes the log and deletes its file (its transaction committed).
    pub fn remove(self) -> Result<(), KafkaIoError> {
        let Self { path, file, .. } = self;
        drop(file);
        std::fs::remove_file(&path).map_err(|e| io_error("removing", &path, e))
    }
}

/// Calls `each` with every frame of the log at `path`, in order; returns
/// how many there were.  A log that ends inside a frame is corrupt (it was
/// synced whole before any checkpoint took it).
pub fn replay(
    path: &Path,
    mut each: impl FnMut(&[u8]) -> Result<(), KafkaIoError>,
) -> Result<u64, KafkaIoError> {
    let file = File::open(path).map_err(|e| io_error("opening", path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|e| io_error("reading", path, e))?;
    if &magic != MAGIC {
        return Err(KafkaIoError::Log(format!(
            "{} is not a ferrobeam Kafka transaction log",
            path.display()
        )));
    }
    let mut frame = Vec::new();
    let mut frames = 0;
    loop {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(frames),
            Err(e) => return Err(io_error("reading", path, e)),
        }
        frame.resize(u32::from_le_bytes(len) as usize, 0);
        r.read_exact(&mut frame).map_err(|e| {
            KafkaIoError::Log(format!(
                "{} ends inside record {frames}: {e}",
                path.display()
            ))
        })?;
        each(&frame)?;
        frames += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let mut log = WriteAheadLog::create(path.clone()).unwrap();
        for f in [&b"a"[..], b"", b"three"] {
            log.append(f).unwrap();
        }
        log.sync().unwrap();
        assert_eq!(log.frames(), 3);
        let mut seen = Vec::new();
        let n = replay(&path, |f| {
            seen.push(f.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen, vec![b"a".to_vec(), vec![], b"three".to_vec()]);
        log.remove().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_torn_or_foreign_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let mut log = WriteAheadLog::create(path.clone()).unwrap();
        log.append(b"whole").unwrap();
        log.append(b"torn record").unwrap();
        log.sync().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let e = replay(&path, |_| Ok(())).unwrap_err().to_string();
        assert!(e.contains("ends inside record 1"), "{e}");
        std::fs::write(&path, b"not a log at all").unwrap();
        let e = replay(&path, |_| Ok(())).unwrap_err().to_string();
        assert!(e.contains("not a ferrobeam Kafka transaction log"), "{e}");
    }
}
