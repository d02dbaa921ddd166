//! [`Reader`]: every buffer of a channel behind one `poll(timeout)`, in the
//! spirit of libbpf-rs `RingBuffer`: callbacks get zero-copy sub-buffer data,
//! and sub-buffers go back to the kernel when the callback returns.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::channel::{buffer_files, BufferFile};
use crate::source::{Mode, Source};
use crate::subbuf::{BufStats, SubBuf};
use crate::wait::{Waiter, Waker};
use crate::{Error, Result};

/// All buffers of one relay channel.
///
/// ```no_run
/// use relay_reader::{Mode, Reader};
/// use std::time::Duration;
///
/// let mut reader = Reader::open("/sys/kernel/debug/relay_klog/cpu", Mode::Auto)?;
/// let mut bytes = 0;
/// for _ in 0..10 {
///     reader.poll(Duration::from_millis(100), &mut |sb| {
///         bytes += sb.data.len();
///         Ok(())
///     })?;
/// }
/// // Stopping: take the partly filled sub-buffers too.
/// reader.flush_and_drain(&mut |sb| {
///     bytes += sb.data.len();
///     Ok(())
/// })?;
/// println!("{bytes} bytes");
/// # Ok::<(), relay_reader::Error>(())
/// ```
#[derive(Debug)]
pub struct Reader {
    base: PathBuf,
    mode: Mode,
    sources: Vec<Source>,
    waiter: Waiter,
    last_scan: Instant,
    read_finished_only: bool,
    /// Opened on one buffer file: no other files join it. (Looking for
    /// `<file><cpu>` would take `cpu1` for the base of `cpu10`.)
    one_file: bool,
}

/// How often `poll` looks for buffer files that appeared (CPU hotplug).
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

impl Reader {
    /// Opens every buffer of the channel at `base` (see [`buffer_files`]).
    pub fn open(base: impl AsRef<Path>, mode: Mode) -> Result<Reader> {
        let base = base.as_ref();
        Reader::with_files(base, mode, base.is_file(), &buffer_files(base)?)
    }

    /// Opens one buffer of a channel (an element of [`buffer_files`]), for
    /// a reader per buffer such as relay-recorder's thread per buffer.
    pub fn open_buffer(file: &BufferFile, mode: Mode) -> Result<Reader> {
        Reader::with_files(&file.path, mode, true, std::slice::from_ref(file))
    }

    /// A reader of `files` (at least one), found at `base`.
    fn with_files(base: &Path, mode: Mode, one_file: bool, files: &[BufferFile]) -> Result<Reader> {
        let waiter = Waiter::new().map_err(|e| Error::io(base, "create poller", e))?;
        let mut reader = Reader {
            base: base.into(),
            mode,
            sources: Vec::new(),
            waiter,
            last_scan: Instant::now(),
            read_finished_only: false,
            one_file,
        };
        for file in files {
            reader.add(file)?;
        }
        // Every buffer of a channel is read the same way.
        reader.mode = reader.sources[0].mode();
        Ok(reader)
    }

    fn add(&mut self, file: &BufferFile) -> Result<()> {
        let mut source = Source::open(&file.path, file.cpu, self.mode)?;
        source.set_read_finished_only(self.read_finished_only);
        self.waiter
            .add(source.as_fd(), self.sources.len())
            .map_err(|e| match e.raw_os_error() {
                // epoll refuses files without a poll method with EPERM:
                // every relay file has one, so this is some other file.
                Some(libc::EPERM) => Error::NotRelayFile {
                    path: file.path.clone(),
                    why: "it cannot be polled, which every relay buffer file can".into(),
                },
                _ => Error::io(&file.path, "poll registration", e),
            })?;
        self.sources.push(source);
        Ok(())
    }

    /// Opens buffer files that appeared since the channel was opened (a CPU
    /// brought online creates its buffer). Returns how many were added.
    pub fn rescan(&mut self) -> Result<usize> {
        self.last_scan = Instant::now();
        if self.one_file {
            return Ok(0);
        }
        let files = match buffer_files(&self.base) {
            Ok(files) => files,
            // The channel is going away under the reader (its module was
            // unloaded): the open buffers report POLLERR and are drained
            // and closed by `poll`; there is nothing new to add.
            Err(Error::ChannelNotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut added = 0;
        for file in files {
            if self.sources.iter().all(|s| s.path() != file.path) {
                self.add(&file)?;
                added += 1;
            }
        }
        Ok(added)
    }

    /// In read mode, makes `poll` and `consume` read only finished
    /// sub-buffers, for clients that fill records after `relay_reserve()`
    /// such as blktrace (see [`ReadSource::set_finished_only`]): data then
    /// arrives a sub-buffer at a time, and `flush_and_drain` takes the rest
    /// once the writer stopped and flushed. No effect in the mmap modes.
    ///
    /// [`ReadSource::set_finished_only`]: crate::source::ReadSource::set_finished_only
    pub fn read_finished_only(&mut self, on: bool) {
        self.read_finished_only = on;
        for source in &mut self.sources {
            source.set_read_finished_only(on);
        }
    }

    /// The channel's base path.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The mode the channel is read in (never [`Mode::Auto`] once open).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Waits up to `timeout` for ready sub-buffers, then delivers them.
    /// In read mode every buffer is drained after the wait, since a stock
    /// kernel's read(2) also returns data of the partly filled sub-buffer,
    /// which poll does not announce. Returns how many sub-buffers (or
    /// chunks) were delivered.
    ///
    /// The wait ends early for a [`Waker`] and, once a second, to look for
    /// buffer files of CPUs that came online: a long `timeout` with a waker
    /// for stopping keeps an idle reader asleep.
    pub fn poll(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<u64> {
        let mut ready = Vec::new();
        if self.last_scan.elapsed() >= RESCAN_INTERVAL {
            self.rescan()?;
            // relay_close() finalizes a buffer without waking its pollers
            // unless a partly filled sub-buffer is flushed, so poll may
            // never report POLLERR: a buffer whose file is gone is closed.
            ready.extend(
                self.sources
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !s.finished() && !s.path().exists())
                    .map(|(key, _)| (key, true)),
            );
        }
        if ready.is_empty() {
            ready = self
                .waiter
                .wait(timeout.min(RESCAN_INTERVAL.saturating_sub(self.last_scan.elapsed())))
                .map_err(|e| Error::io(&self.base, "poll", e))?;
        }
        let mut delivered = 0;
        for &(key, closed) in &ready {
            if !closed {
                continue;
            }
            // relay_close() marked the buffer finalized: take what is left,
            // then stop watching it, or level-triggered poll would spin.
            if let Some(source) = self.sources.get_mut(key) {
                delivered += source.drain(f)?;
                source.mark_finalized();
                let _ = self.waiter.remove(source.as_fd());
            }
        }
        if self.mode() == Mode::Read {
            return Ok(delivered + self.consume(f)?);
        }
        for (key, closed) in ready {
            if let (false, Some(source)) = (closed, self.sources.get_mut(key)) {
                delivered += source.drain(f)?;
            }
        }
        Ok(delivered)
    }

    /// Delivers what every buffer has ready now, without waiting.
    pub fn consume(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        let mut delivered = 0;
        for source in &mut self.sources {
            delivered += source.drain(f)?;
        }
        Ok(delivered)
    }

    /// For stopping without losing the tail: makes every partly filled
    /// sub-buffer ready and delivers everything.
    pub fn flush_and_drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        let mut delivered = 0;
        for source in &mut self.sources {
            delivered += source.flush_and_drain(f)?;
        }
        Ok(delivered)
    }

    /// For live output while the writers go on: delivers the records
    /// waiting in every buffer's partly filled sub-buffer (see
    /// [`Source::take_partial`]; `on_writer_cpu` only for a reader of one
    /// buffer running on that buffer's CPU). Returns how many sub-buffers
    /// (or chunks) were delivered, or `None` when some buffer could not
    /// hand its records over (the others' were delivered).
    pub fn take_partial(
        &mut self,
        on_writer_cpu: bool,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<Option<u64>> {
        let (mut delivered, mut all) = (0, true);
        for source in &mut self.sources {
            match source.take_partial(on_writer_cpu, f)? {
                Some(n) => delivered += n,
                None => all = false,
            }
        }
        Ok(all.then_some(delivered))
    }

    /// True when every buffer was finalized by the kernel and fully read.
    pub fn finished(&self) -> bool {
        !self.sources.is_empty() && self.sources.iter().all(Source::finished)
    }

    /// Counters of every buffer, in CPU order.
    pub fn stats(&self) -> Vec<BufStats> {
        self.sources.iter().map(|s| *s.stats()).collect()
    }

    /// The buffers.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The buffers, mutably (for [`Source::kernel_state`]).
    pub fn sources_mut(&mut self) -> &mut [Source] {
        &mut self.sources
    }

    /// A handle that wakes this reader's [`Reader::poll`] from another
    /// thread (a signal thread, say: relay-recorder's `Stop` does that).
    pub fn waker(&self) -> Waker {
        self.waiter.waker()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        for source in &self.sources {
            let _ = self.waiter.remove(source.as_fd());
        }
    }
}

/// The poller's fd: readable when a buffer has data, for tokio's `AsyncFd`,
/// mio or a hand-written epoll loop; then call [`Reader::consume`].
impl AsFd for Reader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.waiter.as_fd()
    }
}
