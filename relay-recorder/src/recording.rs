//! [`Recording`]: one way to record a channel, for every program.
//!
//! A recording finds the channel's buffers, resolves the mode, reads them
//! with a pinned thread per buffer or with one thread, picks up buffers of
//! CPUs that come online, stops on a [`Stop`], a duration, a size limit or
//! once the kernel closed the channel, saves the partly filled sub-buffers
//! on the way out, and reports a [`Summary`].
//!
//! ```no_run
//! use relay_recorder::{Output, Recording};
//! use relay_recorder::stop::Stop;
//! use std::time::Duration;
//!
//! let stop = Stop::on_signals(&[signal_hook::consts::SIGINT])?;
//! let outcome = Recording::new("/sys/kernel/debug/relay_klog/cpu")
//!     .output(Output::cpu_files("trace"))
//!     .stop(&stop)
//!     .duration(Duration::from_secs(10))
//!     .run()?;
//! outcome.summary.write_text("example", &mut std::io::stderr())?;
//! outcome.result?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_reader::{BufStats, Mode, OpenOptions, PaddingWord, Reader, SubBuf};

use crate::idle::IdleFlush;
use crate::pinned::{PinnedReaders, SinkFactory};
use crate::sink::{OneStream, PerCpuFiles, Shared, Sink};
use crate::stop::Stop;
use crate::summary::Summary;
use crate::{realtime, Error, Result};

/// How the buffers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threads {
    /// A thread per buffer, pinned to the buffer's CPU (unpinned for a
    /// global buffer), as blktrace does: see the module `pinned`'s notes
    /// in the crate documentation of [`crate`].
    #[default]
    PerBuffer,
    /// One thread polls every buffer.
    One,
}

impl Threads {
    /// `per-buffer` or `one`.
    pub fn name(self) -> &'static str {
        match self {
            Threads::PerBuffer => "per-buffer",
            Threads::One => "one",
        }
    }
}

/// The scheduling the reading threads run under (see [`crate::realtime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduling {
    /// Whatever the process runs under.
    #[default]
    Inherit,
    /// `SCHED_FIFO` at this priority (1-99): an error where the process
    /// may not use it.
    Fifo(u8),
    /// `SCHED_FIFO` at this priority where the process may use it (root,
    /// `CAP_SYS_NICE`, an `RLIMIT_RTPRIO` of at least the priority), the
    /// inherited policy otherwise: what a recorder that should lose nothing
    /// by default asks for. The summary says which it got.
    FifoIfPermitted(u8),
    /// The normal policy with this custom slice (Linux 6.12 and later).
    Slice(Duration),
}

impl fmt::Display for Scheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheduling::Inherit => f.write_str("inherited policy"),
            Scheduling::Fifo(priority) => write!(f, "SCHED_FIFO priority {priority}"),
            Scheduling::FifoIfPermitted(priority) => {
                write!(f, "SCHED_FIFO priority {priority} where permitted")
            }
            Scheduling::Slice(slice) => write!(f, "{} µs slice", slice.as_micros()),
        }
    }
}

/// Where the data goes, for the usual cases; [`Recording::sinks`] takes
/// any [`Sink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `<dir>/<prefix><cpu>` for every buffer; with `rotate_at`, files
    /// `<prefix><cpu>.0`, `.1`, ... of about that many bytes each.
    PerCpuFiles {
        /// The directory, created if missing.
        dir: PathBuf,
        /// The file names' prefix.
        prefix: String,
        /// Start a new file past this many bytes.
        rotate_at: Option<u64>,
    },
    /// Everything into one file, a sub-buffer at a time.
    File(PathBuf),
    /// Everything to standard output, a sub-buffer at a time.
    Stdout,
}

impl Output {
    /// `<dir>/cpu<N>` for every buffer, as relay-apps names them, without
    /// rotation.
    pub fn cpu_files(dir: impl Into<PathBuf>) -> Output {
        Output::PerCpuFiles {
            dir: dir.into(),
            prefix: "cpu".into(),
            rotate_at: None,
        }
    }

    /// A sink for each buffer: its own files, or a handle on the one
    /// stream they share. Nothing is created until the first sink is made
    /// (a recording makes them once its channel is open), so a channel that
    /// cannot be opened leaves no empty or truncated output behind.
    pub fn sinks(&self) -> SinkFactory {
        match self.clone() {
            Output::PerCpuFiles {
                dir,
                prefix,
                rotate_at,
            } => Box::new(move |_cpu| {
                let files = PerCpuFiles::create(&dir, prefix.clone())?;
                Ok(Box::new(match rotate_at {
                    Some(bytes) => files.rotate_at(bytes),
                    None => files,
                }) as Box<dyn Sink + Send>)
            }),
            Output::File(path) => {
                let mut shared = None;
                Box::new(move |_cpu| {
                    if shared.is_none() {
                        shared = Some(Shared::new(OneStream::create(&path)?));
                    }
                    let stream = shared.clone().expect("made above");
                    Ok(Box::new(stream) as Box<dyn Sink + Send>)
                })
            }
            Output::Stdout => {
                let shared = Shared::new(OneStream::stdout());
                Box::new(move |_cpu| Ok(Box::new(shared.clone()) as Box<dyn Sink + Send>))
            }
        }
    }
}

/// Called about once per interval with the counters so far.
type ProgressFn = Box<dyn FnMut(&Summary) + Send>;

/// A recording of one channel, configured builder-style, then
/// [`run`](Recording::run) (or [`start`](Recording::start) for a caller
/// that acts between the phases, as relay-blktrace stops its trace before
/// the last drain).
pub struct Recording {
    channel: PathBuf,
    mode: Mode,
    padding_word: PaddingWord,
    threads: Threads,
    scheduling: Scheduling,
    stop: Option<Stop>,
    duration: Option<Duration>,
    size_limit: Option<u64>,
    output: Option<Output>,
    sinks: Option<SinkFactory>,
    finished_only: bool,
    idle_flush: Option<Duration>,
    progress: Option<(Duration, ProgressFn)>,
}

impl fmt::Debug for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording")
            .field("channel", &self.channel)
            .field("mode", &self.mode)
            .field("threads", &self.threads)
            .field("scheduling", &self.scheduling)
            .field("duration", &self.duration)
            .field("size_limit", &self.size_limit)
            .field("output", &self.output)
            .field("idle_flush", &self.idle_flush)
            .finish_non_exhaustive()
    }
}

impl Recording {
    /// A recording of the channel at `channel` (`<dir>/<base>` for the
    /// buffer files `<base>0`, `<base>1`, ..., or one relay file), in
    /// [`Mode::Auto`], a thread per buffer, into per-CPU files `cpuN` of the
    /// current directory, until the kernel closes the channel.
    pub fn new(channel: impl Into<PathBuf>) -> Recording {
        Recording {
            channel: channel.into(),
            mode: Mode::Auto,
            padding_word: PaddingWord::Auto,
            threads: Threads::default(),
            scheduling: Scheduling::default(),
            stop: None,
            duration: None,
            size_limit: None,
            output: None,
            sinks: None,
            finished_only: false,
            idle_flush: None,
            progress: None,
        }
    }

    /// How to read (resolved once for the channel: every buffer is read
    /// in the mode the first one resolves to).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The size of relay-app mode's padding words (detected by default;
    /// see [`PaddingWord`]).
    pub fn padding_word(mut self, word: PaddingWord) -> Self {
        self.padding_word = word;
        self
    }

    /// A thread per buffer (the default) or one thread.
    pub fn threads(mut self, threads: Threads) -> Self {
        self.threads = threads;
        self
    }

    /// The scheduling of the reading threads, set on the calling thread
    /// before they start (they inherit it).
    pub fn scheduling(mut self, scheduling: Scheduling) -> Self {
        self.scheduling = scheduling;
        self
    }

    /// Stops once `stop` is raised (a signal, another thread); the wait
    /// ends at once, without polling a flag.
    pub fn stop(mut self, stop: &Stop) -> Self {
        self.stop = Some(stop.clone());
        self
    }

    /// Stops after `duration`; zero takes what the channel holds now and
    /// stops (a snapshot).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Stops once this many bytes were recorded; what the kernel already
    /// holds is still saved, so the recording may end a little above it.
    pub fn size_limit(mut self, bytes: u64) -> Self {
        self.size_limit = Some(bytes);
        self
    }

    /// Where the data goes (per-CPU files of the current directory if
    /// neither this nor [`sinks`](Recording::sinks) is given).
    pub fn output(mut self, output: Output) -> Self {
        self.output = Some(output);
        self.sinks = None;
        self
    }

    /// A sink for each buffer, made from its CPU number when the buffer is
    /// opened: for data that needs more than [`Output`] (counting, cutting
    /// records, checking). Each buffer's sub-buffers reach its sink in order.
    pub fn sinks(mut self, sinks: SinkFactory) -> Self {
        self.sinks = Some(sinks);
        self.output = None;
        self
    }

    /// In read mode, reads only finished sub-buffers until the end (see
    /// [`Reader::read_finished_only`]), for writers that fill a record
    /// after reserving it, such as blktrace.
    pub fn finished_subbufs_only(mut self, on: bool) -> Self {
        self.finished_only = on;
        self
    }

    /// Live output: a buffer that delivered nothing for `interval` hands
    /// over the records waiting in its partly filled sub-buffer, and its
    /// sink is flushed ([`Sink::flush`]) after every delivery, so that each
    /// record reaches the output about `interval` after it was written at
    /// the latest, however slowly the sub-buffer fills. Off by default:
    /// data then arrives a sub-buffer at a time.
    ///
    /// The records are taken through `RELAY_IOC_FLUSH` where the channel
    /// has it (the kernel series, `relay_app` channels on stock kernels).
    /// Elsewhere only read mode can take them, by reading the sub-buffer
    /// being written, and only from a buffer's own pinned thread
    /// ([`Threads::PerBuffer`] on a per-CPU channel): that is safe for
    /// writers that fill each record with preemption or interrupts off on
    /// their CPU (`relay_write()`, blktrace's `relay_reserve()` and fill),
    /// so that no record is half written while that thread runs; do not ask
    /// for it with a writer that fills a reservation later. Buffers that
    /// can do neither deliver whole sub-buffers as before (see
    /// [`relay_reader::Reader::take_partial`]).
    pub fn flush_when_idle(mut self, interval: Duration) -> Self {
        self.idle_flush = Some(interval);
        self
    }

    /// Calls `f` about every `interval` with the counters so far.
    pub fn progress(
        mut self,
        interval: Duration,
        f: impl FnMut(&Summary) + Send + 'static,
    ) -> Self {
        self.progress = Some((interval, Box::new(f)));
        self
    }

    /// Opens every buffer and its sink, sets the scheduling and starts the
    /// reading threads. An error here means nothing was read.
    pub fn start(self) -> Result<Running> {
        let scheduling = match self.scheduling {
            Scheduling::Inherit => Scheduling::Inherit.to_string(),
            Scheduling::Fifo(priority) => {
                realtime::set_fifo_priority(priority)?;
                Scheduling::Fifo(priority).to_string()
            }
            // Whatever refuses SCHED_FIFO (no privilege, a sandbox without
            // sched_setscheduler), the recording goes on, and says so.
            Scheduling::FifoIfPermitted(priority) => match realtime::set_fifo_priority(priority) {
                Ok(()) => Scheduling::Fifo(priority).to_string(),
                Err(Error::Realtime { source, .. })
                    if source.raw_os_error() == Some(libc::EPERM) =>
                {
                    format!("{} (SCHED_FIFO not permitted)", Scheduling::Inherit)
                }
                Err(e) => format!("{} (SCHED_FIFO refused: {e})", Scheduling::Inherit),
            },
            Scheduling::Slice(slice) => {
                realtime::set_slice(slice)?;
                Scheduling::Slice(slice).to_string()
            }
        };
        let sinks = match (self.sinks, &self.output) {
            (Some(sinks), _) => sinks,
            (None, Some(output)) => output.sinks(),
            (None, None) => Output::cpu_files(".").sinks(),
        };
        // Whatever ends the recording raises `drain`: the reading threads
        // watch it alone, so a caller of `start` decides when they take the
        // last data (after stopping its writers, say).
        let drain = Stop::new();
        let limit = ByteLimit {
            written: Arc::new(AtomicU64::new(0)),
            limit: self.size_limit,
            reached: drain.clone(),
        };
        let sinks = limit.wrap(sinks);
        let started = Instant::now();
        let options = OpenOptions::new(self.mode).padding_word(self.padding_word);
        let engine = match self.threads {
            Threads::PerBuffer => {
                let readers = PinnedReaders::start(
                    &self.channel,
                    options,
                    self.finished_only,
                    self.idle_flush,
                    &drain,
                    sinks,
                )?;
                if let Some(stop) = &self.stop {
                    stop.wake_on_stop(readers.waker());
                }
                Engine::PerBuffer(readers)
            }
            Threads::One => {
                let mut reader = Reader::open_with(&self.channel, options)?;
                reader.read_finished_only(self.finished_only);
                if let Some(stop) = &self.stop {
                    stop.wake_on_stop(reader.waker());
                }
                drain.wake_on_stop(reader.waker());
                let mut sink = SinkPerBuffer {
                    make: sinks,
                    sinks: BTreeMap::new(),
                };
                for stats in reader.stats() {
                    sink.open(stats.cpu)?;
                }
                Engine::One(Box::new(OneThread { reader, sink }))
            }
        };
        Ok(Running {
            channel: self.channel,
            threads: self.threads,
            scheduling,
            engine,
            stop: self.stop,
            drain,
            started,
            deadline: self.duration.map(|d| started + d),
            progress: self.progress.map(|(interval, f)| (interval, f, started)),
            idle: self.idle_flush.map(|every| IdleFlush::new(every, started)),
        })
    }

    /// Records until the end ([`Running::record`]) and saves everything
    /// ([`Running::finish`]).
    pub fn run(self) -> Result<Outcome> {
        Ok(self.start()?.run_to_end())
    }
}

/// What a recording ended with: the counters, and the first error met
/// (everything read before it is saved regardless).
#[derive(Debug)]
pub struct Outcome {
    /// Every buffer's counters.
    pub summary: Summary,
    /// The first error of any reading thread or sink.
    pub result: Result<()>,
}

/// A recording under way (see [`Recording::start`]).
pub struct Running {
    channel: PathBuf,
    threads: Threads,
    /// The scheduling the reading threads got, as the summary says it.
    scheduling: String,
    engine: Engine,
    stop: Option<Stop>,
    drain: Stop,
    started: Instant,
    deadline: Option<Instant>,
    progress: Option<(Duration, ProgressFn, Instant)>,
    /// The one-thread engine's idle timer (the per-buffer threads keep
    /// their own).
    idle: Option<IdleFlush>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("channel", &self.channel)
            .field("threads", &self.threads)
            .field("mode", &self.mode())
            .field("buffers", &self.buffers())
            .finish_non_exhaustive()
    }
}

enum Engine {
    PerBuffer(PinnedReaders),
    One(Box<OneThread>),
}

struct OneThread {
    reader: Reader,
    sink: SinkPerBuffer,
}

/// The longest wait without a progress callback: the readers wake for
/// data, [`Stop`], and once a second to look for new buffers anyway.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

impl Running {
    /// The mode the channel is read in (never [`Mode::Auto`]).
    pub fn mode(&self) -> Mode {
        match &self.engine {
            Engine::PerBuffer(readers) => readers.mode(),
            Engine::One(one) => one.reader.mode(),
        }
    }

    /// relay-app mode: the size of the padding words, [`PaddingWord::Auto`]
    /// until the sub-buffers told it; `None` in the other modes.
    pub fn padding_word(&self) -> Option<PaddingWord> {
        match &self.engine {
            Engine::PerBuffer(readers) => readers.padding_word(),
            Engine::One(one) => one.reader.padding_word(),
        }
    }

    /// How many buffers are read.
    pub fn buffers(&self) -> usize {
        match &self.engine {
            Engine::PerBuffer(readers) => readers.buffers(),
            Engine::One(one) => one.reader.sources().len(),
        }
    }

    /// True when each buffer has a thread pinned to its CPU (a thread per
    /// buffer of a per-CPU channel).
    pub fn pinned(&self) -> bool {
        matches!(self.engine, Engine::PerBuffer(_)) && self.buffers() > 1
    }

    /// Ends the recording at `deadline` instead of the
    /// [`duration`](Recording::duration) from [`start`](Recording::start):
    /// for a caller that starts its writers after opening several
    /// recordings and wants one end for all.
    pub fn end_at(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// The scheduling the reading threads got (for a
    /// [`Scheduling::FifoIfPermitted`], whether they got `SCHED_FIFO`).
    pub fn scheduling(&self) -> &str {
        &self.scheduling
    }

    /// The channel's path.
    pub fn channel(&self) -> &Path {
        &self.channel
    }

    /// Every buffer's counters so far.
    pub fn stats(&self) -> Vec<BufStats> {
        match &self.engine {
            Engine::PerBuffer(readers) => readers.stats(),
            Engine::One(one) => one.reader.stats(),
        }
    }

    /// The counters so far, as a [`Summary`].
    pub fn summary(&self) -> Summary {
        Summary {
            channel: self.channel.clone(),
            mode: self.mode().name().into(),
            padding_word: self.padding_word().and_then(PaddingWord::bytes),
            threads: self.threads.name().into(),
            scheduling: self.scheduling.clone(),
            seconds: self.started.elapsed().as_secs_f64(),
            cpus: self.stats().iter().map(Into::into).collect(),
        }
    }

    /// True once something ended the recording: the stop, the duration, the
    /// size limit, a failed thread, or a channel closed and read.
    fn over(&self) -> bool {
        self.stop.as_ref().is_some_and(Stop::is_raised)
            || self.drain.is_raised()
            || self.deadline.is_some_and(|d| Instant::now() >= d)
            || match &self.engine {
                Engine::PerBuffer(_) => false,
                Engine::One(one) => one.reader.finished(),
            }
    }

    /// Reads until something ends the recording; the data stays with the
    /// readers until [`finish`](Running::finish).
    pub fn record(&mut self) -> Result<()> {
        while !self.over() {
            let mut timeout = IDLE_WAIT;
            if let Some(deadline) = self.deadline {
                timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
            }
            if let Some((interval, _, last)) = &self.progress {
                timeout = timeout.min(interval.saturating_sub(last.elapsed()));
            }
            match &mut self.engine {
                Engine::PerBuffer(readers) => {
                    if !readers.wait(timeout)? {
                        break;
                    }
                }
                Engine::One(one) => {
                    let OneThread { reader, sink } = one.as_mut();
                    if let Some(idle) = &self.idle {
                        timeout = idle.wait(timeout, Instant::now());
                    }
                    let delivered = reader.poll(timeout, &mut |sb| sink.write(&sb))?;
                    if let Some(idle) = &mut self.idle {
                        idle.after_poll(delivered, sink, |f| reader.take_partial(false, f))?;
                    }
                }
            }
            self.report_progress();
        }
        Ok(())
    }

    /// [`record`](Running::record), then [`finish`](Running::finish): the
    /// outcome carries the first error met, recording's before finishing's.
    pub fn run_to_end(mut self) -> Outcome {
        let recorded = self.record();
        let mut outcome = self.finish();
        outcome.result = recorded.and(outcome.result);
        outcome
    }

    fn report_progress(&mut self) {
        let due = self
            .progress
            .as_ref()
            .is_some_and(|(interval, _, last)| last.elapsed() >= *interval);
        if due {
            let summary = self.summary();
            if let Some((_, f, last)) = &mut self.progress {
                *last = Instant::now();
                f(&summary);
            }
        }
    }

    /// Takes what the kernel still holds (partly filled sub-buffers
    /// included), finishes every sink and returns the counters with the
    /// first error met. The data read before an error is saved.
    pub fn finish(self) -> Outcome {
        // Everything but the counters and the time, as they stand now.
        let mut summary = self.summary();
        let Running {
            engine,
            drain,
            started,
            ..
        } = self;
        drain.raise();
        let (stats, result) = match engine {
            Engine::PerBuffer(readers) => readers.finish(),
            Engine::One(one) => {
                let OneThread {
                    mut reader,
                    mut sink,
                } = *one;
                let drained = reader.flush_and_drain(&mut |sb| sink.write(&sb));
                let finished = sink.finish();
                (reader.stats(), drained.map(drop).and(finished))
            }
        };
        summary.seconds = started.elapsed().as_secs_f64();
        summary.cpus = stats.iter().map(Into::into).collect();
        Outcome {
            summary,
            result: result.map_err(Into::into),
        }
    }
}

/// A sink per buffer for the one-thread engine, made as the buffers
/// appear, as the per-buffer engine makes them.
struct SinkPerBuffer {
    make: SinkFactory,
    sinks: BTreeMap<u32, Box<dyn Sink + Send>>,
}

impl SinkPerBuffer {
    fn open(&mut self, cpu: u32) -> relay_reader::Result<&mut Box<dyn Sink + Send>> {
        if !self.sinks.contains_key(&cpu) {
            let sink = (self.make)(cpu)?;
            self.sinks.insert(cpu, sink);
        }
        Ok(self.sinks.get_mut(&cpu).expect("inserted above"))
    }
}

impl Sink for SinkPerBuffer {
    fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
        self.open(sb.cpu)?.write(sb)
    }

    fn finish(&mut self) -> relay_reader::Result<()> {
        let mut result = Ok(());
        for sink in self.sinks.values_mut() {
            let finished = sink.finish();
            if result.is_ok() {
                result = finished;
            }
        }
        result
    }

    fn flush(&mut self) -> relay_reader::Result<()> {
        for sink in self.sinks.values_mut() {
            sink.flush()?;
        }
        Ok(())
    }
}

/// The size limit: bytes every sink wrote, and the stop raised once they
/// reach the limit.
#[derive(Clone)]
struct ByteLimit {
    written: Arc<AtomicU64>,
    limit: Option<u64>,
    reached: Stop,
}

impl ByteLimit {
    /// Makes every sink of `sinks` count towards the limit (if any).
    fn wrap(self, mut sinks: SinkFactory) -> SinkFactory {
        if self.limit.is_none() {
            return sinks;
        }
        Box::new(move |cpu| {
            Ok(Box::new(Limited {
                inner: sinks(cpu)?,
                limit: self.clone(),
            }) as Box<dyn Sink + Send>)
        })
    }
}

/// A sink that counts towards a [`ByteLimit`].
struct Limited {
    inner: Box<dyn Sink + Send>,
    limit: ByteLimit,
}

impl Sink for Limited {
    fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
        self.inner.write(sb)?;
        let len = sb.data.len() as u64;
        let written = self.limit.written.fetch_add(len, Ordering::Relaxed) + len;
        if self.limit.limit.is_some_and(|limit| written >= limit) {
            self.limit.reached.raise();
        }
        Ok(())
    }

    fn finish(&mut self) -> relay_reader::Result<()> {
        self.inner.finish()
    }

    fn flush(&mut self) -> relay_reader::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// (sink's CPU, sub-buffer's CPU, bytes) of every write.
    type Log = Arc<Mutex<Vec<(u32, u32, usize)>>>;

    /// A sink that records what it got, and can fail its finish.
    struct Probe {
        cpu: u32,
        log: Log,
        fail_finish: bool,
    }

    impl Sink for Probe {
        fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
            self.log
                .lock()
                .unwrap()
                .push((self.cpu, sb.cpu, sb.data.len()));
            Ok(())
        }

        fn finish(&mut self) -> relay_reader::Result<()> {
            if self.fail_finish {
                return Err(relay_reader::Error::Sink {
                    target: format!("probe {}", self.cpu),
                    source: std::io::Error::other("full"),
                });
            }
            Ok(())
        }
    }

    fn probes(log: &Log, failing: u32) -> SinkFactory {
        let log = Arc::clone(log);
        Box::new(move |cpu| {
            Ok(Box::new(Probe {
                cpu,
                log: Arc::clone(&log),
                fail_finish: cpu == failing,
            }) as Box<dyn Sink + Send>)
        })
    }

    fn sb(cpu: u32, data: &[u8]) -> SubBuf<'_> {
        SubBuf { cpu, seq: 0, data }
    }

    #[test]
    fn one_thread_gives_each_buffer_its_own_sink_and_finishes_them_all() {
        let log = Arc::default();
        let mut sinks = SinkPerBuffer {
            make: probes(&log, 1),
            sinks: BTreeMap::new(),
        };
        sinks.write(&sb(0, b"ab")).unwrap();
        sinks.write(&sb(1, b"c")).unwrap();
        sinks.write(&sb(0, b"d")).unwrap();
        // Every sink's sub-buffers reached that sink only.
        assert_eq!(*log.lock().unwrap(), vec![(0, 0, 2), (1, 1, 1), (0, 0, 1)]);
        // The failing sink's error comes back, and the other one was
        // finished too (no early return).
        let err = sinks.finish().unwrap_err();
        assert!(err.to_string().contains("probe 1"), "{err}");
    }

    #[test]
    fn the_size_limit_raises_the_drain_once_reached_across_sinks() {
        let log = Arc::default();
        let reached = Stop::new();
        let limit = ByteLimit {
            written: Arc::new(AtomicU64::new(0)),
            limit: Some(10),
            reached: reached.clone(),
        };
        let mut make = limit.wrap(probes(&log, u32::MAX));
        let (mut a, mut b) = (make(0).unwrap(), make(1).unwrap());
        a.write(&sb(0, &[0; 4])).unwrap();
        b.write(&sb(1, &[0; 5])).unwrap();
        assert!(!reached.is_raised(), "9 of 10 bytes");
        a.write(&sb(0, &[0; 1])).unwrap();
        assert!(reached.is_raised(), "10 of 10 bytes");
        assert_eq!(log.lock().unwrap().len(), 3, "the data still went through");
    }

    #[test]
    fn no_limit_wraps_nothing() {
        let log = Arc::default();
        let reached = Stop::new();
        let limit = ByteLimit {
            written: Arc::new(AtomicU64::new(0)),
            limit: None,
            reached: reached.clone(),
        };
        let mut make = limit.wrap(probes(&log, u32::MAX));
        make(0).unwrap().write(&sb(0, &[0; 1 << 20])).unwrap();
        assert!(!reached.is_raised());
    }

    #[test]
    fn outputs_create_nothing_until_a_sink_is_made() {
        let dir = std::env::temp_dir().join(format!("relay-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A file that exists is not truncated by making the factory (the
        // channel may turn out not to open)...
        std::fs::write(dir.join("out"), b"keep").unwrap();
        let mut make = Output::File(dir.join("out")).sinks();
        let mut files = Output::cpu_files(dir.join("a/b")).sinks();
        assert_eq!(std::fs::read(dir.join("out")).unwrap(), b"keep");
        assert!(!dir.join("a").exists());
        // ...only by making a sink, once for every buffer's handle.
        let (mut s0, mut s1) = (make(0).unwrap(), make(1).unwrap());
        s0.write(&sb(0, b"x")).unwrap();
        s1.write(&sb(1, b"y")).unwrap();
        s0.finish().unwrap();
        s1.finish().unwrap();
        assert_eq!(std::fs::read(dir.join("out")).unwrap(), b"xy");
        let mut sink = files(3).unwrap();
        sink.write(&sb(3, b"xyz")).unwrap();
        sink.finish().unwrap();
        assert_eq!(std::fs::read(dir.join("a/b/cpu3")).unwrap(), b"xyz");
        // A directory that cannot be made is an error of the first sink.
        let mut bad = Output::cpu_files(dir.join("out/sub")).sinks();
        let err = bad(0).err().expect("a directory under a file");
        assert!(err.to_string().contains("out/sub"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scheduling_names_what_the_summary_reports() {
        assert_eq!(Scheduling::Inherit.to_string(), "inherited policy");
        assert_eq!(Scheduling::Fifo(10).to_string(), "SCHED_FIFO priority 10");
        assert_eq!(
            Scheduling::FifoIfPermitted(10).to_string(),
            "SCHED_FIFO priority 10 where permitted"
        );
        assert_eq!(
            Scheduling::Slice(Duration::from_micros(100)).to_string(),
            "100 µs slice"
        );
    }
}
