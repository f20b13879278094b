//! The hybrid source's first part: history from files, read before the
//! Kafka head takes over at a cut-over, with no gap and no duplicate.
//!
//! Files are JSON lines (one object a line: a timestamp field, optional key
//! and value fields, and optionally `topic`, `partition` and `offset`, as
//! an archive of the topic written by a connector has them) or text lines
//! `TIMESTAMP<TAB>VALUE`.  A timestamp is epoch millis or RFC 3339.
//!
//! The cut-over is exact per partition.  Kafka starts each partition at an
//! offset (the first at or after the cut-over time, or just after the last
//! offset the files hold for it); a file record that says which partition
//! and offset it was is read from the files only if it lies before that
//! offset.  A record that does not say is read if its timestamp is before
//! the cut-over time.
//!
//! Watermark: files are read in the order of their earliest timestamp
//! (found by a first pass over them), so the earliest timestamp of the file
//! being read bounds everything still to come from the files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{BackfillConfig, BackfillFormat};
use crate::error::KafkaIoError;
use crate::record::Record;

/// Offsets per (topic, partition).
pub type PartitionOffsets = HashMap<(String, i32), i64>;

/// A record as a file line gives it.
#[derive(Debug, PartialEq)]
struct Line {
    timestamp: i64,
    key: Option<Bytes>,
    value: Bytes,
    /// Topic (if the line names one), partition and offset it had in Kafka.
    place: Option<(Option<String>, i32, i64)>,
}

fn bad_line(path: &std::path::Path, at: u64, why: impl std::fmt::Display) -> KafkaIoError {
    KafkaIoError::Backfill(format!("{} (the line at byte {at}): {why}", path.display()))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch millis of an RFC 3339 timestamp (`2026-11-22T10:00:00.250Z`,
/// `...+01:00`; a space may stand for the `T`).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = s.get(start..i)?;
        if digits.is_empty() {
            return None;
        }
        let first3: String = digits.chars().chain("000".chars()).take(3).collect();
        millis = first3.parse::<i64>().ok()?;
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi - offset_minutes) * 60_000 + sec * 1000 + millis)
}

fn parse_timestamp(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| parse_rfc3339(s.trim())),
        _ => None,
    }
}

/// A JSON field's bytes: a string's UTF-8, anything else as JSON.
fn field_bytes(v: &serde_json::Value) -> Bytes {
    match v {
        serde_json::Value::String(s) => Bytes::copy_from_slice(s.as_bytes()),
        other => Bytes::from(other.to_string()),
    }
}

fn parse_line(config: &BackfillConfig, text: &str) -> Result<Line, String> {
    match config.format {
        BackfillFormat::Text => {
            let (ts, value) = text
                .split_once('\t')
                .ok_or("expected TIMESTAMP<TAB>VALUE")?;
            let timestamp = ts
                .trim()
                .parse::<i64>()
                .ok()
                .or_else(|| parse_rfc3339(ts.trim()))
                .ok_or_else(|| format!("{ts:?} is not epoch millis or an RFC 3339 timestamp"))?;
            Ok(Line {
                timestamp,
                key: None,
                value: Bytes::copy_from_slice(value.as_bytes()),
                place: None,
            })
        }
        BackfillFormat::Jsonl => {
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
            let obj = v.as_object().ok_or("not a JSON object")?;
            let field = &config.timestamp_field;
            let timestamp = obj
                .get(field)
                .ok_or_else(|| format!("no {field:?} field"))
                .and_then(|t| {
                    parse_timestamp(t).ok_or_else(|| {
                        format!("{field:?} is {t}: not epoch millis or an RFC 3339 timestamp")
                    })
                })?;
            let key = match &config.key_field {
                Some(k) => obj.get(k).filter(|v| !v.is_null()).map(field_bytes),
                None => None,
            };
            let value = match &config.value_field {
                Some(f) => obj.get(f).map_or_else(Bytes::new, field_bytes),
                None => Bytes::copy_from_slice(text.as_bytes()),
            };
            let int = |name: &str| obj.get(name).and_then(serde_json::Value::as_i64);
            let place = match (int("partition"), int("offset")) {
                (Some(p), Some(o)) => {
                    let p = i32::try_from(p).map_err(|_| format!("partition {p} out of range"))?;
                    let topic = obj.get("topic").and_then(|t| t.as_str()).map(str::to_owned);
                    Some((topic, p, o))
                }
                _ => None,
            };
            Ok(Line {
                timestamp,
                key,
                value,
                place,
            })
        }
    }
}

/// What the first pass learns of a file.
#[derive(Clone, Debug)]
struct FileSummary {
    path: PathBuf,
    earliest: i64,
}

/// The files a pattern names, in name order.
fn list_files(pattern: &str) -> Result<Vec<PathBuf>, KafkaIoError> {
    let paths = glob::glob(pattern)
        .map_err(|e| KafkaIoError::Backfill(format!("bad file pattern {pattern:?}: {e}")))?;
    let mut out = Vec::new();
    for p in paths {
        let p = p.map_err(|e| KafkaIoError::Backfill(format!("listing {pattern:?}: {e}")))?;
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Calls `each` with every non-empty line of `path` from byte `from` and
/// the byte offset where it starts, until `each` says stop.
fn for_each_line(
    path: &std::path::Path,
    from: u64,
    mut each: impl FnMut(u64, &str) -> Result<bool, KafkaIoError>,
) -> Result<(), KafkaIoError> {
    let mut f = File::open(path)
        .map_err(|e| KafkaIoError::Backfill(format!("opening {}: {e}", path.display())))?;
    f.seek(SeekFrom::Start(from))
        .map_err(|e| KafkaIoError::Backfill(format!("seeking in {}: {e}", path.display())))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut pos = from;
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = r
            .read_line(&mut buf)
            .map_err(|e| KafkaIoError::Backfill(format!("reading {}: {e}", path.display())))?;
        if n == 0 {
            return Ok(());
        }
        let start = pos;
        pos += n as u64;
        let line = buf.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if !each(start, line)? {
            return Ok(());
        }
    }
}

/// Where a backfill is, for a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackfillPosition {
    pub done: bool,
    /// Files read to their end.
    pub finished: Vec<String>,
    /// The file being read and the byte offset of its next line.
    pub current: Option<(String, u64)>,
    /// Kafka's start offset of each partition (the cut-over).
    pub cut: Vec<(String, i32, i64)>,
}

/// A running backfill.
pub struct Backfill {
    config: BackfillConfig,
    /// Files still to read, the current one first, by earliest timestamp.
    files: Vec<FileSummary>,
    /// Byte offset of the next line of `files[0]`.
    offset: u64,
    finished: Vec<String>,
    /// Kafka's start offset per (topic, partition).
    cut: PartitionOffsets,
    /// The topic of a record that names none.
    default_topic: Arc<str>,
    /// The latest timestamp read: where the watermark is once done.
    latest: i64,
}

/// The first pass: each file's earliest timestamp and the highest offset
/// it holds of each partition.
fn survey(
    config: &BackfillConfig,
    default_topic: &str,
    files: Vec<PathBuf>,
    resume: Option<&(String, u64)>,
) -> Result<(Vec<FileSummary>, PartitionOffsets), KafkaIoError> {
    let mut summaries = Vec::new();
    let mut highest: HashMap<(String, i32), i64> = HashMap::new();
    for path in files {
        let from = match resume {
            Some((p, o)) if *p == path.to_string_lossy() => *o,
            _ => 0,
        };
        let mut earliest = i64::MAX;
        for_each_line(&path, from, |at, text| {
            let line = parse_line(config, text).map_err(|e| bad_line(&path, at, e))?;
            earliest = earliest.min(line.timestamp);
            if let Some((topic, p, o)) = line.place {
                let topic = topic.unwrap_or_else(|| default_topic.to_owned());
                let h = highest.entry((topic, p)).or_insert(o);
                *h = (*h).max(o);
            }
            Ok(true)
        })?;
        summaries.push(FileSummary { path, earliest });
    }
    // Ties keep name order (the sort is stable).
    summaries.sort_by_key(|f| f.earliest);
    Ok((summaries, highest))
}

impl Backfill {
    /// Surveys the files.  `saved`: where a checkpoint left the backfill.
    /// Returns the backfill and, for an offset cut-over (no cut-over time),
    /// the offset after the last one the files hold of each partition.
    pub fn open(
        config: BackfillConfig,
        default_topic: &str,
        saved: Option<&BackfillPosition>,
    ) -> Result<(Self, PartitionOffsets), KafkaIoError> {
        let finished: Vec<String> = saved.map(|s| s.finished.clone()).unwrap_or_default();
        let resume = saved.and_then(|s| s.current.as_ref());
        let files: Vec<PathBuf> = list_files(&config.files)?
            .into_iter()
            .filter(|p| !finished.contains(&p.to_string_lossy().into_owned()))
            .collect();
        if files.is_empty() && saved.is_none() {
            return Err(KafkaIoError::Backfill(format!(
                "no file matches {:?}",
                config.files
            )));
        }
        let (mut files, highest) = survey(&config, default_topic, files, resume)?;
        let mut offset = 0;
        if let Some((path, at)) = resume {
            // The file being read stays first: it was chosen before the others.
            if let Some(i) = files.iter().position(|f| f.path.to_string_lossy() == *path) {
                let f = files.remove(i);
                files.insert(0, f);
                offset = *at;
            }
        }
        let after_last = highest.into_iter().map(|(k, o)| (k, o + 1)).collect();
        let cut = saved
            .map(|s| {
                s.cut
                    .iter()
                    .map(|(t, p, o)| ((t.clone(), *p), *o))
                    .collect()
            })
            .unwrap_or_default();
        Ok((
            Self {
                config,
                files,
                offset,
                finished,
                cut,
                default_topic: default_topic.into(),
                latest: i64::MIN / 1000,
            },
            after_last,
        ))
    }

    /// Kafka's start offset of each partition: file records at or after
    /// it are Kafka's to read.
    pub fn set_cut(&mut self, cut: PartitionOffsets) {
        self.cut = cut;
    }

    pub fn is_done(&self) -> bool {
        self.files.is_empty()
    }

    /// Everything still to come from the files is at or after this; once
    /// done, the latest timestamp read.
    pub fn watermark(&self) -> i64 {
        self.files.first().map_or(self.latest, |f| f.earliest)
    }

    fn wanted(&self, line: &Line) -> bool {
        match &line.place {
            Some((topic, p, o)) => {
                let topic = topic.as_deref().unwrap_or(&self.default_topic);
                match self.cut.get(&(topic.to_owned(), *p)) {
                    Some(start) => *o < *start,
                    // A partition Kafka does not read: the files are all of it.
                    None => true,
                }
            }
            None => self.config.cutover_time.is_none_or(|t| line.timestamp < t),
        }
    }

    fn record(&self, line: Line) -> Record {
        let (topic, partition, offset) = match line.place {
            Some((t, p, o)) => (
                t.map_or_else(|| self.default_topic.clone(), Arc::from),
                p,
                o,
            ),
            None => (self.default_topic.clone(), -1, -1),
        };
        Record {
            partition_index: usize::MAX,
            topic,
            partition,
            offset,
            kafka_timestamp: Some(line.timestamp),
            timestamp_type: 0,
            key: line.key,
            value: Some(line.value),
            headers: Vec::new(),
        }
    }

    /// Emits up to `max` file records before the cut-over, with their
    /// timestamps; returns how many.
    pub fn take(
        &mut self,
        max: usize,
        mut emit: impl FnMut(&Record, i64),
    ) -> Result<usize, KafkaIoError> {
        let mut n = 0;
        while n < max {
            let Some(file) = self.files.first().cloned() else {
                break;
            };
            let mut full_at = None;
            for_each_line(&file.path, self.offset, |at, text| {
                if n == max {
                    full_at = Some(at);
                    return Ok(false);
                }
                let line =
                    parse_line(&self.config, text).map_err(|e| bad_line(&file.path, at, e))?;
                if self.wanted(&line) {
                    let t = line.timestamp;
                    self.latest = self.latest.max(t);
                    emit(&self.record(line), t);
                    n += 1;
                }
                Ok(true)
            })?;
            if let Some(at) = full_at {
                // The next take starts at the line this one stopped in front of.
                self.offset = at;
                break;
            }
            tracing::info!(file = %file.path.display(), "backfill: file read");
            self.finished.push(file.path.to_string_lossy().into_owned());
            self.files.remove(0);
            self.offset = 0;
        }
        Ok(n)
    }

    /// Where the backfill is.
    pub fn position(&self) -> BackfillPosition {
        BackfillPosition {
            done: self.is_done(),
            finished: self.finished.clone(),
            current: self
                .files
                .first()
                .map(|f| (f.path.to_string_lossy().into_owned(), self.offset)),
            cut: self
                .cut
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, *o))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        files: &std::path::Path,
        format: BackfillFormat,
        cutover_time: Option<i64>,
    ) -> BackfillConfig {
        BackfillConfig {
            files: files.join("*").to_string_lossy().into_owned(),
            format,
            timestamp_field: "ts".into(),
            key_field: Some("k".into()),
            value_field: None,
            cutover_time,
        }
    }

    fn all(b: &mut Backfill, step: usize) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        loop {
            let n = b
                .take(step, |r, t| {
                    out.push((
                        String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
                        t,
                    ))
                })
                .unwrap();
            if n == 0 && b.is_done() {
                return out;
            }
        }
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-22T10:00:00.250Z"),
            Some(1_795_341_600_250)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29 23:59:59-05:30"),
            Some(951_888_599_000)
        );
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn offsets_cut_exactly_and_a_resume_neither_skips_nor_repeats() {
        let dir = tempfile::tempdir().unwrap();
        // Two files, the later-named one earlier in time: read first.
        let line = |o: i64, ts: i64| {
            format!("{{\"partition\":0,\"offset\":{o},\"ts\":{ts},\"k\":\"a\"}}\n")
        };
        let b: String = (5..10).map(|o| line(o, 100 + o)).collect();
        let a: String = (0..5).map(|o| line(o, o)).collect();
        std::fs::write(dir.path().join("b.jsonl"), b).unwrap();
        std::fs::write(dir.path().join("a.jsonl"), format!("{a}\n")).unwrap();
        let (mut bf, after_last) =
            Backfill::open(config(dir.path(), BackfillFormat::Jsonl, None), "t", None).unwrap();
        assert_eq!(after_last.get(&("t".to_owned(), 0)), Some(&10));
        // Kafka starts at offset 8: the files give 0..8.
        bf.set_cut(HashMap::from([(("t".to_owned(), 0), 8)]));
        assert_eq!(bf.watermark(), 0);
        let mut first = Vec::new();
        assert_eq!(bf.take(3, |r, t| first.push((r.offset, t))).unwrap(), 3);
        assert_eq!(first, vec![(0, 0), (1, 1), (2, 2)]);
        // A restore from here reads on from offset 3.
        let saved = bf.position();
        assert!(!saved.done);
        let (mut resumed, _) = Backfill::open(
            config(dir.path(), BackfillFormat::Jsonl, None),
            "t",
            Some(&saved),
        )
        .unwrap();
        let rest = all(&mut resumed, 2);
        let offsets: Vec<i64> = rest
            .iter()
            .map(|(v, _)| {
                serde_json::from_str::<serde_json::Value>(v).unwrap()["offset"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(offsets, vec![3, 4, 5, 6, 7]);
        assert_eq!(resumed.watermark(), 107, "done: the latest timestamp read");
        assert!(resumed.position().done);
    }

    #[test]
    fn text_lines_before_the_cutover_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("h.txt"),
            "1000\tx\n1970-01-01T00:00:02Z\ty\n3000\tz\n",
        )
        .unwrap();
        let (mut bf, _) = Backfill::open(
            config(dir.path(), BackfillFormat::Text, Some(3000)),
            "t",
            None,
        )
        .unwrap();
        assert_eq!(
            all(&mut bf, 10),
            vec![("x".to_owned(), 1000), ("y".to_owned(), 2000)]
        );
    }

    #[test]
    fn a_bad_line_names_its_file_and_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("h.jsonl"),
            "{\"ts\": 1}\n{\"ts\": \"soon\"}\n",
        )
        .unwrap();
        let e = Backfill::open(
            config(dir.path(), BackfillFormat::Jsonl, Some(5)),
            "t",
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("h.jsonl (the line at byte 10)") && e.contains("\"soon\""),
            "{e}"
        );
        let none = Backfill::open(
            config(&dir.path().join("nothing"), BackfillFormat::Jsonl, None),
            "t",
            None,
        );
        assert!(none.err().unwrap().to_string().contains("no file matches"));
    }
}
