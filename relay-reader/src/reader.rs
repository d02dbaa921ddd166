//! [`Reader`]: every buffer of a channel behind one `poll(timeout)`, in the
//! spirit of libbpf-rs `RingBuffer`: callbacks get zero-copy sub-buffer data,
//! and sub-buffers go back to the kernel when the callback returns. And, in
//! the spirit of aya's `RingBuf`, a pull API: [`Reader::next`] returns one
//! sub-buffer at a time, given back when it is dropped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::channel::{buffer_files, BufferFile};
use crate::source::{Mode, OpenOptions, PaddingWord, SharedPadding, Source};
use crate::subbuf::{BufStats, SubBuf, SubBufGuard};
use crate::wait::{Waiter, Waker};
use crate::{Error, Result};

/// All buffers of one relay channel, or one buffer ([`Reader::open_buffer`]).
///
/// Two ways to take the data, which can be mixed:
/// - callbacks, as libbpf-rs `RingBuffer`: [`Reader::poll`] waits and
///   delivers, [`Reader::consume`] delivers what is ready without waiting,
///   [`Reader::flush_and_drain`] takes the partly filled sub-buffers too;
/// - pulling, as aya `RingBuf`: [`Reader::wait`] waits, [`Reader::next`]
///   returns the next ready sub-buffer without waiting, as a
///   [`SubBufGuard`] that gives it back when dropped; [`Reader::flush`]
///   makes the partly filled ones ready for `next`.
///
/// A `Reader` is `Send` (one thread per reader, as relay-recorder's
/// thread per buffer does) and implements
/// `AsFd`/`AsRawFd` for an event loop: the fd is readable when a buffer has
/// data (see [`Reader::wait`]).
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
    /// Relay-app mode: the padding word asked for, and the size the
    /// channel's buffers decided on.
    padding_word: PaddingWord,
    padding: SharedPadding,
    sources: Vec<Source>,
    waiter: Waiter,
    last_scan: Instant,
    read_finished_only: bool,
    /// Opened on one buffer file: no other files join it. (Looking for
    /// `<file><cpu>` would take `cpu1` for the base of `cpu10`.)
    one_file: bool,
    /// Per source: poll reported it closed (or its file is gone) and the
    /// pull API has not yet taken what is left; it is no longer polled.
    closing: Vec<bool>,
    /// The source `next` takes from first.
    current: usize,
}

/// A `Reader` moves to the thread that reads it.
const _: () = {
    fn _assert_send<T: Send>() {}
    fn _reader_is_send() {
        _assert_send::<Reader>();
    }
};

/// How often `poll` looks for buffer files that appeared (CPU hotplug).
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

impl Reader {
    /// Opens every buffer of the channel at `base` (see [`buffer_files`]).
    pub fn open(base: impl AsRef<Path>, mode: Mode) -> Result<Reader> {
        Reader::open_with(base, OpenOptions::new(mode))
    }

    /// Opens every buffer of the channel at `base` as `options` say: a
    /// relay-apps channel with 8-byte padding words, say.
    ///
    /// ```no_run
    /// use relay_reader::{Mode, OpenOptions, PaddingWord, Reader};
    ///
    /// let options = OpenOptions::new(Mode::RelayApp).padding_word(PaddingWord::Eight);
    /// let reader = Reader::open_with("/sys/kernel/debug/relay_klog/cpu", options)?;
    /// # Ok::<(), relay_reader::Error>(())
    /// ```
    pub fn open_with(base: impl AsRef<Path>, options: OpenOptions) -> Result<Reader> {
        let base = base.as_ref();
        let files = buffer_files(base)?;
        Reader::with_files(
            base,
            options,
            base.is_file(),
            &files,
            SharedPadding::default(),
        )
    }

    /// Opens one buffer of a channel (an element of [`buffer_files`]): the
    /// one-buffer reader, as aya's `RingBuf` is one map, for a reader per
    /// buffer such as relay-recorder's thread per buffer. It is a `Reader`
    /// like any other, over one file, which it never rescans.
    ///
    /// ```no_run
    /// use relay_reader::{channel::buffer_files, Mode, Reader};
    ///
    /// for file in buffer_files("/sys/kernel/debug/relay_klog/cpu".as_ref())? {
    ///     let mut reader = Reader::open_buffer(&file, Mode::Auto)?;
    ///     std::thread::spawn(move || -> relay_reader::Result<u64> {
    ///         let mut bytes = 0;
    ///         while !reader.finished() {
    ///             reader.wait(std::time::Duration::from_secs(1))?;
    ///             while let Some(sb) = reader.next()? {
    ///                 bytes += sb.len() as u64;
    ///             }
    ///         }
    ///         Ok(bytes)
    ///     });
    /// }
    /// # Ok::<(), relay_reader::Error>(())
    /// ```
    pub fn open_buffer(file: &BufferFile, mode: Mode) -> Result<Reader> {
        Reader::open_buffer_with(file, OpenOptions::new(mode), SharedPadding::default())
    }

    /// [`Reader::open_buffer`] as `options` say, for a buffer of a channel
    /// whose readers share the padding-word size in `padding` (a clone of
    /// the same [`SharedPadding`] for every buffer of the channel).
    pub fn open_buffer_with(
        file: &BufferFile,
        options: OpenOptions,
        padding: SharedPadding,
    ) -> Result<Reader> {
        let files = std::slice::from_ref(file);
        Reader::with_files(&file.path, options, true, files, padding)
    }

    /// A reader of `files` (at least one), found at `base`.
    fn with_files(
        base: &Path,
        options: OpenOptions,
        one_file: bool,
        files: &[BufferFile],
        padding: SharedPadding,
    ) -> Result<Reader> {
        let waiter = Waiter::new().map_err(|e| Error::io(base, "create poller", e))?;
        let mut reader = Reader {
            base: base.into(),
            mode: options.mode,
            padding_word: options.padding_word,
            padding,
            sources: Vec::new(),
            waiter,
            last_scan: Instant::now(),
            read_finished_only: false,
            one_file,
            closing: Vec::new(),
            current: 0,
        };
        for file in files {
            reader.add(file)?;
            // The one rule: the mode is resolved once, on the channel's
            // first buffer, and every other buffer (CPUs that come online
            // later included) is opened in that mode, or refused.
            reader.mode = reader.sources[0].mode();
        }
        Ok(reader)
    }

    fn add(&mut self, file: &BufferFile) -> Result<()> {
        let options = OpenOptions::new(self.mode).padding_word(self.padding_word);
        let mut source = Source::open_in(&file.path, file.cpu, options, &self.padding)?;
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
        self.closing.push(false);
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

    /// In relay-app mode, the channel's padding-word size: chosen, or
    /// detected from its sub-buffers ([`PaddingWord::Auto`] until they
    /// tell, at the latest when the first data is delivered); `None` in the
    /// other modes.
    pub fn padding_word(&self) -> Option<PaddingWord> {
        (self.mode == Mode::RelayApp).then(|| self.padding.get())
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
        let ready = self.wait_ready(timeout)?;
        let mut delivered = 0;
        for key in 0..self.sources.len() {
            if self.closing[key] {
                // relay_close() marked the buffer finalized: take what is
                // left; it is no longer polled.
                delivered += self.sources[key].drain(f)?;
                self.sources[key].mark_finalized();
                self.closing[key] = false;
            }
        }
        if self.mode() == Mode::Read {
            return Ok(delivered + self.consume(f)?);
        }
        for key in ready {
            if let Some(source) = self.sources.get_mut(key) {
                delivered += source.drain(f)?;
            }
        }
        Ok(delivered)
    }

    /// Waits up to `timeout` until a buffer has data for [`Reader::next`],
    /// without taking any: the pull API's `poll`. Returns at once when a
    /// buffer already has data (what an earlier `next` left behind
    /// included). First releases to the kernel what `next` was given back
    /// and had not released yet.
    ///
    /// Like [`Reader::poll`], it ends early for a [`Waker`], looks for
    /// buffer files of CPUs that came online once a second, and notes the
    /// buffers the kernel closed (their module went away): `next` takes
    /// what they hold, then [`Reader::finished`] tells when all are done.
    /// In read mode poll does not announce the data of a partly filled
    /// sub-buffer, which `next` returns anyway: call `next` after every
    /// wait, whatever woke it.
    ///
    /// In an event loop that waits on the reader's fd itself (tokio's
    /// `AsyncFd`, mio, epoll), call `wait(Duration::ZERO)` when the fd is
    /// readable, then `next` until it returns `None`.
    ///
    /// ```no_run
    /// use relay_reader::{Mode, Reader};
    /// use std::time::Duration;
    ///
    /// let mut reader = Reader::open("/sys/kernel/debug/relay_klog/cpu", Mode::Auto)?;
    /// while !reader.finished() {
    ///     reader.wait(Duration::from_secs(1))?;
    ///     while let Some(sb) = reader.next()? {
    ///         println!("cpu {}: {} bytes", sb.cpu(), sb.len());
    ///     }
    /// }
    /// # Ok::<(), relay_reader::Error>(())
    /// ```
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        self.wait_ready(timeout).map(|_| ())
    }

    /// The waiting half of `poll` and `wait`: releases what the pull API
    /// left pending, looks for new buffer files once a second, waits, and
    /// flags the buffers the kernel closed (no longer polled: level-
    /// triggered poll would report them forever). Returns the keys of the
    /// other ready buffers.
    fn wait_ready(&mut self, timeout: Duration) -> Result<Vec<usize>> {
        for source in &mut self.sources {
            source.release_pending()?;
        }
        if self.last_scan.elapsed() >= RESCAN_INTERVAL {
            self.rescan()?;
            // relay_close() finalizes a buffer without waking its pollers
            // unless a partly filled sub-buffer is flushed, so poll may
            // never report POLLERR: a buffer whose file is gone is closed.
            for key in 0..self.sources.len() {
                let source = &self.sources[key];
                if !source.finished() && !self.closing[key] && !source.path().exists() {
                    self.close(key);
                }
            }
        }
        // A closed buffer with data left is not polled: no waiting then.
        let timeout = if self.closing.contains(&true) {
            Duration::ZERO
        } else {
            timeout.min(RESCAN_INTERVAL.saturating_sub(self.last_scan.elapsed()))
        };
        let events = self
            .waiter
            .wait(timeout)
            .map_err(|e| Error::io(&self.base, "poll", e))?;
        let mut ready = Vec::with_capacity(events.len());
        for (key, closed) in events {
            if key >= self.sources.len() {
                continue;
            }
            if closed {
                self.close(key);
            } else {
                ready.push(key);
            }
        }
        Ok(ready)
    }

    /// Poll reported buffer `key` closed: flag it, stop polling it.
    fn close(&mut self, key: usize) {
        if !self.closing[key] {
            self.closing[key] = true;
            let _ = self.waiter.remove(self.sources[key].as_fd());
        }
    }

    /// The pull API: the next ready sub-buffer (mmap modes) or read(2)
    /// chunk (read mode) of any buffer, or `None` when none has data now.
    /// Never waits ([`Reader::wait`] does). The data stays where the kernel
    /// wrote it while the [`SubBufGuard`] lives (a validated copy in
    /// overwrite mode); dropping the guard gives the sub-buffer back. Only
    /// one guard lives at a time: it borrows the reader.
    ///
    /// Order: a buffer's sub-buffers in sequence. The buffers take turns:
    /// `next` goes on with one buffer through what was ready when it last
    /// looked at that buffer's counters, then looks at the next buffer, so
    /// a busy buffer cannot starve the others.
    ///
    /// Release to the kernel, in mmap modes with the meta area: the
    /// sub-buffers given back are released with one `RELAY_IOC_CONSUME`
    /// when `next` has gone through what that look found ready (so always
    /// before it returns `None`), and without overwrite also after every
    /// half ring, so that a slow consumer does not hold the writer off the
    /// whole ring; also by [`Reader::wait`], [`Reader::poll`] and when the
    /// reader is dropped. A reader that keeps up so makes one system call
    /// per batch, not per sub-buffer, as the callback API does. Without the
    /// meta area (relay-app mode) each sub-buffer is released on its own;
    /// read(2) consumes as it reads.
    ///
    /// ```no_run
    /// use relay_reader::{Mode, Reader};
    /// use std::io::Write;
    /// use std::time::Duration;
    ///
    /// let mut reader = Reader::open("/sys/kernel/debug/relay_klog/cpu", Mode::Auto)?;
    /// let mut out = std::io::stdout().lock();
    /// for _ in 0..100 {
    ///     reader.wait(Duration::from_millis(100))?;
    ///     while let Some(sb) = reader.next()? {
    ///         out.write_all(&sb)?; // zero-copy, padding and header stripped
    ///     } // each `sb` is given back here, as it is dropped
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible, and the item borrows the reader
    pub fn next(&mut self) -> Result<Option<SubBufGuard<'_>>> {
        let n = self.sources.len();
        if n == 0 {
            return Ok(None);
        }
        let mut found = None;
        // The current buffer's batch first: what its last look found ready.
        if !self.sources[self.current].finished() {
            found = self.sources[self.current]
                .take(false)?
                .map(|taken| (self.current, taken));
        }
        // Then each buffer in turn, from the next one on, looking again.
        for i in 1..=n {
            if found.is_some() {
                break;
            }
            let key = (self.current + i) % n;
            let source = &mut self.sources[key];
            if source.finished() {
                // Finished through the meta area's flag before poll said
                // so: nothing is left to wait for (a flag left set would
                // make `wait` return at once).
                self.closing[key] = false;
                continue;
            }
            match source.take(true)? {
                Some(taken) => found = Some((key, taken)),
                None if self.closing[key] => {
                    // Closed by the kernel and now empty: done.
                    source.mark_finalized();
                    self.closing[key] = false;
                }
                None => {}
            }
        }
        let Some((key, taken)) = found else {
            return Ok(None);
        };
        self.current = key;
        Ok(Some(SubBufGuard::new(&mut self.sources[key], taken)))
    }

    /// Delivers what every buffer has ready now, without waiting.
    pub fn consume(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        let mut delivered = 0;
        for source in &mut self.sources {
            delivered += source.drain(f)?;
        }
        Ok(delivered)
    }

    /// For stopping without losing the tail, with the pull API: makes every
    /// partly filled sub-buffer ready; [`Reader::next`] then returns them
    /// with the rest. In read mode, `next` reads everything there is from
    /// then on until each buffer runs dry, even with
    /// [`Reader::read_finished_only`].
    ///
    /// ```no_run
    /// # let mut reader = relay_reader::Reader::open("/sys/kernel/debug/relay_klog/cpu", relay_reader::Mode::Auto)?;
    /// reader.flush()?;
    /// while let Some(sb) = reader.next()? {
    ///     // the last sub-buffers, the partly filled ones included
    /// }
    /// # Ok::<(), relay_reader::Error>(())
    /// ```
    pub fn flush(&mut self) -> Result<()> {
        for source in &mut self.sources {
            source.flush()?;
        }
        Ok(())
    }

    /// For stopping without losing the tail: makes every partly filled
    /// sub-buffer ready and delivers everything. A buffer that fails (its
    /// callback's destination is full, say) does not keep the others from
    /// being drained: every buffer is tried, and the first error returned.
    pub fn flush_and_drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        let mut delivered = 0;
        let mut first_error = None;
        for source in &mut self.sources {
            match source.flush_and_drain(f) {
                Ok(n) => delivered += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
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

/// The poller's fd (an epoll fd): readable when a buffer has data, for
/// tokio's `AsyncFd`, mio or a hand-written epoll loop; then call
/// `wait(Duration::ZERO)` and [`Reader::next`] until `None` (or
/// [`Reader::consume`]). See `examples/tokio_asyncfd.rs`.
impl AsFd for Reader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.waiter.as_fd()
    }
}

/// The same fd as [`AsFd`], for APIs that take a raw fd (tokio's `AsyncFd`).
/// It stays open and is the same fd for as long as the reader lives, as
/// `AsyncFd::register` asks of it.
impl AsRawFd for Reader {
    fn as_raw_fd(&self) -> RawFd {
        self.waiter.as_raw_fd()
    }
}
