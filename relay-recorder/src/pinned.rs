//! [`PinnedReaders`]: every buffer of a channel read by a thread of its own,
//! pinned to the buffer's CPU, as blktrace, staprun and the relay-apps read
//! example do.
//!
//! Why threads, and why pinned: relay wakes a buffer's readers from the CPU
//! that wrote into it (an `irq_work` queued on that CPU at the sub-buffer
//! switch). A single reader serving every CPU's buffer needs a cross-CPU
//! wake-up for all but one of them, then a turn on its own CPU, where that
//! CPU's producer competes with it; if its CPU stalls (a virtual CPU the host
//! does not run, an interrupt storm), the other CPUs' buffers fill unread.
//! A reader pinned to CPU N is woken on N by N's own sub-buffer switch, and
//! while it has the CPU, N's producer (unless it writes from interrupts)
//! waits: a stall of CPU N stops N's producer as well as N's reader, so the
//! buffer cannot fill behind its reader's back. With a policy that lets the
//! woken reader preempt the producer (`SCHED_FIFO` or a short EEVDF slice,
//! see [`crate::realtime`]), a buffer of n sub-buffers then has n - 1
//! sub-buffers of slack for the time its reader needs to drain it.
//!
//! A channel with one buffer file (a global buffer) gets one thread, unpinned.
//!
//! This is the engine of [`crate::Threads::PerBuffer`]; [`crate::Recording`]
//! is the way in.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relay_reader::channel::{buffer_files, BufferFile};
use relay_reader::source::SharedPadding;
use relay_reader::{
    BufStats, Error, Mode, OpenOptions, PaddingWord, Reader, Result, Waiter, Waker,
};

use crate::idle::IdleFlush;
use crate::sink::Sink;
use crate::stop::Stop;

/// Makes the sink of a buffer's thread from the buffer's CPU: its own
/// per-CPU files, or a handle on one shared stream ([`crate::sink::Shared`]).
pub type SinkFactory = Box<dyn FnMut(u32) -> Result<Box<dyn Sink + Send>> + Send>;

/// How long a buffer's thread waits in one `poll`: an upper bound only,
/// since the kernel and [`Stop`] wake it; `Reader::poll` also wakes once a
/// second to notice a buffer file that disappeared.
const THREAD_POLL: Duration = Duration::from_secs(1);

/// How often [`PinnedReaders::wait`] looks for buffer files of CPUs that
/// came online.
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Every buffer of one relay channel, each read into its sink by a thread
/// pinned to the buffer's CPU.
pub struct PinnedReaders {
    base: PathBuf,
    mode: Mode,
    /// Relay-app mode: the padding word asked for, and the size the
    /// channel's buffers decided on.
    padding_word: PaddingWord,
    padding: SharedPadding,
    stop: Stop,
    /// Woken by `stop` and by every thread that ends.
    waiter: Waiter,
    threads: Vec<BufferThread>,
    sink_for: SinkFactory,
    pin: bool,
    finished_only: bool,
    idle_flush: Option<Duration>,
    last_scan: Instant,
}

impl std::fmt::Debug for PinnedReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedReaders")
            .field("base", &self.base)
            .field("mode", &self.mode)
            .field("threads", &self.threads.len())
            .field("pin", &self.pin)
            .finish()
    }
}

/// One buffer's thread, and the counters it publishes after every poll.
struct BufferThread {
    path: PathBuf,
    stats: Arc<Mutex<BufStats>>,
    /// Set by the thread as it ends (see [`Ended`]), before it wakes the
    /// waiter: `JoinHandle::is_finished` turns true only later.
    done: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl PinnedReaders {
    /// Opens every buffer of the channel at `base` in `mode` (all of them in
    /// the mode the first one resolves to), then starts one thread per
    /// buffer, writing into a sink from `sink_for`. The threads inherit the
    /// calling thread's scheduling policy (see [`crate::realtime`]).
    ///
    /// Threads stop once `stop` is raised (saving the partly filled
    /// sub-buffers, as [`Reader::flush_and_drain`]) or once their buffer was
    /// finalized and read. A thread that fails raises `stop`, so the others
    /// end too, with everything they had read saved.
    pub fn start(
        base: impl AsRef<Path>,
        options: OpenOptions,
        finished_only: bool,
        idle_flush: Option<Duration>,
        stop: &Stop,
        sink_for: SinkFactory,
    ) -> Result<PinnedReaders> {
        let base = base.as_ref();
        let waiter = Waiter::new().map_err(|e| Error::io(base, "create poller", e))?;
        stop.wake_on_stop(waiter.waker());
        let files = buffer_files(base)?;
        let mut readers = PinnedReaders {
            base: base.into(),
            mode: options.mode,
            padding_word: options.padding_word,
            padding: SharedPadding::default(),
            stop: stop.clone(),
            waiter,
            threads: Vec::new(),
            sink_for,
            // One buffer file on a machine with more CPUs is a global buffer,
            // written from every CPU: no CPU is its own.
            pin: files.len() > 1,
            finished_only,
            idle_flush,
            last_scan: Instant::now(),
        };
        // Open every buffer, then every sink, before any thread starts: a
        // bad channel is an error here, before an output file is made, and
        // not a half-started recording.
        let mut opened = Vec::new();
        for file in &files {
            let reader = readers.open_buffer(file)?;
            readers.mode = reader.mode();
            opened.push((file, reader));
        }
        let mut ready = Vec::new();
        for (file, reader) in opened {
            let sink = (readers.sink_for)(file.cpu)?;
            ready.push((file, reader, sink));
        }
        for (file, reader, sink) in ready {
            readers.spawn(file, reader, sink)?;
        }
        Ok(readers)
    }

    /// Opens a buffer in the channel's mode, sharing the padding-word
    /// decision with the other buffers' readers.
    fn open_buffer(&self, file: &BufferFile) -> Result<Reader> {
        let mut reader = Reader::open_buffer_with(file, self.options(), self.padding.clone())?;
        reader.read_finished_only(self.finished_only);
        Ok(reader)
    }

    /// A handle that wakes [`PinnedReaders::wait`] from another thread.
    pub fn waker(&self) -> Waker {
        self.waiter.waker()
    }

    fn spawn(
        &mut self,
        file: &BufferFile,
        reader: Reader,
        sink: Box<dyn Sink + Send>,
    ) -> Result<()> {
        let stats = Arc::new(Mutex::new(*reader.sources()[0].stats()));
        let done = Arc::new(AtomicBool::new(false));
        let thread = BufferRun {
            reader,
            sink,
            stop: self.stop.clone(),
            stats: Arc::clone(&stats),
            _ended: Ended {
                done: Arc::clone(&done),
                stop: self.stop.clone(),
                waker: self.waiter.waker(),
            },
            pin_to: self.pin.then_some(file.cpu),
            pinned: false,
            idle_flush: self.idle_flush,
        };
        let handle = std::thread::Builder::new()
            .name(format!("relay-cpu{}", file.cpu))
            .spawn(move || thread.run())
            .map_err(|e| Error::io(&file.path, "start a reading thread", e))?;
        self.threads.push(BufferThread {
            path: file.path.clone(),
            stats,
            done,
            handle: Some(handle),
        });
        Ok(())
    }

    /// The mode the channel is read in (never [`Mode::Auto`]).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// In relay-app mode, the channel's padding-word size (see
    /// [`Reader::padding_word`]); `None` in the other modes.
    pub fn padding_word(&self) -> Option<PaddingWord> {
        (self.mode == Mode::RelayApp).then(|| self.padding.get())
    }

    /// How buffers are opened: in the mode the first one resolved to.
    fn options(&self) -> OpenOptions {
        OpenOptions::new(self.mode).padding_word(self.padding_word)
    }

    /// How many buffers are read (one thread each).
    pub fn buffers(&self) -> usize {
        self.threads.len()
    }

    /// Counters of every buffer as of its thread's last poll, in the order
    /// the buffers were opened (CPU order, then CPUs that came online).
    pub fn stats(&self) -> Vec<BufStats> {
        self.threads.iter().map(|t| *lock(&t.stats)).collect()
    }

    /// Sleeps up to `timeout`, or until `stop` is raised or a thread ends;
    /// once a second it starts threads for buffer files that appeared (a CPU
    /// brought online creates its buffer). Returns `false` once the
    /// recording is over: `stop` raised, or every thread ended.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        if self.last_scan.elapsed() >= RESCAN_INTERVAL {
            self.rescan()?;
        }
        if self.running() {
            let until_scan = RESCAN_INTERVAL.saturating_sub(self.last_scan.elapsed());
            self.waiter
                .wait(timeout.min(until_scan))
                .map_err(|e| Error::io(&self.base, "wait", e))?;
        }
        Ok(self.running())
    }

    fn running(&self) -> bool {
        !self.stop.is_raised()
            && self
                .threads
                .iter()
                .any(|t| t.handle.is_some() && !t.done.load(Ordering::Acquire))
    }

    /// Starts threads for buffer files that appeared since the last look.
    /// Returns how many were started.
    pub fn rescan(&mut self) -> Result<usize> {
        self.last_scan = Instant::now();
        let files = match buffer_files(&self.base) {
            Ok(files) => files,
            // The channel is going away (its module was unloaded): the
            // threads see their buffers finalized or gone.
            Err(Error::ChannelNotFound { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut started = 0;
        for file in files {
            if self.threads.iter().all(|t| t.path != file.path) {
                let reader = self.open_buffer(&file)?;
                let sink = (self.sink_for)(file.cpu)?;
                self.spawn(&file, reader, sink)?;
                started += 1;
            }
        }
        Ok(started)
    }

    /// Raises `stop`, lets every thread save its partly filled sub-buffer
    /// and finish its sink, and returns every buffer's counters with the
    /// first error any thread met (the others' data is saved regardless).
    pub fn finish(mut self) -> (Vec<BufStats>, Result<()>) {
        let result = self.stop_and_join();
        (self.stats(), result)
    }

    /// Raises `stop` and waits for every thread still running; returns the
    /// first error any of them met.
    fn stop_and_join(&mut self) -> Result<()> {
        self.stop.raise();
        let mut result = Ok(());
        for thread in &mut self.threads {
            let Some(handle) = thread.handle.take() else {
                continue;
            };
            let ended = handle.join().unwrap_or_else(|_| {
                Err(Error::io(
                    &thread.path,
                    "read",
                    std::io::Error::other("the reading thread panicked"),
                ))
            });
            if result.is_ok() {
                result = ended;
            }
        }
        result
    }
}

impl Drop for PinnedReaders {
    fn drop(&mut self) {
        // Threads left running would keep reading into their sinks.
        if self.threads.iter().any(|t| t.handle.is_some()) {
            let _ = self.stop_and_join();
        }
    }
}

/// What one buffer's thread owns.
struct BufferRun {
    reader: Reader,
    sink: Box<dyn Sink + Send>,
    stop: Stop,
    stats: Arc<Mutex<BufStats>>,
    /// Dropped with the run, however it ends.
    _ended: Ended,
    pin_to: Option<u32>,
    /// The thread runs on `pin_to` only (the affinity took).
    pinned: bool,
    idle_flush: Option<Duration>,
}

/// Tells the controller that a buffer's thread ended, however it ended:
/// dropped when the thread returns or unwinds. A panic raises the stop, as
/// an error does, so the other threads save their data and end too.
struct Ended {
    done: Arc<AtomicBool>,
    stop: Stop,
    waker: Waker,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.stop.raise();
        }
        // Release: pairs with the Acquire load in `running()`, which then
        // sees the thread's last published counters.
        self.done.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

impl BufferRun {
    fn run(mut self) -> Result<()> {
        if let Some(cpu) = self.pin_to {
            // Best effort: a CPU that went offline since its buffer was
            // opened refuses the affinity, and its buffer can still be read
            // from anywhere.
            self.pinned = pin_to_cpu(cpu).is_ok();
        }
        self.stop.wake_on_stop(self.reader.waker());
        let result = self.record();
        let finished = self.sink.finish();
        self.publish();
        let result = result.and(finished);
        if result.is_err() {
            self.stop.raise();
        }
        // `self._ended` is dropped on the way out: the controller learns it.
        result
    }

    fn record(&mut self) -> Result<()> {
        let polled = self.poll_until_stopped();
        // What the kernel already holds is saved too, after a failed poll
        // as well (the sink may be fine).
        let drained = self.reader.flush_and_drain(&mut |sb| self.sink.write(&sb));
        polled.and(drained.map(drop))
    }

    fn poll_until_stopped(&mut self) -> Result<()> {
        let mut idle = self
            .idle_flush
            .map(|every| IdleFlush::new(every, Instant::now()));
        while !self.stop.is_raised() && !self.reader.finished() {
            let timeout = idle
                .as_ref()
                .map_or(THREAD_POLL, |idle| idle.wait(THREAD_POLL, Instant::now()));
            let delivered = self.reader.poll(timeout, &mut |sb| self.sink.write(&sb))?;
            if let Some(idle) = &mut idle {
                let on_writer_cpu = self.on_writer_cpu();
                let reader = &mut self.reader;
                idle.after_poll(delivered, &mut self.sink, |f| {
                    reader.take_partial(on_writer_cpu, f)
                })?;
            }
            self.publish();
        }
        Ok(())
    }

    /// True when this thread runs on the CPU that writes its buffer: pinned
    /// there, and still there (CPU hotplug breaks an affinity when the CPU
    /// goes offline).
    fn on_writer_cpu(&self) -> bool {
        self.pinned
            && self
                .pin_to
                .is_some_and(|cpu| nix::sched::sched_getcpu().ok() == Some(cpu as usize))
    }

    /// Publishes the buffer's counters for [`PinnedReaders::stats`]
    /// (without the Vec `Reader::stats` makes: this runs after every poll).
    fn publish(&self) {
        *lock(&self.stats) = *self.reader.sources()[0].stats();
    }
}

/// Lets the calling thread run on `cpu` only.
fn pin_to_cpu(cpu: u32) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu as usize)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

fn lock(stats: &Mutex<BufStats>) -> MutexGuard<'_, BufStats> {
    // Counters are plain values: a panicked writer leaves a valid copy.
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
