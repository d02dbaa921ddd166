//! Stress: relay_readtest's numbered events from every CPU, read in-process
//! with the relay-reader library in one mode while the writers run, then
//! every event accounted for: received + counted lost == produced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use relay_reader::{Mode, PaddingWord, SubBuf};
use relay_recorder::sink::Sink;
use relay_recorder::stop::Stop;
use relay_recorder::{CpuSummary, Recording, Threads};
use serde::{Deserialize, Serialize};

use crate::events::{Checker, Counts};
use crate::guest::{self, Kmsg, Setup};

/// One stress run: one channel mode, one reader mode.
#[derive(Debug, Serialize, Deserialize)]
pub struct StressRow {
    /// Overwrite mode of the channel.
    pub overwrite: bool,
    /// The reader's mode.
    pub mode: String,
    /// Events the kernel offered to the channel (`write_count`).
    pub produced: u64,
    /// Valid distinct events received, duplicates, corrupt runs.
    pub counts: Counts,
    /// produced - received: the events missing from the sequences.
    pub missing: u64,
    /// Events counted lost, and by whom; `None` if nobody counts them.
    pub counted_lost: Option<u64>,
    /// Where `counted_lost` comes from.
    pub counted_by: String,
    /// Sub-buffers delivered (read(2) chunks in read mode).
    pub subbufs: u64,
    /// Seconds from start to the last event drained.
    pub seconds: f64,
    /// Kernel splat lines logged meanwhile.
    pub splats: Vec<String>,
    /// The first problems the checker found.
    pub problems: Vec<String>,
    /// received + counted lost == produced, missing == counted lost, no
    /// corrupt, duplicated or reordered event, no splat.
    pub pass: bool,
}

/// How the channel is read: one [`Reader`] in a mode, or the reading
/// threads `relay-reader record` uses by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// One `Reader` polling every buffer.
    One(Mode),
    /// relay-recorder's `Threads::PerBuffer` in mmap mode: a thread per
    /// buffer on its CPU.
    PinnedMmap,
}

impl Reading {
    /// The name of the table row.
    pub fn name(self) -> &'static str {
        match self {
            Reading::One(mode) => mode.name(),
            Reading::PinnedMmap => "mmap, pinned threads",
        }
    }
}

/// The longest a stress run may take.
const STRESS_LIMIT: Duration = Duration::from_secs(1800);

/// Feeds every sub-buffer to the one checker (per-CPU state inside, so the
/// threads' interleaving does not matter).
struct CheckSink {
    checker: Arc<Mutex<Checker>>,
    /// Set once the mode is known to be read(2): chunks, not sub-buffers,
    /// so records may span them.
    stream: Arc<AtomicBool>,
}

impl Sink for CheckSink {
    fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
        let mut checker = self.checker.lock().unwrap_or_else(|p| p.into_inner());
        checker.feed(sb.cpu, sb.data, self.stream.load(Ordering::Relaxed));
        Ok(())
    }

    fn finish(&mut self) -> relay_reader::Result<()> {
        Ok(())
    }
}

/// Records the running test `how` until it is done (the recording's last
/// drain takes the rest). Returns the buffers' counters and the mode.
fn read_test(how: Reading, checker: Arc<Mutex<Checker>>) -> Result<(Vec<CpuSummary>, Mode)> {
    let (mode, threads) = match how {
        Reading::One(mode) => (mode, Threads::One),
        Reading::PinnedMmap => (Mode::Mmap, Threads::PerBuffer),
    };
    let test_done = Stop::new();
    let stream = Arc::new(AtomicBool::new(false));
    let sinks = {
        let stream = Arc::clone(&stream);
        Box::new(move |_cpu| {
            Ok(Box::new(CheckSink {
                checker: Arc::clone(&checker),
                stream: Arc::clone(&stream),
            }) as Box<dyn Sink + Send>)
        })
    };
    // relay_readtest writes 4-byte padding words; its cpu0 events start
    // with 4 zero bytes, so a reader started before the other CPUs wrote
    // could not tell them from 8-byte words.
    let running = Recording::new(guest::channel())
        .mode(mode)
        .padding_word(PaddingWord::Four)
        .threads(threads)
        .stop(&test_done)
        .duration(STRESS_LIMIT)
        .sinks(sinks)
        .start()
        .with_context(|| format!("opening the readtest channel as {}", how.name()))?;
    let mode = running.mode();
    // Before the test writes anything (started below).
    stream.store(mode == Mode::Read, Ordering::Relaxed);
    guest::start_test()?;
    let started = Instant::now();
    let test_finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| -> Result<()> {
            let watched = (|| -> Result<()> {
                while !test_done.is_raised() {
                    if guest::done()? {
                        test_finished.store(true, Ordering::Relaxed);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            })();
            // On an error too: the recording must not wait for the limit.
            test_done.raise();
            watched
        });
        let outcome = running.run_to_end();
        test_done.raise();
        watcher.join().expect("the watcher panicked")?;
        outcome.result?;
        if !test_finished.load(Ordering::Relaxed) {
            if started.elapsed() >= STRESS_LIMIT {
                anyhow::bail!("the stress test did not finish in 30 minutes");
            }
            anyhow::bail!("the reading ended before the test did");
        }
        Ok((outcome.summary.cpus, mode))
    })
}

/// Runs one test with `setup` while reading the channel `how`.
pub fn run(setup: Setup, how: Reading) -> Result<StressRow> {
    let kmsg = Kmsg::since();
    setup.apply()?;
    let mut checker = Checker::new(setup.event_size, setup.event_n);
    if how == Reading::One(Mode::Read) {
        // read(2) returns each sub-buffer's padding word as data.
        checker = checker.with_padding_words(setup.subbuf_size);
    }
    let dropped_before = guest::get("dropped")?;
    let started = Instant::now();
    let shared = Arc::new(Mutex::new(checker));
    let (stats, mode) = read_test(how, Arc::clone(&shared))?;
    let mut checker = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("a reading thread still holds the checker"))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    checker.finish();
    let seconds = started.elapsed().as_secs_f64();
    let produced = guest::get("write_count")?;
    let dropped = guest::get("dropped")? - dropped_before;
    let per_subbuf = setup.events_per_subbuf();

    // What each mode can count of its losses.
    let subbufs = stats.iter().map(|s| s.subbufs).sum();
    let (counted_lost, counted_by) = if !setup.overwrite {
        match mode {
            Mode::Mmap => {
                let full: u64 = stats
                    .iter()
                    .map(|s| s.lost_full.unwrap_or(0) + s.lost_toobig.unwrap_or(0))
                    .sum();
                (
                    Some(full),
                    format!("kernel lost_full via the ABI (relay_app dropped: {dropped})"),
                )
            }
            _ => (Some(dropped), "relay_app `dropped` file".to_string()),
        }
    } else {
        match mode {
            Mode::Mmap => {
                let lost: u64 = stats.iter().map(|s| s.lost_subbufs).sum();
                (
                    Some(lost * per_subbuf),
                    format!("reader: {lost} sub-buffers lost x {per_subbuf} events"),
                )
            }
            _ => {
                // The mode has no loss count of its own: the kernel's count
                // of overwritten sub-buffers, through the ioctl ABI.
                let mut overwritten = 0;
                for file in relay_reader::channel::buffer_files(&guest::channel())? {
                    let f = std::fs::File::open(&file.path)?;
                    if let Some(state) = relay_reader::kernel::query_state(&f, &file.path)? {
                        overwritten += state.lost_overwritten;
                    }
                }
                (
                    Some(overwritten * per_subbuf),
                    format!(
                        "kernel: {overwritten} sub-buffers overwritten x {per_subbuf} events \
                         ({} mode counts none)",
                        mode.name()
                    ),
                )
            }
        }
    };
    let counts = checker.counts;
    let missing = produced.saturating_sub(counts.received);
    let splats = kmsg.splats();
    let pass = counted_lost
        .is_some_and(|lost| counts.received + lost == produced && missing == lost)
        && counts.duplicated == 0
        && counts.corrupt == 0
        && counts.out_of_order == 0
        && splats.is_empty();
    let row = StressRow {
        overwrite: setup.overwrite,
        mode: how.name().into(),
        produced,
        counts,
        missing,
        counted_lost,
        counted_by,
        subbufs,
        seconds,
        splats,
        problems: checker.problems,
        pass,
    };
    println!(
        "stress: {} {}: produced {}, received {}, counted lost {:?} ({}), corrupt {}, \
         duplicated {}, out of order {}, {:.1} s: {}",
        if setup.overwrite {
            "overwrite"
        } else {
            "no-overwrite"
        },
        row.mode,
        row.produced,
        row.counts.received,
        row.counted_lost,
        row.counted_by,
        row.counts.corrupt,
        row.counts.duplicated,
        row.counts.out_of_order,
        row.seconds,
        if row.pass { "pass" } else { "FAIL" }
    );
    for p in &row.problems {
        println!("  {p}");
    }
    Ok(row)
}
