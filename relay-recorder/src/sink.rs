//! Where recorded sub-buffers go: per-CPU files, one file, or stdout.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use relay_reader::{Error, Result, SubBuf};

/// Buffer size of the sinks' writers. Small records are gathered into
/// writes of this size; a sub-buffer at least this large bypasses the buffer
/// and goes to write(2) straight from the mapping, with no copy in user
/// space (`BufWriter` writes large slices directly).
const WRITE_BUFFER: usize = 64 << 10;

/// A destination for sub-buffer data.
pub trait Sink {
    /// Stores one sub-buffer's data.
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()>;
    /// Flushes everything to its destination.
    fn finish(&mut self) -> Result<()>;
    /// Hands what was written so far on to the destination (a pipe, say)
    /// without ending anything, for live output; the recording calls it
    /// after every delivery when it flushes idle buffers
    /// ([`crate::Recording::flush_when_idle`]). The default does nothing,
    /// for sinks that keep nothing back.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()> {
        (**self).write(sb)
    }

    fn finish(&mut self) -> Result<()> {
        (**self).finish()
    }

    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

/// One file per CPU, `<dir>/<prefix><cpu>`, as relay-apps and blktrace name
/// them; with rotation `<prefix><cpu>.0`, `.1`, ... each at most about
/// `rotate_bytes` (a sub-buffer is never split across files).
#[derive(Debug)]
pub struct PerCpuFiles {
    dir: PathBuf,
    prefix: String,
    rotate_bytes: Option<u64>,
    files: BTreeMap<u32, CpuFile>,
}

#[derive(Debug)]
struct CpuFile {
    path: PathBuf,
    /// `None` once a write failed and the file was cut back.
    out: Option<BufWriter<File>>,
    /// Bytes in the current file.
    bytes: u64,
    /// Where the sub-buffers handed in since the writer's buffer was last
    /// empty end: the file may be cut at one of these, or at `durable`.
    ends: Vec<u64>,
    /// Bytes known to be in the file: everything up to here was written.
    durable: u64,
    /// Index of the current file when rotating.
    index: u64,
}

impl CpuFile {
    fn open(path: PathBuf, index: u64) -> Result<Self> {
        let f = File::create(&path).map_err(|e| Error::io(&path, "create", e))?;
        Ok(CpuFile {
            path,
            out: Some(BufWriter::with_capacity(WRITE_BUFFER, f)),
            bytes: 0,
            ends: Vec::new(),
            durable: 0,
            index,
        })
    }

    /// Appends one sub-buffer; on failure (a full disk) the file is cut
    /// back to the end of the last sub-buffer that reached it whole, so it
    /// never ends in a torn record.
    fn write(&mut self, data: &[u8]) -> Result<()> {
        let result = match self.out.as_mut() {
            Some(out) => out.write_all(data),
            None => return Err(self.failed_before()),
        };
        match result {
            Ok(()) => {
                self.bytes += data.len() as u64;
                self.ends.push(self.bytes);
                self.note_durable();
                Ok(())
            }
            Err(source) => Err(self.cut_back(source)),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.write_out(true)
    }

    /// Writes what is buffered (no sync): readers of the file see it.
    fn flush(&mut self) -> Result<()> {
        self.write_out(false)
    }

    /// Writes what is buffered and, with `sync`, syncs the file's data.
    fn write_out(&mut self, sync: bool) -> Result<()> {
        let result = match self.out.as_mut() {
            Some(out) => out.flush().and_then(|()| {
                if sync {
                    out.get_ref().sync_data()
                } else {
                    Ok(())
                }
            }),
            None => return Err(self.failed_before()),
        };
        match result {
            Ok(()) => {
                self.note_durable();
                Ok(())
            }
            Err(source) => Err(self.cut_back(source)),
        }
    }

    /// Once the writer's buffer is empty, everything handed in is in the file.
    fn note_durable(&mut self) {
        if self.out.as_ref().is_some_and(|out| out.buffer().is_empty()) {
            self.durable = self.bytes;
            self.ends.clear();
        }
    }

    /// Drops what is still buffered (writing it would tear a record again)
    /// and truncates the file to the last sub-buffer boundary it holds.
    fn cut_back(&mut self, source: std::io::Error) -> Error {
        let target = self.path.display().to_string();
        let Some(out) = self.out.take() else {
            return Error::Sink { target, source };
        };
        let (file, _unwritten) = out.into_parts();
        // Every end is past `durable`, which the file holds already.
        let cut = file.metadata().map(|m| m.len()).ok().map(|len| {
            self.ends
                .iter()
                .copied()
                .filter(|&end| end <= len)
                .max()
                .unwrap_or(self.durable.min(len))
        });
        if let Some(cut) = cut {
            // Best effort: the write error is what the caller must hear of.
            let _ = file.set_len(cut);
            self.bytes = cut;
        }
        Error::Sink { target, source }
    }

    fn failed_before(&self) -> Error {
        Error::Sink {
            target: self.path.display().to_string(),
            source: std::io::Error::other("an earlier write to this file failed"),
        }
    }
}

impl PerCpuFiles {
    /// Writes `<dir>/<prefix><cpu>` files, creating `dir` if needed.
    pub fn create(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create directory", e))?;
        Ok(PerCpuFiles {
            dir,
            prefix: prefix.into(),
            rotate_bytes: None,
            files: BTreeMap::new(),
        })
    }

    /// Starts a new file `<prefix><cpu>.<n+1>` when the current one would
    /// grow past `bytes`.
    pub fn rotate_at(mut self, bytes: u64) -> Self {
        self.rotate_bytes = Some(bytes);
        self
    }

    /// Path of the `index`th file of `cpu`.
    pub fn path_of(&self, cpu: u32, index: u64) -> PathBuf {
        match self.rotate_bytes {
            Some(_) => self.dir.join(format!("{}{cpu}.{index}", self.prefix)),
            None => self.dir.join(format!("{}{cpu}", self.prefix)),
        }
    }
}

impl Sink for PerCpuFiles {
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()> {
        let len = sb.data.len() as u64;
        let file = match self.files.get_mut(&sb.cpu) {
            Some(file) => file,
            None => {
                let file = CpuFile::open(self.path_of(sb.cpu, 0), 0)?;
                self.files.entry(sb.cpu).or_insert(file)
            }
        };
        if let Some(limit) = self.rotate_bytes {
            if file.bytes > 0 && file.bytes + len > limit {
                file.finish()?;
                let index = file.index + 1;
                let path = self.dir.join(format!("{}{}.{index}", self.prefix, sb.cpu));
                *file = CpuFile::open(path, index)?;
            }
        }
        file.write(sb.data)
    }

    fn finish(&mut self) -> Result<()> {
        for file in self.files.values_mut() {
            file.finish()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for file in self.files.values_mut() {
            file.flush()?;
        }
        Ok(())
    }
}

/// Everything into one stream (a file or stdout), sub-buffers in the order
/// they were read.
#[derive(Debug)]
pub struct OneStream<W: Write> {
    name: String,
    out: BufWriter<W>,
}

impl<W: Write> OneStream<W> {
    /// Writes to `out`, called `name` in errors.
    pub fn new(out: W, name: impl Into<String>) -> Self {
        OneStream {
            name: name.into(),
            out: BufWriter::with_capacity(WRITE_BUFFER, out),
        }
    }
}

impl OneStream<File> {
    /// Writes to the file `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).map_err(|e| Error::io(path, "create", e))?;
        Ok(OneStream {
            name: path.display().to_string(),
            out: BufWriter::with_capacity(WRITE_BUFFER, f),
        })
    }
}

impl OneStream<std::io::Stdout> {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        OneStream {
            name: "standard output".into(),
            out: BufWriter::with_capacity(WRITE_BUFFER, std::io::stdout()),
        }
    }
}

impl<W: Write> Sink for OneStream<W> {
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()> {
        self.out.write_all(sb.data).map_err(|source| Error::Sink {
            target: self.name.clone(),
            source,
        })
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| Error::Sink {
            target: self.name.clone(),
            source,
        })
    }
}

/// A sink that shows every sub-buffer to a function on its way to another
/// sink: counting records, lines or bytes without a sink type of one's own.
///
/// ```
/// use relay_recorder::sink::{Inspect, OneStream, Sink};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// let lines = Arc::new(AtomicU64::new(0));
/// let counted = Arc::clone(&lines);
/// let mut sink = Inspect::new(OneStream::new(Vec::new(), "memory"), move |sb| {
///     let n = sb.data.iter().filter(|&&b| b == b'\n').count();
///     counted.fetch_add(n as u64, Ordering::Relaxed);
/// });
/// sink.write(&relay_reader::SubBuf { cpu: 0, seq: 0, data: b"a\nb\n" })?;
/// assert_eq!(lines.load(Ordering::Relaxed), 2);
/// # Ok::<(), relay_reader::Error>(())
/// ```
#[derive(Debug)]
pub struct Inspect<S, F> {
    inner: S,
    f: F,
}

impl<S: Sink, F: FnMut(&SubBuf<'_>)> Inspect<S, F> {
    /// Calls `f` on every sub-buffer written to `inner`, after `inner`
    /// took it.
    pub fn new(inner: S, f: F) -> Self {
        Inspect { inner, f }
    }
}

impl<S: Sink, F: FnMut(&SubBuf<'_>)> Sink for Inspect<S, F> {
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()> {
        self.inner.write(sb)?;
        (self.f)(sb);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}

/// One sink written by several threads (one stream for a recording with a
/// thread per buffer, [`crate::Threads::PerBuffer`]): each sub-buffer goes in whole, under a
/// lock, so sub-buffers of different CPUs never interleave within one.
#[derive(Debug)]
pub struct Shared<S> {
    inner: Arc<Mutex<S>>,
}

impl<S> Shared<S> {
    /// Wraps `sink`; clone the result for every writer.
    pub fn new(sink: S) -> Self {
        Shared {
            inner: Arc::new(Mutex::new(sink)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, S> {
        // A writer that panicked mid-write left at worst a partial
        // sub-buffer in the writer's buffer; the stream is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Sink> Sink for Shared<S> {
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()> {
        self.lock().write(sb)
    }

    /// Flushes the shared sink: every writer calls it when it ends, and
    /// the last call leaves everything written.
    fn finish(&mut self) -> Result<()> {
        self.lock().finish()
    }

    fn flush(&mut self) -> Result<()> {
        self.lock().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(cpu: u32, data: &[u8]) -> SubBuf<'_> {
        SubBuf { cpu, seq: 0, data }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("relay-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn per_cpu_files_are_named_like_relay_apps() {
        let dir = temp_dir("plain");
        let mut sink = PerCpuFiles::create(&dir, "cpu").unwrap();
        sink.write(&sb(1, b"one\n")).unwrap();
        sink.write(&sb(0, b"zero\n")).unwrap();
        sink.write(&sb(1, b"two\n")).unwrap();
        sink.finish().unwrap();
        assert_eq!(std::fs::read(dir.join("cpu0")).unwrap(), b"zero\n");
        assert_eq!(std::fs::read(dir.join("cpu1")).unwrap(), b"one\ntwo\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_never_splits_a_subbuf() {
        let dir = temp_dir("rotate");
        let mut sink = PerCpuFiles::create(&dir, "cpu").unwrap().rotate_at(10);
        for chunk in [&b"aaaaaa"[..], b"bbbbbb", b"cc", b"dddddddddddddd"] {
            sink.write(&sb(0, chunk)).unwrap();
        }
        sink.finish().unwrap();
        assert_eq!(std::fs::read(dir.join("cpu0.0")).unwrap(), b"aaaaaa");
        assert_eq!(std::fs::read(dir.join("cpu0.1")).unwrap(), b"bbbbbbcc");
        // Larger than the limit: alone in its file, whole.
        assert_eq!(
            std::fs::read(dir.join("cpu0.2")).unwrap(),
            b"dddddddddddddd"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Live output: what a stream or a file holds back reaches its
    /// destination on `flush`, before (and without) `finish`.
    #[test]
    fn flush_hands_buffered_data_on_without_finishing() {
        let dir = temp_dir("flush");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stream");
        let mut stream = Shared::new(OneStream::create(&path).unwrap());
        stream.write(&sb(0, b"first")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"", "held in the writer");
        stream.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        stream.write(&sb(1, b" second")).unwrap();
        stream.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first second");

        let mut files = PerCpuFiles::create(&dir, "cpu").unwrap();
        files.write(&sb(3, b"xyz")).unwrap();
        assert_eq!(std::fs::read(dir.join("cpu3")).unwrap(), b"");
        files.flush().unwrap();
        assert_eq!(std::fs::read(dir.join("cpu3")).unwrap(), b"xyz");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shared_stream_keeps_every_subbuf_whole() {
        let dir = temp_dir("shared");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("all");
        let shared = Shared::new(OneStream::create(&path).unwrap());
        let writers: Vec<_> = (0..4u8)
            .map(|cpu| {
                let mut sink = shared.clone();
                std::thread::spawn(move || {
                    let data = vec![b'a' + cpu; 1000];
                    for _ in 0..200 {
                        sink.write(&sb(cpu.into(), &data)).unwrap();
                    }
                    sink.finish().unwrap();
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let all = std::fs::read(&path).unwrap();
        assert_eq!(all.len(), 4 * 200 * 1000);
        for chunk in all.chunks(1000) {
            assert!(chunk.iter().all(|&b| b == chunk[0]), "a torn sub-buffer");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_disk_is_an_error_naming_the_target() {
        let mut sink = OneStream::create(Path::new("/dev/full")).unwrap();
        let big = vec![b'x'; 4 << 20];
        let err = sink
            .write(&sb(0, &big))
            .and_then(|()| sink.finish())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/dev/full"), "{text}");
        assert!(
            matches!(err, Error::Sink { ref source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
            "{text}"
        );
    }
}
