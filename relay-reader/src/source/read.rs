//! Reading any relay file with read(2): the kernel strips padding and
//! consumes what it returns. Works for every channel, mappable or not.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::PathBuf;

use crate::kernel::MetaView;
use crate::subbuf::{BufStats, SubBuf};
use crate::{Error, Result};

/// Bytes asked for per read(2); relay returns at most one sub-buffer's worth
/// of contiguous data per step and loops inside the call while room is left.
pub const READ_CHUNK: usize = 256 * 1024;

/// Drains one relay file with read(2).
#[derive(Debug)]
pub struct ReadSource {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    stats: BufStats,
    finalized: bool,
    finished_only: bool,
    /// The file's meta area, for its counters: `None` before the first
    /// look, `Some(None)` where it has none (or stopped answering).
    meta: Option<Option<MetaView>>,
}

impl ReadSource {
    /// Reads `file` (the buffer of `cpu`).
    pub fn new(path: PathBuf, file: File, cpu: u32) -> Self {
        ReadSource {
            path,
            file,
            buf: vec![0; READ_CHUNK],
            finalized: false,
            finished_only: false,
            meta: None,
            stats: BufStats {
                cpu,
                ..BufStats::default()
            },
        }
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// True once the kernel finalized the buffer and all of it was read
    /// (see [`super::Source::mark_finalized`]).
    pub fn finished(&self) -> bool {
        self.finalized
    }

    /// Records that the kernel finalized the buffer (poll reported it
    /// closed) and a last drain took what was left.
    pub fn mark_finalized(&mut self) {
        self.finalized = true;
    }

    /// Counters so far. read(2) itself tells nothing of losses; where the
    /// file also has a meta area (a kernel with the series, or a relay_app
    /// channel), the kernel's loss counters are in
    /// [`BufStats::kernel`], refreshed after every drain.
    pub fn stats(&self) -> &BufStats {
        &self.stats
    }

    /// With `on`, [`ReadSource::drain`] reads only the data of finished
    /// sub-buffers, never the one being written. A stock kernel's read(2)
    /// returns bytes up to the writer's offset, but `relay_reserve()` moves that
    /// offset before its caller fills the record (blktrace does so): read
    /// concurrently, such a record arrives as stale bytes and is lost. The
    /// limit is the file size, which relay keeps at the bytes of finished
    /// sub-buffers, less what this source has read: it assumes nobody else
    /// read the file since the channel was created. [`ReadSource::flush_and_drain`]
    /// (used by `flush_and_drain`) still reads everything, for the end of a
    /// recording once the writers stopped.
    pub fn set_finished_only(&mut self, on: bool) {
        self.finished_only = on;
    }

    /// Reads until the kernel has nothing more (relay's read never blocks),
    /// delivering each chunk; only finished sub-buffers with
    /// [`ReadSource::set_finished_only`].
    pub fn drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        self.read_until_empty(self.finished_only, f)
    }

    /// Reads everything there is, the sub-buffer being written included.
    /// Asks the writer to flush that sub-buffer first where the channel
    /// supports `RELAY_IOC_FLUSH`: kernels whose read(2) is safe against a
    /// concurrent writer (the kernel series) return its data only once it
    /// is flushed or the channel is closed, since before that some of its
    /// reserved bytes may not be written yet.
    pub fn flush_and_drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        crate::kernel::request_flush(&self.file, &self.path)?;
        self.read_until_empty(false, f)
    }

    /// For a live reader while the writer goes on: the records waiting in
    /// the sub-buffer being written. Where the channel takes
    /// `RELAY_IOC_FLUSH` (the kernel series, `relay_app` channels), the
    /// writer finishes that sub-buffer and a drain reads it. Elsewhere
    /// (blktrace on a stock kernel) read(2) of the sub-buffer being written
    /// is safe only with `on_writer_cpu`: the caller runs on the CPU that
    /// writes this buffer (a thread pinned to it) and the writer fills each
    /// record with preemption or interrupts off, as `relay_write()` and
    /// blktrace do, so no record is half written while this thread runs.
    /// `None` (nothing read) when neither holds.
    pub fn take_partial(
        &mut self,
        on_writer_cpu: bool,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<Option<u64>> {
        if crate::kernel::request_flush(&self.file, &self.path)? {
            return self.drain(f).map(Some);
        }
        if !on_writer_cpu {
            return Ok(None);
        }
        self.read_until_empty(false, f).map(Some)
    }

    fn read_until_empty(
        &mut self,
        finished_only: bool,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<u64> {
        let delivered = self.read_chunks(finished_only, f)?;
        self.refresh_kernel_counters();
        Ok(delivered)
    }

    /// The kernel's counters, where the file has a meta area.
    fn refresh_kernel_counters(&mut self) {
        // The data matters more than the counters: a file that read(2) still
        // drains but that has no meta area, or whose meta area cannot be
        // mapped, keeps going without them.
        let view = self
            .meta
            .get_or_insert_with(|| MetaView::open(&self.file, &self.path).ok().flatten());
        if let Some(state) = view.as_ref().and_then(|view| view.state().ok()) {
            self.stats.kernel = Some(state);
        }
    }

    fn read_chunks(
        &mut self,
        finished_only: bool,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<u64> {
        let mut delivered = 0;
        loop {
            let mut want = self.buf.len();
            if finished_only {
                let size = self
                    .file
                    .metadata()
                    .map_err(|e| Error::io(&self.path, "stat", e))?
                    .len();
                want = want.min(size.saturating_sub(self.stats.bytes) as usize);
                if want == 0 {
                    return Ok(delivered);
                }
            }
            let n = match self.file.read(&mut self.buf[..want]) {
                Ok(0) => return Ok(delivered),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // relay_file_read() never fails with EINVAL; a file without
                // a read method (a write-only control file) does.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(Error::NotRelayFile {
                        path: self.path.clone(),
                        why: "read(2) refuses it with EINVAL, which a relay buffer file never does"
                            .into(),
                    })
                }
                Err(e) => return Err(Error::io(&self.path, "read", e)),
            };
            let seq = self.stats.subbufs;
            self.stats.subbufs += 1;
            self.stats.bytes += n as u64;
            delivered += 1;
            f(SubBuf {
                cpu: self.stats.cpu,
                seq,
                data: &self.buf[..n],
            })?;
        }
    }
}
