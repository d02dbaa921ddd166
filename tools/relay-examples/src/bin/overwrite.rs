//! `relay-example-overwrite`: the user side of the overwrite (flight
//! recorder) example. The `relay_flight` module logs into small
//! overwrite-mode buffers until a message written to its `trigger` file
//! stops it; the buffers are then dumped after the fact with
//!
//! ```text
//! relay-reader snapshot -o DIR /sys/kernel/debug/relay_flight/cpu
//! ```
//!
//! which takes the newest intact sub-buffers of every CPU (the writer
//! overwrote the older ones). This program reads that dump: per CPU the
//! window of records kept, which must have no gap, the trigger record,
//! which must be the newest of its CPU, and the records that led to it.
//! Exits with status 1 when a check fails.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

/// Show what a snapshot of the relay_flight recorder kept.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  insmod relay_app.ko; insmod relay_flight.ko\n  \
                  echo 'something broke' > /sys/kernel/debug/relay_flight/trigger\n  \
                  relay-reader snapshot -o dump /sys/kernel/debug/relay_flight/cpu\n  \
                  relay-example-overwrite dump"
)]
struct Cli {
    /// The snapshot directory (cpu0, cpu1, ...).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Records to show before the trigger.
    #[arg(long, default_value_t = 5)]
    tail: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// One record: `relay_flight cpu=<cpu> seq=<seq> <what>`.
struct Record {
    cpu: u32,
    seq: u64,
    what: String,
}

fn parse(line: &str) -> Option<Record> {
    let rest = line.strip_prefix("relay_flight cpu=")?;
    let (cpu, rest) = rest.split_once(" seq=")?;
    let (seq, what) = rest.split_once(' ')?;
    Some(Record {
        cpu: cpu.parse().ok()?,
        seq: seq.parse().ok()?,
        what: what.to_string(),
    })
}

#[derive(Serialize)]
struct CpuWindow {
    cpu: u32,
    first: u64,
    last: u64,
    records: u64,
    /// Each record's seq is its predecessor's plus one.
    contiguous: bool,
}

#[derive(Serialize)]
struct Trigger {
    cpu: u32,
    seq: u64,
    message: String,
    /// No record of its CPU came after it.
    newest: bool,
    /// The records of its CPU before it, oldest first.
    before: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    cpus: Vec<CpuWindow>,
    trigger: Option<Trigger>,
    ok: bool,
}

fn cpu_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let cpu = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
            Some((cpu, e.path()))
        })
        .collect();
    if files.is_empty() {
        bail!(
            "{}: no cpuN files (a relay-reader snapshot directory?)",
            dir.display()
        );
    }
    files.sort();
    Ok(files)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut cpus = Vec::new();
    let mut trigger = None;
    for (cpu, path) in cpu_files(&cli.dir)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: not text (torn data?)", path.display()))?;
        let records = text
            .lines()
            .map(|line| {
                parse(line)
                    .filter(|r| r.cpu == cpu)
                    .with_context(|| format!("{}: unexpected record {line:?}", path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            bail!("{}: no records", path.display());
        };
        cpus.push(CpuWindow {
            cpu,
            first: first.seq,
            last: last.seq,
            records: records.len() as u64,
            contiguous: records.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        });
        if let Some(i) = records.iter().position(|r| r.what.starts_with("trigger: ")) {
            let r = &records[i];
            trigger = Some(Trigger {
                cpu,
                seq: r.seq,
                message: r.what["trigger: ".len()..].to_string(),
                newest: i + 1 == records.len(),
                before: records[i.saturating_sub(cli.tail)..i]
                    .iter()
                    .map(|r| format!("seq={} {}", r.seq, r.what))
                    .collect(),
            });
        }
    }
    let ok = cpus.iter().all(|c| c.contiguous) && trigger.as_ref().is_some_and(|t| t.newest);
    let report = Report { cpus, trigger, ok };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &report.cpus {
            println!(
                "cpu{}: records {}..={} ({}), {}",
                c.cpu,
                c.first,
                c.last,
                c.records,
                if c.contiguous {
                    "no gap"
                } else {
                    "GAPS: torn or lost data"
                }
            );
        }
        match &report.trigger {
            Some(t) => {
                println!(
                    "trigger on cpu{} at seq {}{}: {}",
                    t.cpu,
                    t.seq,
                    if t.newest {
                        ""
                    } else {
                        " (NOT its CPU's newest record)"
                    },
                    t.message
                );
                for line in &t.before {
                    println!("  before it: {line}");
                }
            }
            None => println!("no trigger record: was the recorder triggered before the snapshot?"),
        }
    }
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}
