//! `relay-example-readtest`: the user side of the readtest example. Runs
//! one test of the `relay_readtest` module (every CPU writes `event_n`
//! numbered events as fast as it can) while reading its channel, then
//! proves that every event is accounted for: read + lost == written.
//!
//! What was lost shows as gaps in each CPU's sequence numbers, and must
//! match what the kernel and the reader counted:
//! - no-overwrite: the writes the full buffer refused (`dropped`, and the
//!   per-buffer `lost_full` of the relay ioctls);
//! - overwrite: the events of the sub-buffers the writer overwrote before
//!   the reader got them (the reader's `lost_subbufs`, at most the kernel's
//!   `lost_overwritten`: a reader of the meta area releases a batch at once,
//!   and a sub-buffer it copied intact before the writer reused it is lost
//!   for the kernel's count only), each holding
//!   `(subbuf_size - 4) / event_size` events.
//!
//! Exits with status 1 when a check fails.
//!
//! Run it (as root; the top-level README shows it in the VM):
//!
//! ```text
//! insmod relay_app.ko; insmod relay_readtest.ko
//! relay-example-readtest                  # no-overwrite, reading meanwhile
//! relay-example-readtest --overwrite --wait-done --json
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use relay_examples::{load_hint, read_control, write_control};
use relay_reader::{Mode, SubBuf};
use relay_readtest_event::{Event, HEADER_LEN};
use relay_recorder::sink::Sink;
use relay_recorder::stop::Stop;
use relay_recorder::{Recording, Threads};
use serde::Serialize;

/// Run a relay_readtest test and check that read + lost == written.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  insmod relay_app.ko; insmod relay_readtest.ko\n  \
                  relay-example-readtest --overwrite --event-n 20000"
)]
struct Cli {
    /// The module's debugfs directory.
    #[arg(long, default_value = "/sys/kernel/debug/relay_readtest")]
    dir: PathBuf,
    /// Overwrite mode: the writer overwrites what the reader did not take.
    #[arg(long)]
    overwrite: bool,
    /// Events per CPU.
    #[arg(long, default_value_t = 10000)]
    event_n: u64,
    /// Bytes per event (16 or more).
    #[arg(long, default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(HEADER_LEN as u64..))]
    event_size: u64,
    /// Sub-buffer size (default: the module's).
    #[arg(long)]
    subbuf_size: Option<u64>,
    /// Sub-buffers per CPU (default: the module's).
    #[arg(long)]
    n_subbufs: Option<u64>,
    /// Start reading only once the test is done: a reader that is too slow,
    /// so that the buffers surely lose events.
    #[arg(long)]
    wait_done: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What one CPU's events showed.
#[derive(Debug, Default, Clone, Serialize)]
struct CpuResult {
    cpu: u32,
    read: u64,
    /// Events missing from the sequence (gaps, and the tail after the last
    /// event read).
    lost: u64,
    /// The next sequence number expected.
    #[serde(skip)]
    next: u64,
    lost_subbufs: u64,
    lost_full: u64,
    lost_overwritten: u64,
}

#[derive(Debug, Serialize)]
struct Check {
    what: String,
    ok: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    overwrite: bool,
    event_n: u64,
    event_size: u64,
    written: u64,
    written_bytes: u64,
    read: u64,
    lost: u64,
    dropped: u64,
    events_per_subbuf: u64,
    cpus: Vec<CpuResult>,
    checks: Vec<Check>,
    ok: bool,
}

/// Checks every sub-buffer's events on their way in.
struct Checker {
    cpus: Arc<Mutex<Vec<CpuResult>>>,
    size: usize,
}

impl Sink for Checker {
    fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
        let mut cpus = self.cpus.lock().unwrap_or_else(|p| p.into_inner());
        check_events(sb, self.size, &mut cpus)
    }

    fn finish(&mut self) -> relay_reader::Result<()> {
        Ok(())
    }
}

fn check_events(sb: &SubBuf<'_>, size: usize, cpus: &mut [CpuResult]) -> relay_reader::Result<()> {
    let corrupt = |what: String| relay_reader::Error::Corrupt {
        path: PathBuf::from(format!("cpu{}", sb.cpu)),
        what,
    };
    if sb.data.len() % size != 0 {
        return Err(corrupt(format!(
            "sub-buffer {} holds {} bytes, not whole {size}-byte events",
            sb.seq,
            sb.data.len()
        )));
    }
    for bytes in sb.data.chunks_exact(size) {
        let ev = Event::parse(bytes).expect("--event-size is at least the header's");
        let (cpu, seq) = (ev.cpu, ev.seq);
        if cpu != sb.cpu || ev.size as usize != size {
            return Err(corrupt(format!(
                "event of cpu {cpu}, {} bytes, in the buffer of cpu {}",
                ev.size, sb.cpu
            )));
        }
        if !ev.payload_intact(bytes) {
            return Err(corrupt(format!("event {seq}: torn or overwritten payload")));
        }
        let c = cpus
            .get_mut(cpu as usize)
            .ok_or_else(|| corrupt(format!("cpu {cpu} has no buffer")))?;
        if seq < c.next {
            return Err(corrupt(format!(
                "event {seq} after event {}: out of order",
                c.next - 1
            )));
        }
        c.lost += seq - c.next;
        c.next = seq + 1;
        c.read += 1;
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let report = run(&cli)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<Report> {
    let dir = &cli.dir;
    let ctl = |name: &str| dir.join(name);
    if !dir.is_dir() {
        bail!(
            "{} does not exist: {}",
            dir.display(),
            load_hint("relay_readtest")
        );
    }
    if let Some(size) = cli.subbuf_size {
        write_control(ctl("subbuf_size"), size)?;
    }
    if let Some(n) = cli.n_subbufs {
        write_control(ctl("n_subbufs"), n)?;
    }
    write_control(ctl("overwrite"), u8::from(cli.overwrite))?;
    // A new channel: its counters start at zero, in the chosen mode.
    write_control(ctl("create"), 1)?;
    write_control(ctl("event_n"), cli.event_n)?;
    write_control(ctl("event_size"), cli.event_size)?;
    let subbuf_size = read_control(ctl("subbuf_size"))?;

    // Every CPU that may have a buffer gets its results slot.
    let n_cpus = relay_reader::channel::possible_cpus()
        .into_iter()
        .max()
        .map_or(0, |cpu| cpu + 1);
    let cpus: Vec<CpuResult> = (0..n_cpus)
        .map(|cpu| CpuResult {
            cpu,
            ..CpuResult::default()
        })
        .collect();
    let cpus = Arc::new(Mutex::new(cpus));
    let size = cli.event_size as usize;
    let checked = Arc::clone(&cpus);
    let sinks = Box::new(move |_cpu| {
        Ok(Box::new(Checker {
            cpus: Arc::clone(&checked),
            size,
        }) as Box<dyn Sink + Send>)
    });
    // The writers being done ends the recording; its last drain takes
    // the partly filled sub-buffers, and whatever came meanwhile.
    let writers_done = Stop::new();
    let running = Recording::new(dir.join("cpu"))
        .mode(Mode::Mmap)
        .threads(Threads::One)
        .stop(&writers_done)
        .sinks(sinks)
        .start()?;

    write_control(ctl("start_test"), 1)?;
    let done = |dir: &Path| read_control(dir.join("test_done")).map(|v| v == 1);
    if cli.wait_done {
        while !done(dir)? {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let outcome = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| -> Result<()> {
            let watched = (|| -> Result<()> {
                while !writers_done.is_raised() && !done(dir)? {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            })();
            // On an error too: the recording must not wait for it forever.
            writers_done.raise();
            watched
        });
        let outcome = running.run_to_end();
        writers_done.raise();
        let watched = watcher.join().expect("the watcher panicked");
        outcome.result.map_err(anyhow::Error::from).and(watched)?;
        Ok::<_, anyhow::Error>(outcome.summary)
    })?;
    let mut cpus = std::mem::take(&mut *cpus.lock().unwrap_or_else(|p| p.into_inner()));

    let written = read_control(ctl("write_count"))?;
    let written_bytes = read_control(ctl("write_byte_count"))?;
    let dropped = read_control(ctl("dropped"))?;
    for stats in &outcome.cpus {
        let c = &mut cpus[stats.cpu as usize];
        c.lost_subbufs = stats.lost_subbufs;
        let missing = || anyhow::anyhow!("the reader got no kernel counters");
        c.lost_full = stats.lost_full.ok_or_else(missing)?;
        c.lost_overwritten = stats.lost_overwritten.ok_or_else(missing)?;
    }
    let present: Vec<u32> = outcome.cpus.iter().map(|s| s.cpu).collect();
    cpus.retain(|c| present.contains(&c.cpu));
    for c in &mut cpus {
        // Events after the last one read were lost too.
        c.lost += cli.event_n.saturating_sub(c.next);
    }

    let read: u64 = cpus.iter().map(|c| c.read).sum();
    let lost: u64 = cpus.iter().map(|c| c.lost).sum();
    let events_per_subbuf = (subbuf_size - 4) / cli.event_size;
    let mut checks = vec![
        Check {
            what: format!("read {read} + lost {lost} == written {written}"),
            ok: read + lost == written,
        },
        Check {
            what: format!(
                "(read + lost) * {} bytes == written bytes {written_bytes}",
                cli.event_size
            ),
            ok: (read + lost) * cli.event_size == written_bytes,
        },
    ];
    let sum = |f: fn(&CpuResult) -> u64| cpus.iter().map(f).sum::<u64>();
    if cli.overwrite {
        let lost_subbufs = sum(|c| c.lost_subbufs);
        let overwritten = sum(|c| c.lost_overwritten);
        checks.push(Check {
            what: format!("no write dropped: dropped {dropped} == 0"),
            ok: dropped == 0,
        });
        checks.push(Check {
            what: format!(
                "lost {lost} == {lost_subbufs} sub-buffers lost x {events_per_subbuf} events"
            ),
            ok: lost == lost_subbufs * events_per_subbuf,
        });
        // The kernel also counts sub-buffers the reader copied intact before
        // the writer reused them and before its CONSUME released them.
        checks.push(Check {
            what: format!("sub-buffers lost {lost_subbufs} <= kernel's overwritten {overwritten}"),
            ok: lost_subbufs <= overwritten,
        });
    } else {
        let lost_full = sum(|c| c.lost_full);
        checks.push(Check {
            what: format!("lost {lost} == dropped {dropped}"),
            ok: lost == dropped,
        });
        checks.push(Check {
            what: format!("lost {lost} == kernel's lost_full {lost_full}"),
            ok: lost == lost_full,
        });
        checks.push(Check {
            what: "no sub-buffer lost".into(),
            ok: sum(|c| c.lost_subbufs) == 0,
        });
    }
    for c in &cpus {
        checks.push(Check {
            what: format!(
                "cpu{}: read {} + lost {} == event_n {}",
                c.cpu, c.read, c.lost, cli.event_n
            ),
            ok: c.read + c.lost == cli.event_n,
        });
    }
    let ok = checks.iter().all(|c| c.ok);
    Ok(Report {
        overwrite: cli.overwrite,
        event_n: cli.event_n,
        event_size: cli.event_size,
        written,
        written_bytes,
        read,
        lost,
        dropped,
        events_per_subbuf,
        cpus,
        checks,
        ok,
    })
}

fn print_report(r: &Report) {
    println!(
        "{} mode, {} events of {} bytes per CPU: written {}, read {}, lost {}, dropped {}",
        if r.overwrite {
            "overwrite"
        } else {
            "no-overwrite"
        },
        r.event_n,
        r.event_size,
        r.written,
        r.read,
        r.lost,
        r.dropped
    );
    for c in &r.cpus {
        println!(
            "  cpu{}: read {}, lost {} (sub-buffers lost {}, kernel: lost_full {}, overwritten {})",
            c.cpu, c.read, c.lost, c.lost_subbufs, c.lost_full, c.lost_overwritten
        );
    }
    for c in &r.checks {
        println!("  [{}] {}", if c.ok { "ok" } else { "FAILED" }, c.what);
    }
}
