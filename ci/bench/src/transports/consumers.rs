//! The consumers of `relay-bench transports`, each doing the same work per
//! record (a [`Checker`]: every byte summed as 64-bit words, the record's
//! CPU and sequence number checked) and nothing else, writing nothing:
//!
//! - relay: a [`relay_recorder::Recording`] of relay_xbench's channel in
//!   mmap mode with its default thread per buffer, pinned to the buffer's
//!   CPU, into a [`Sink`] that checks the records ([`RelayRun`]);
//! - the BPF ring buffer: libbpf-rs's `RingBuffer` polled by one thread
//!   (the ring is shared by every CPU), its callback checking each record;
//! - the perf buffer: libbpf-rs's `PerfBuffer` (a ring per CPU) polled by
//!   one thread, the same callback ([`BpfThread`]).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::{
    Link, MapCore, MapFlags, MapHandle, Object, ObjectBuilder, PerfBufferBuilder, RingBufferBuilder,
};
use relay_reader::{Mode, SubBuf};
use relay_recorder::sink::Sink;
use relay_recorder::{Recording, Running};

/// relay_xbench's relay channel (buffers cpu0, cpu1, ...).
pub const RELAY_CHANNEL: &str = "/sys/kernel/debug/relay_xbench/cpu";

/// The BPF programs (`bpf/xbench.bpf.c`), compiled by build.rs.
const BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xbench.bpf.o"));

/// The tracepoint relay_xbench fires for every record (transport `tp`).
const TRACEPOINT: &str = "relay_xbench_record";

/// A record's id: CPU << 48 | sequence number (relay_xbench.c).
const CPU_SHIFT: u32 = 48;

/// How long a BPF consumer thread waits in one poll at most (it checks its
/// stop flag in between; data wakes it at once).
const BPF_POLL: Duration = Duration::from_millis(50);

/// What the consumers counted, added up over their threads.
#[derive(Debug, Default)]
pub struct Tally {
    records: AtomicU64,
    /// Records too short, of an unknown CPU, or a sub-buffer's tail that
    /// is no whole record.
    bad: AtomicU64,
    /// Places where a CPU's sequence numbers jump (a loss shows as one).
    gaps: AtomicU64,
    /// Lost-sample counts the perf buffer reported (PERF_RECORD_LOST).
    perf_lost: AtomicU64,
    /// The sum of every word of every record (kept so that no check is
    /// optimised away).
    checksum: AtomicU64,
}

/// A snapshot of a [`Tally`]; runs take differences of two.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Records received.
    pub records: u64,
    /// See [`Tally`].
    pub bad: u64,
    /// See [`Tally`].
    pub gaps: u64,
    /// See [`Tally`].
    pub perf_lost: u64,
}

impl Tally {
    /// The counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            records: self.records.load(Ordering::Acquire),
            bad: self.bad.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            perf_lost: self.perf_lost.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Sub for Counts {
    type Output = Counts;

    fn sub(self, before: Counts) -> Counts {
        Counts {
            records: self.records - before.records,
            bad: self.bad - before.bad,
            gaps: self.gaps - before.gaps,
            perf_lost: self.perf_lost - before.perf_lost,
        }
    }
}

/// The work every consumer does per record, counted locally and added to
/// the shared [`Tally`] by [`Checker::publish`].
#[derive(Debug)]
pub struct Checker {
    size: usize,
    /// Next sequence number expected of each CPU.
    next: Vec<u64>,
    records: u64,
    bad: u64,
    gaps: u64,
    sum: u64,
    tally: Arc<Tally>,
}

impl Checker {
    /// A checker of `size`-byte records from `n_cpus` CPUs.
    pub fn new(size: u32, n_cpus: u64, tally: Arc<Tally>) -> Checker {
        Checker {
            size: size as usize,
            next: vec![0; n_cpus as usize],
            records: 0,
            bad: 0,
            gaps: 0,
            sum: 0,
            tally,
        }
    }

    /// Checks one record; `data` may be longer than a record (the perf
    /// buffer pads samples to 8 bytes after its 4-byte size).
    #[inline]
    pub fn record(&mut self, data: &[u8]) {
        match data.get(..self.size) {
            Some(rec) => self.records(rec),
            None => self.bad += 1,
        }
    }

    /// Checks the records laid end to end in `data` (a relay sub-buffer):
    /// every word summed in one pass, then every record's id checked; a
    /// tail that is no whole record counts as bad.
    pub fn records(&mut self, data: &[u8]) {
        self.sum = self.sum.wrapping_add(word_sum(data));
        let mut records = data.chunks_exact(self.size);
        for rec in &mut records {
            let id = u64::from_ne_bytes(rec[..8].try_into().expect("8 bytes"));
            let seq = id & ((1 << CPU_SHIFT) - 1);
            match self.next.get_mut((id >> CPU_SHIFT) as usize) {
                Some(next) => {
                    // Every run numbers from 0 again.
                    if seq != *next && seq != 0 {
                        self.gaps += 1;
                    }
                    *next = seq + 1;
                    self.records += 1;
                }
                None => self.bad += 1,
            }
        }
        if !records.remainder().is_empty() {
            self.bad += 1;
        }
    }

    /// Adds what was counted since the last call to the tally.
    pub fn publish(&mut self) {
        let t = &self.tally;
        t.bad
            .fetch_add(std::mem::take(&mut self.bad), Ordering::Relaxed);
        t.gaps
            .fetch_add(std::mem::take(&mut self.gaps), Ordering::Relaxed);
        t.checksum
            .fetch_add(std::mem::take(&mut self.sum), Ordering::Relaxed);
        t.records
            .fetch_add(std::mem::take(&mut self.records), Ordering::Release);
    }
}

/// The wrapping sum of `data`'s 64-bit words (a tail shorter than a word
/// is left out): every byte read, in a loop the compiler vectorizes.
fn word_sum(data: &[u8]) -> u64 {
    data.chunks_exact(8)
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        .fold(0u64, u64::wrapping_add)
}

/// The consumers' own work without a transport, CPU seconds per GiB of
/// `size`-byte records on this thread: checking `total` bytes of records
/// held in memory, in a buffer of `buffer` bytes (as large as a
/// transport's, so that it is no more cache-hot than theirs), in
/// sub-buffer-sized passes (as the relay sink does) and a record at a time
/// (as the BPF callbacks do).
pub fn check_floor(size: u32, buffer: u64, total: u64) -> anyhow::Result<(f64, f64)> {
    const CHUNK: usize = 256 << 10;
    let per_chunk = CHUNK / size as usize;
    let mut chunk = Vec::with_capacity(per_chunk * size as usize);
    for seq in 0..per_chunk as u64 {
        let mut rec: Vec<u8> = (0..size).map(|i| i as u8).collect();
        rec[..8].copy_from_slice(&seq.to_ne_bytes());
        chunk.extend_from_slice(&rec);
    }
    let copies = (buffer as usize / CHUNK).max(1);
    let data: Vec<u8> = chunk.repeat(copies);
    let passes = total.div_ceil(data.len() as u64);
    let gib = (passes * data.len() as u64) as f64 / (1u64 << 30) as f64;
    let tally = Arc::new(Tally::default());
    let mut checker = Checker::new(size, 1, Arc::clone(&tally));
    let mut timed = |each: bool| -> anyhow::Result<f64> {
        let cpu0 = thread_cpu();
        for _ in 0..passes {
            // Each CHUNK starts again at sequence 0, as a new run does.
            for chunk in std::hint::black_box(&data).chunks(CHUNK - CHUNK % size as usize) {
                if each {
                    for rec in chunk.chunks_exact(size as usize) {
                        checker.record(rec);
                    }
                } else {
                    checker.records(chunk);
                }
                checker.publish();
            }
        }
        Ok((thread_cpu() - cpu0) / gib)
    };
    let bulk = timed(false)?;
    let each = timed(true)?;
    anyhow::ensure!(
        tally.counts().bad == 0,
        "the checker found bad records in its own"
    );
    Ok((bulk, each))
}

/// relay-reader's sink: every sub-buffer's records checked.
struct CheckSink(Checker);

impl Sink for CheckSink {
    fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
        self.0.records(sb.data);
        self.0.publish();
        Ok(())
    }

    fn finish(&mut self) -> relay_reader::Result<()> {
        self.0.publish();
        Ok(())
    }
}

/// CPU seconds of the calling thread (0 if it cannot be read).
fn thread_cpu() -> f64 {
    crate::process::cpu_clock(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0.0)
}

/// A recording of the relay channel, for the runs of one round.
pub struct RelayRun(Running);

impl RelayRun {
    /// Opens every buffer (mmap mode) and starts a thread per buffer,
    /// pinned to its CPU, checking `size`-byte records into `tally`.
    pub fn start(size: u32, n_cpus: u64, tally: &Arc<Tally>) -> Result<RelayRun> {
        let tally = Arc::clone(tally);
        let running = Recording::new(RELAY_CHANNEL)
            .mode(Mode::Mmap)
            .sinks(Box::new(move |_cpu| {
                Ok(
                    Box::new(CheckSink(Checker::new(size, n_cpus, Arc::clone(&tally))))
                        as Box<dyn Sink + Send>,
                )
            }))
            .start()
            .context("starting relay-reader's recording of relay_xbench")?;
        Ok(RelayRun(running))
    }

    /// Takes what the buffers still hold (flush and drain) and stops.
    pub fn finish(self) -> Result<()> {
        let outcome = self.0.finish();
        outcome.result.context("relay-reader's recording failed")
    }
}

/// The loaded BPF object: the ring buffer, the perf event array, the
/// per-CPU drop counter and the two programs (see `bpf/xbench.bpf.c`).
pub struct Bpf {
    obj: Object,
}

/// Which BPF transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfKind {
    /// `bpf_ringbuf_reserve`/`submit`, libbpf-rs `RingBuffer`.
    Ringbuf,
    /// `bpf_perf_event_output`, libbpf-rs `PerfBuffer`.
    Perfbuf,
}

impl BpfKind {
    fn program(self) -> &'static str {
        match self {
            BpfKind::Ringbuf => "to_ringbuf",
            BpfKind::Perfbuf => "to_perfbuf",
        }
    }
}

impl Bpf {
    /// Loads the programs with a ring buffer of `ringbuf_bytes` (a power
    /// of two, a multiple of the page size).
    pub fn load(ringbuf_bytes: u32) -> Result<Bpf> {
        let mut open = ObjectBuilder::default()
            .open_memory(BPF_OBJECT)
            .context("opening the BPF object")?;
        let mut found = false;
        for mut map in open.maps_mut() {
            if map.name() == "ringbuf" {
                map.set_max_entries(ringbuf_bytes)
                    .context("sizing the ring buffer")?;
                found = true;
            }
        }
        if !found {
            bail!("the BPF object has no map `ringbuf`");
        }
        let obj = open.load().context("loading the BPF programs")?;
        Ok(Bpf { obj })
    }

    fn map(&self, name: &str) -> Result<MapHandle> {
        let map = self
            .obj
            .maps()
            .find(|m| m.name() == name)
            .with_context(|| format!("no map {name} in the BPF object"))?;
        MapHandle::try_from(&map).with_context(|| format!("a handle on map {name}"))
    }

    /// Attaches `kind`'s program to relay_xbench's tracepoint (detached
    /// when the link drops).
    pub fn attach(&self, kind: BpfKind) -> Result<Link> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == kind.program())
            .with_context(|| format!("no program {} in the BPF object", kind.program()))?;
        prog.attach_raw_tracepoint(TRACEPOINT)
            .with_context(|| format!("attaching {} to raw_tp/{TRACEPOINT}", kind.program()))
    }

    /// Records the programs could not hand to their transport, so far.
    pub fn dropped(&self) -> Result<u64> {
        let values = self
            .map("dropped")?
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("reading the BPF drop counters")?
            .context("no drop counter")?;
        Ok(values
            .iter()
            .filter_map(|v| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
            .sum())
    }

    /// Starts the consumer thread of `kind`: it sets its buffer up (the
    /// perf buffer's events exist from then on), then waits for
    /// [`BpfThread::go`] before it reads anything.
    pub fn consume(
        &self,
        kind: BpfKind,
        size: u32,
        n_cpus: u64,
        perf_pages: usize,
        tally: &Arc<Tally>,
    ) -> Result<BpfThread> {
        let map = self.map(match kind {
            BpfKind::Ringbuf => "ringbuf",
            BpfKind::Perfbuf => "perfbuf",
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let checker = Checker::new(size, n_cpus, Arc::clone(tally));
        let (ready_tx, ready) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let gate = Gate {
            ready: ready_tx,
            go: go_rx,
        };
        let handle = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("{kind:?}").to_lowercase())
                .spawn(move || match kind {
                    BpfKind::Ringbuf => ringbuf_loop(&map, checker, gate, &stop),
                    BpfKind::Perfbuf => perfbuf_loop(&map, perf_pages, checker, gate, &stop),
                })
                .context("starting a BPF consumer thread")?
        };
        let thread = BpfThread { stop, go, handle };
        match ready.recv() {
            Ok(()) => Ok(thread),
            // The thread ended without its buffer: its error says why.
            Err(_) => Err(thread
                .stop()
                .err()
                .unwrap_or_else(|| anyhow!("a BPF consumer thread ended at once"))),
        }
    }
}

/// A consumer thread's start: it says when its buffer is set up, then
/// waits for the word to read.
struct Gate {
    ready: mpsc::Sender<()>,
    go: mpsc::Receiver<()>,
}

impl Gate {
    fn open(self) {
        let _ = self.ready.send(());
        let _ = self.go.recv();
    }
}

/// A BPF consumer thread; [`BpfThread::stop`] ends it.
pub struct BpfThread {
    stop: Arc<AtomicBool>,
    go: mpsc::Sender<()>,
    handle: JoinHandle<Result<()>>,
}

impl BpfThread {
    /// Lets the thread read.
    pub fn go(&self) {
        let _ = self.go.send(());
    }

    /// Stops the thread (after one last consume) and returns its error.
    pub fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        self.go();
        self.handle
            .join()
            .map_err(|_| anyhow!("a BPF consumer thread panicked"))?
    }
}

fn ringbuf_loop(map: &MapHandle, checker: Checker, gate: Gate, stop: &AtomicBool) -> Result<()> {
    let checker = RefCell::new(checker);
    let mut builder = RingBufferBuilder::new();
    builder.add(map, |data| {
        checker.borrow_mut().record(data);
        0
    })?;
    let ring = builder.build().context("libbpf-rs RingBuffer")?;
    gate.open();
    while !stop.load(Ordering::Acquire) {
        ring.poll(BPF_POLL).context("polling the ring buffer")?;
        checker.borrow_mut().publish();
    }
    ring.consume().context("consuming the ring buffer")?;
    checker.borrow_mut().publish();
    Ok(())
}

fn perfbuf_loop(
    map: &MapHandle,
    pages: usize,
    checker: Checker,
    gate: Gate,
    stop: &AtomicBool,
) -> Result<()> {
    let tally = Arc::clone(&checker.tally);
    let checker = RefCell::new(checker);
    let lost = Cell::new(0u64);
    let perf = PerfBufferBuilder::new(map)
        .pages(pages)
        .sample_cb(|_cpu, data| checker.borrow_mut().record(data))
        .lost_cb(|_cpu, n| lost.set(lost.get() + n))
        .build()
        .context("libbpf-rs PerfBuffer")?;
    gate.open();
    let publish = || {
        checker.borrow_mut().publish();
        tally.perf_lost.fetch_add(lost.take(), Ordering::Relaxed);
    };
    while !stop.load(Ordering::Acquire) {
        perf.poll(BPF_POLL).context("polling the perf buffer")?;
        publish();
    }
    perf.consume().context("consuming the perf buffer")?;
    publish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cpu: u64, seq: u64, size: usize) -> Vec<u8> {
        let mut r: Vec<u8> = (0..size).map(|i| i as u8).collect();
        r[..8].copy_from_slice(&((cpu << CPU_SHIFT) | seq).to_ne_bytes());
        r
    }

    #[test]
    fn the_checker_counts_records_gaps_and_bad_ones() {
        let tally = Arc::new(Tally::default());
        let mut c = Checker::new(64, 2, Arc::clone(&tally));
        for seq in [0, 1, 2, 5, 6] {
            c.record(&rec(0, seq, 64));
        }
        c.record(&rec(1, 0, 64));
        // A perf sample: the record and its padding.
        c.record(&rec(1, 1, 68));
        c.record(&rec(2, 0, 64)); // no such CPU
        c.record(&rec(0, 7, 10)); // too short
        c.publish();
        let counts = tally.counts();
        assert_eq!(
            counts,
            Counts {
                records: 7,
                bad: 2,
                gaps: 1,
                ..Counts::default()
            }
        );
        // A new run numbers from 0 again: no gap.
        c.record(&rec(0, 0, 64));
        c.publish();
        assert_eq!(
            tally.counts() - counts,
            Counts {
                records: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn the_relay_sink_checks_every_record_of_a_sub_buffer() {
        let tally = Arc::new(Tally::default());
        let mut sink = CheckSink(Checker::new(8, 1, Arc::clone(&tally)));
        let data: Vec<u8> = (0..3).flat_map(|s| rec(0, s, 8)).chain([1, 2]).collect();
        sink.write(&SubBuf {
            cpu: 0,
            seq: 0,
            data: &data,
        })
        .unwrap();
        let counts = tally.counts();
        assert_eq!((counts.records, counts.bad, counts.gaps), (3, 1, 0));
    }
}
