//! A slice's output log: written by the shim ([`LogWriter`]), read from an offset
//! ([`read`]) and followed ([`follow`]) by the rubelet for `ructl logs`.
//!
//! The log is a sequence of segment files `output.<start>.log` in the slice dir, `<start>`
//! being the offset of the segment's first byte in the whole output. A segment grows to the
//! size cap, then the next begins; only the newest `files` segments are kept. Offsets are
//! therefore stable across rotation: a reader asking for bytes that were rotated away gets the
//! oldest bytes still there, and the offset they start at.
//!
//! Nothing here knows about processes beyond asking [`crate::spec::read`] whether more output
//! can come.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::Stream;

use crate::Error;
use crate::spec::{self, ShimState};

/// Segments in `dir`, oldest first: (start offset, path).
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let Some(start) = name
            .to_str()
            .and_then(|n| n.strip_prefix("output."))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((start, entry.path()));
    }
    found.sort();
    Ok(found)
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("output.{start}.log"))
}

/// Appends to a slice's log, rotating at `file_bytes` and keeping `files` segments.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    file_bytes: u64,
    files: usize,
    file: File,
    start: u64,
    len: u64,
}

impl LogWriter {
    /// Continues the newest segment in `dir`, or begins at offset 0. A cap of 0 means 1 MiB;
    /// at least one file is kept.
    pub fn open(dir: &Path, file_bytes: u64, files: u32) -> Result<LogWriter, Error> {
        let file_bytes = if file_bytes == 0 { 1 << 20 } else { file_bytes };
        let start = segments(dir)?.last().map_or(0, |(start, _)| *start);
        let path = segment_path(dir, start);
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let len = file.metadata().map_err(Error::io(&path))?.len();
        Ok(LogWriter {
            dir: dir.to_owned(),
            file_bytes,
            files: files.max(1) as usize,
            file,
            start,
            len,
        })
    }

    /// Offset of the next byte written.
    pub fn offset(&self) -> u64 {
        self.start + self.len
    }

    pub fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            if self.len >= self.file_bytes {
                self.rotate()?;
            }
            let room = (self.file_bytes - self.len).min(data.len() as u64) as usize;
            let path = segment_path(&self.dir, self.start);
            self.file
                .write_all(&data[..room])
                .map_err(Error::io(&path))?;
            self.len += room as u64;
            data = &data[room..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), Error> {
        self.start += self.len;
        self.len = 0;
        let path = segment_path(&self.dir, self.start);
        self.file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let all = segments(&self.dir)?;
        for (_, old) in all.iter().take(all.len().saturating_sub(self.files)) {
            match std::fs::remove_file(old) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(Error::io(old)(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Bytes of a log and where they start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogChunk {
    /// Offset of `data[0]`: the offset asked for, or later when that was rotated away.
    pub offset: u64,
    pub data: Vec<u8>,
}

impl LogChunk {
    /// Where the next read should start.
    pub fn next(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// Up to `max` bytes of the log in slice dir `dir` from `offset`, across segments.
///
/// # Errors
/// [`Error::Io`] when a segment cannot be read.
pub fn read(dir: &Path, offset: u64, max: usize) -> Result<LogChunk, Error> {
    // A segment may be removed between listing and opening (rotation): list again, once.
    for _ in 0..2 {
        match read_once(dir, offset, max) {
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => continue,
            other => return other,
        }
    }
    read_once(dir, offset, max)
}

fn read_once(dir: &Path, offset: u64, max: usize) -> Result<LogChunk, Error> {
    let segments = segments(dir)?;
    let mut chunk = LogChunk {
        offset,
        data: Vec::new(),
    };
    if let Some((first, _)) = segments.first() {
        chunk.offset = offset.max(*first);
    }
    for (i, (start, path)) in segments.iter().enumerate() {
        let end = segments.get(i + 1).map(|(next, _)| *next);
        let at = chunk.next();
        if end.is_some_and(|end| end <= at) || *start > at {
            continue;
        }
        let mut file = File::open(path).map_err(Error::io(path))?;
        file.seek(SeekFrom::Start(at - start))
            .map_err(Error::io(path))?;
        let want = max - chunk.data.len();
        let limit = end.map_or(want as u64, |end| (end - at).min(want as u64));
        file.take(limit)
            .read_to_end(&mut chunk.data)
            .map_err(Error::io(path))?;
        if chunk.data.len() >= max {
            break;
        }
    }
    Ok(chunk)
}

/// Follows the log of slice dir `dir` from `offset`: yields each new chunk as it is written,
/// polling every `poll`, and ends once the shim has exited and everything it wrote was
/// yielded.
pub fn follow(
    dir: PathBuf,
    offset: u64,
    poll: Duration,
) -> impl Stream<Item = Result<LogChunk, Error>> + Send + 'static {
    futures::stream::unfold(Some(offset), move |next| {
        let dir = dir.clone();
        async move {
            let mut at = next?;
            loop {
                // Whether more can come is read before the log, so nothing written between the
                // two reads is missed.
                let running = !matches!(
                    spec::read(&dir),
                    Ok(ShimState::Exited(_) | ShimState::Lost(_) | ShimState::Absent)
                );
                let read = {
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || read(&dir, at, 1 << 20)).await
                };
                let chunk = match read {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(e)) => return Some((Err(e), None)),
                    Err(join) => {
                        return Some((
                            Err(Error::Io {
                                path: dir.clone(),
                                source: std::io::Error::other(join.to_string()),
                            }),
                            None,
                        ));
                    }
                };
                if !chunk.data.is_empty() {
                    let next = chunk.next();
                    return Some((Ok(chunk), Some(next)));
                }
                if !running {
                    return None;
                }
                at = chunk.offset;
                tokio::time::sleep(poll).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_offsets_and_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::open(dir.path(), 10, 3).unwrap();
        let all: Vec<u8> = (0..95u8).collect();
        for piece in all.chunks(7) {
            log.write(piece).unwrap();
        }
        assert_eq!(log.offset(), 95);
        let segs = segments(dir.path()).unwrap();
        let starts: Vec<u64> = segs.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![70, 80, 90]);
        for (_, path) in &segs {
            assert!(std::fs::metadata(path).unwrap().len() <= 10);
        }
        // Rotated away: the oldest bytes still there.
        let chunk = read(dir.path(), 3, 1000).unwrap();
        assert_eq!(chunk.offset, 70);
        assert_eq!(chunk.data, all[70..].to_vec());
        // From the middle of a segment, across segments, bounded.
        let chunk = read(dir.path(), 75, 12).unwrap();
        assert_eq!(
            (chunk.offset, chunk.data.clone()),
            (75, all[75..87].to_vec())
        );
        assert_eq!(read(dir.path(), 95, 10).unwrap().data, Vec::<u8>::new());
        // A new writer continues where the last one stopped.
        let mut again = LogWriter::open(dir.path(), 10, 3).unwrap();
        assert_eq!(again.offset(), 95);
        again.write(b"xyz").unwrap();
        assert_eq!(read(dir.path(), 95, 10).unwrap().data, b"xyz".to_vec());
    }
}
