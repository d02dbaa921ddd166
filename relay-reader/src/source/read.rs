//! Reading any relay file with read(2): the kernel strips padding and
//! consumes what it returns. Works for every channel, mappable or not.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::PathBuf;

use crate::kernel::MetaView;
use crate::mapped::SubbufLoc;
use crate::subbuf::{BufStats, Lender, SubBuf, Taken};
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
    /// Flushed: read everything, the sub-buffer being written included,
    /// until the file runs dry once.
    flushed: bool,
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
            flushed: false,
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
    /// [`ReadSource::set_finished_only`], unless [`ReadSource::flush`]
    /// came first.
    pub fn drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        let mut delivered = 0;
        while let Some(taken) = self.take()? {
            delivered += 1;
            f(SubBuf {
                cpu: taken.cpu,
                seq: taken.seq,
                data: self.lent(&taken),
            })?;
        }
        Ok(delivered)
    }

    /// Makes the next drain (or the pull API until the file runs dry) read
    /// everything there is, the sub-buffer being written included. Asks
    /// the writer to flush that sub-buffer first where the channel
    /// supports `RELAY_IOC_FLUSH`: kernels whose read(2) is safe against a
    /// concurrent writer (the kernel series) return its data only once it
    /// is flushed or the channel is closed, since before that some of its
    /// reserved bytes may not be written yet.
    pub fn flush(&mut self) -> Result<()> {
        crate::kernel::request_flush(&self.file, &self.path)?;
        self.flushed = true;
        Ok(())
    }

    /// [`ReadSource::flush`], then [`ReadSource::drain`].
    pub fn flush_and_drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        self.flush()?;
        self.drain(f)
    }

    /// Reads one chunk for the pull API (and the drain): counted as it is
    /// read, since read(2) consumed it in the kernel. At the end, refreshes
    /// the kernel's counters.
    pub(crate) fn take(&mut self) -> Result<Option<Taken>> {
        let finished_only = self.finished_only && !self.flushed;
        let Some(n) = self.read_chunk(finished_only)? else {
            self.flushed = false;
            self.refresh_kernel_counters();
            return Ok(None);
        };
        let seq = self.stats.subbufs;
        self.stats.subbufs += 1;
        self.stats.bytes += n as u64;
        Ok(Some(Taken {
            cpu: self.stats.cpu,
            seq,
            loc: SubbufLoc {
                seq,
                data_offset: 0,
                data_len: n as u64,
                padding: 0,
                lost_before: 0,
            },
            copied: true,
        }))
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
        // Everything up to the writer's offset, until read(2) runs dry
        // (`take` clears the flag then).
        self.flushed = true;
        self.drain(f).map(Some)
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

    /// One read(2) into the buffer; `None` when the kernel has nothing (or,
    /// with `finished_only`, nothing of finished sub-buffers).
    fn read_chunk(&mut self, finished_only: bool) -> Result<Option<usize>> {
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
                    return Ok(None);
                }
            }
            return match self.file.read(&mut self.buf[..want]) {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // relay_file_read() never fails with EINVAL; a file without
                // a read method (a write-only control file) does.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(Error::NotRelayFile {
                    path: self.path.clone(),
                    why: "read(2) refuses it with EINVAL, which a relay buffer file never does"
                        .into(),
                }),
                Err(e) => Err(Error::io(&self.path, "read", e)),
            };
        }
    }
}

impl Lender for ReadSource {
    fn lent(&self, taken: &Taken) -> &[u8] {
        &self.buf[..taken.loc.data_len as usize]
    }

    /// read(2) consumed the chunk in the kernel and it was counted.
    fn give_back(&mut self, _taken: &Taken) {}
}
