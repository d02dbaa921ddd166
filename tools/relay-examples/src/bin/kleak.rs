//! `relay-example-kleak`: the user side of the kleak example, recorder and
//! analyser (it replaces relay-apps' Perl script).
//!
//! `record -o DIR` turns the `relay_kleak` module's tracing on, records
//! every kmalloc()/kfree() record into `DIR/cpu0..N-1` until Ctrl-C, then
//! turns it off and drains. `report DIR` pairs the records: an allocation
//! without a later kfree() of its pointer is outstanding. It prints totals
//! (allocations, frees, outstanding, bytes requested vs allocated: the
//! slack) and, per call site named from /proc/kallsyms, the same counts.
//! Read the report on the machine and boot that recorded it: kallsyms
//! addresses change with every boot (KASLR) and module load.
//!
//! Run it (as root; the top-level README shows it in the VM):
//!
//! ```text
//! insmod relay_app.ko; insmod relay_kleak.ko
//! relay-example-kleak record -o kleak -w 10
//! relay-example-kleak report kleak        # or --json
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use relay_examples::{load_hint, read_control, recording, stop_on_signals, write_control};
use relay_recorder::{Output, Threads};
use serde::Serialize;

/// Record kmalloc/kfree with relay_kleak and report outstanding allocations.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  insmod relay_app.ko; insmod relay_kleak.ko\n  \
                  relay-example-kleak record -o kleak -w 10\n  \
                  relay-example-kleak report kleak"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record until Ctrl-C.
    Record {
        /// The module's debugfs directory.
        #[arg(long, default_value = "/sys/kernel/debug/relay_kleak")]
        dir: PathBuf,
        /// Directory for the per-CPU files.
        #[arg(short, long, default_value = ".")]
        output: PathBuf,
        /// Stop after this many seconds (default: at Ctrl-C).
        #[arg(short = 'w', long)]
        duration: Option<f64>,
    },
    /// Analyse a recording.
    Report {
        /// The recording directory (cpu0, cpu1, ...).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Call sites to list, most outstanding first.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Print the whole report as JSON (every call site).
        #[arg(long)]
        json: bool,
    },
}

/// `struct relay_kleak_rec`: seq, ptr, call_site (u64), bytes_req,
/// bytes_alloc, type, reserved (u32), native byte order.
const RECORD: usize = 40;
const KMALLOC: u32 = 1;
const KFREE: u32 = 2;

struct Rec {
    seq: u64,
    ptr: u64,
    site: u64,
    req: u32,
    alloc: u32,
    kind: u32,
}

fn parse(data: &[u8], path: &Path) -> Result<Vec<Rec>> {
    if data.len() % RECORD != 0 {
        bail!(
            "{}: {} bytes, not whole {RECORD}-byte records",
            path.display(),
            data.len()
        );
    }
    let u64_at = |r: &[u8], at: usize| u64::from_ne_bytes(r[at..at + 8].try_into().expect("8"));
    let u32_at = |r: &[u8], at: usize| u32::from_ne_bytes(r[at..at + 4].try_into().expect("4"));
    Ok(data
        .chunks_exact(RECORD)
        .map(|r| Rec {
            seq: u64_at(r, 0),
            ptr: u64_at(r, 8),
            site: u64_at(r, 16),
            req: u32_at(r, 24),
            alloc: u32_at(r, 28),
            kind: u32_at(r, 32),
        })
        .collect())
}

/// Text symbols of /proc/kallsyms, sorted by address.
struct Symbols(Vec<(u64, String)>);

impl Symbols {
    fn load() -> Symbols {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                let module = f.next().map(|m| format!(" {m}")).unwrap_or_default();
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, format!("{name}{module}")))
            })
            .collect();
        syms.sort();
        Symbols(syms)
    }

    /// `name+0xoff [module]`, or the bare address when unknown.
    fn name(&self, addr: u64) -> String {
        let i = self.0.partition_point(|&(a, _)| a <= addr);
        match i.checked_sub(1).map(|i| &self.0[i]) {
            Some((base, name)) => match name.split_once(' ') {
                Some((func, module)) => format!("{func}+{:#x} {module}", addr - base),
                None => format!("{name}+{:#x}", addr - base),
            },
            None => format!("{addr:#x}"),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
struct Counts {
    allocs: u64,
    frees: u64,
    outstanding: u64,
    bytes_req: u64,
    bytes_alloc: u64,
    outstanding_req: u64,
    outstanding_alloc: u64,
}

#[derive(Debug, Serialize)]
struct Site {
    site: String,
    address: String,
    #[serde(flatten)]
    counts: Counts,
}

#[derive(Debug, Serialize)]
struct Report {
    records: u64,
    /// Sequence numbers missing: records the channel refused.
    missing: u64,
    /// kfree()s of objects allocated before the recording started.
    unmatched_frees: u64,
    /// Allocations of a pointer still live in the recording: its kfree()
    /// was not seen (kfree_bulk, kmem_cache_free of a kmalloc object).
    reallocated_live: u64,
    total: Counts,
    sites: Vec<Site>,
}

fn analyse(mut recs: Vec<Rec>, syms: &Symbols) -> Report {
    recs.sort_by_key(|r| r.seq);
    let missing = match (recs.first(), recs.last()) {
        (Some(first), Some(last)) => last.seq - first.seq + 1 - recs.len() as u64,
        _ => 0,
    };
    let mut sites: BTreeMap<u64, Counts> = BTreeMap::new();
    // Live objects: pointer -> (call site, requested, allocated).
    let mut live: HashMap<u64, (u64, u32, u32)> = HashMap::new();
    let (mut unmatched_frees, mut reallocated_live) = (0, 0);
    for r in &recs {
        match r.kind {
            KMALLOC => {
                let c = sites.entry(r.site).or_default();
                c.allocs += 1;
                c.bytes_req += u64::from(r.req);
                c.bytes_alloc += u64::from(r.alloc);
                if live.insert(r.ptr, (r.site, r.req, r.alloc)).is_some() {
                    reallocated_live += 1;
                }
            }
            KFREE => match live.remove(&r.ptr) {
                Some((site, _, _)) => sites.entry(site).or_default().frees += 1,
                None => unmatched_frees += 1,
            },
            _ => {}
        }
    }
    for (site, req, alloc) in live.values() {
        let c = sites.entry(*site).or_default();
        c.outstanding += 1;
        c.outstanding_req += u64::from(*req);
        c.outstanding_alloc += u64::from(*alloc);
    }
    let mut total = Counts::default();
    for c in sites.values() {
        total.allocs += c.allocs;
        total.frees += c.frees;
        total.outstanding += c.outstanding;
        total.bytes_req += c.bytes_req;
        total.bytes_alloc += c.bytes_alloc;
        total.outstanding_req += c.outstanding_req;
        total.outstanding_alloc += c.outstanding_alloc;
    }
    let mut sites: Vec<Site> = sites
        .into_iter()
        .map(|(addr, counts)| Site {
            site: syms.name(addr),
            address: format!("{addr:#x}"),
            counts,
        })
        .collect();
    sites.sort_by(|a, b| {
        (b.counts.outstanding, b.counts.allocs).cmp(&(a.counts.outstanding, a.counts.allocs))
    });
    Report {
        records: recs.len() as u64,
        missing,
        unmatched_frees,
        reallocated_live,
        total,
        sites,
    }
}

fn record(dir: &Path, output: &Path, duration: Option<f64>) -> Result<()> {
    let mut running = recording(dir.join("cpu"), duration, &stop_on_signals()?)?
        .threads(Threads::One)
        .output(Output::cpu_files(output))
        .start()
        .context(load_hint("relay_kleak"))?;
    write_control(dir.join("trace"), 1)?;
    eprintln!(
        "relay-example-kleak: recording kmalloc/kfree into {} until Ctrl-C",
        output.display()
    );
    let recorded = running.record();
    // Off first, so that the last drain gets everything up to here.
    let off = write_control(dir.join("trace"), 0);
    let outcome = running.finish();
    recorded?;
    off?;
    outcome.result?;
    let dropped = read_control(dir.join("dropped"))?;
    eprintln!(
        "relay-example-kleak: {} records, {dropped} dropped",
        outcome.summary.bytes() / RECORD as u64
    );
    Ok(())
}

fn report(dir: &Path, top: usize, json: bool) -> Result<()> {
    let mut recs = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let is_cpu = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("cpu"))
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if is_cpu {
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            recs.extend(parse(&data, &path)?);
            files += 1;
        }
    }
    if files == 0 {
        bail!("{}: no cpuN files (a kleak recording?)", dir.display());
    }
    let report = analyse(recs, &Symbols::load());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let t = &report.total;
    println!(
        "{} records ({} missing), {} allocations, {} frees, {} outstanding",
        report.records, report.missing, t.allocs, t.frees, t.outstanding
    );
    println!(
        "bytes requested {}, allocated {}, slack {} ({:.1}%)",
        t.bytes_req,
        t.bytes_alloc,
        t.bytes_alloc.saturating_sub(t.bytes_req),
        100.0 * t.bytes_alloc.saturating_sub(t.bytes_req) as f64 / t.bytes_alloc.max(1) as f64
    );
    println!(
        "outstanding: {} bytes requested, {} allocated; frees of older objects {}, \
         reallocated while live {}",
        t.outstanding_req, t.outstanding_alloc, report.unmatched_frees, report.reallocated_live
    );
    println!(
        "\n{:>11} {:>9} {:>9} {:>12} {:>12} {:>8}  call site",
        "outstanding", "allocs", "frees", "requested", "allocated", "slack"
    );
    for s in report.sites.iter().take(top) {
        let c = &s.counts;
        println!(
            "{:>11} {:>9} {:>9} {:>12} {:>12} {:>8}  {}",
            c.outstanding,
            c.allocs,
            c.frees,
            c.bytes_req,
            c.bytes_alloc,
            c.bytes_alloc.saturating_sub(c.bytes_req),
            s.site
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Record {
            dir,
            output,
            duration,
        } => record(&dir, &output, duration),
        Command::Report { dir, top, json } => report(&dir, top, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, ptr: u64, site: u64, req: u32, alloc: u32, kind: u32) -> Rec {
        Rec {
            seq,
            ptr,
            site,
            req,
            alloc,
            kind,
        }
    }

    #[test]
    fn pairs_frees_with_allocations_by_pointer_and_order() {
        let syms = Symbols(vec![(0x1000, "leaky".into()), (0x2000, "tidy [m]".into())]);
        let recs = vec![
            rec(5, 0xa, 0x2010, 0, 0, KFREE), // listed first, but seq puts it last
            rec(0, 0xa, 0x1004, 100, 128, KMALLOC),
            rec(1, 0xb, 0x2010, 10, 16, KMALLOC),
            rec(2, 0xb, 0x2020, 0, 0, KFREE),
            rec(3, 0xc, 0x1004, 100, 128, KMALLOC),
            rec(4, 0xd, 0x3000, 1, 8, KFREE), // allocated before the recording
        ];
        let r = analyse(recs, &syms);
        assert_eq!(r.records, 6);
        assert_eq!(r.missing, 0);
        assert_eq!(r.unmatched_frees, 1);
        assert_eq!(r.total.outstanding, 1, "0xa freed at seq 5, 0xc never");
        let leaky = &r.sites[0];
        assert_eq!(leaky.site, "leaky+0x4");
        assert_eq!(leaky.counts.allocs, 2);
        assert_eq!(leaky.counts.outstanding, 1);
        assert_eq!(
            leaky.counts.outstanding_alloc - leaky.counts.outstanding_req,
            28
        );
        assert_eq!(r.sites[1].site, "tidy+0x10 [m]");
        assert_eq!(r.sites[1].counts.frees, 1);
    }
}
