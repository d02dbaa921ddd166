//! `relay-bench report`: BENCHMARKS.md from the JSON the other subcommands
//! wrote, with every aim of the benchmark checked against the numbers.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::blktrace::{self, BlktraceResult};
use crate::host::{self, HostResult};
use crate::json;
use crate::pbench::{self, PbenchResult};
use crate::readers::{self, per_gib, row, table, Row, RunResult};
use crate::rounds::{ratio_spread, spread_note};
use crate::transports::{self, Figure, Transport, TransportsResult};

/// One aim: what it asks, what was measured, and whether it holds (None:
/// not measured).
struct Aim {
    aim: String,
    measured: String,
    pass: Option<bool>,
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "pass",
        Some(false) => "**fail**",
        None => "not measured",
    }
}

/// What every run of a `run` row lost (older results: the one run's).
fn lost_of_runs(row: &Row) -> Vec<u64> {
    if row.lost_of_rounds.is_empty() {
        vec![row.lost]
    } else {
        row.lost_of_rounds.clone()
    }
}

/// "; run 3 lost while a producer was held up for 4.7 ms, ..." naming the
/// runs of `row` that lost records in a stall of at least a buffer's fill
/// time (see `lost_in_a_stall`), or nothing.
fn stall_note(row: &Row, full: &RunResult) -> String {
    let Some((_, fill_ms)) = readers::producer_speed(full) else {
        return String::new();
    };
    let stalls = readers::lost_in_a_stall(row, fill_ms);
    let list = |cell: &dyn Fn(&(usize, f64)) -> String| {
        stalls.iter().map(cell).collect::<Vec<_>>().join(", ")
    };
    match stalls.len() {
        0 => String::new(),
        n => format!(
            "; {} {} lost while a producer was held up for {}, at least the {fill_ms:.1} ms a buffer takes to fill (a stalled vCPU, see below)",
            if n == 1 { "run" } else { "runs" },
            list(&|(run, _)| run.to_string()),
            list(&|(_, ms)| format!("{ms:.1} ms")),
        ),
    }
}

/// mmap mode's CPU per GiB over the cat loop's in one `run` result, with
/// the spread of the per-round ratios.
fn mmap_vs_cat(run: &RunResult) -> Option<(f64, Option<(f64, f64)>)> {
    let (mmap, cat) = (row(run, readers::DEFAULT_ROW)?, row(run, "cat loop")?);
    let ratio = per_gib(mmap) / per_gib(cat);
    // Every run moves the same bytes: the ratio of the median runs' bytes
    // scales each round's ratio of CPU seconds.
    let scale = cat.bytes as f64 / mmap.bytes as f64;
    let spread = ratio_spread(
        &mmap.cpu_seconds_of_rounds,
        &cat.cpu_seconds_of_rounds,
        scale,
    );
    ratio.is_finite().then_some((ratio, spread))
}

/// `; the {what}' spread crosses the aim` where the aim holds at one end
/// of the spread `(lo, hi)` and not at the other, else nothing.
fn crosses_note(holds: &dyn Fn(f64) -> bool, (lo, hi): (f64, f64), what: &str) -> String {
    if holds(lo) == holds(hi) {
        String::new()
    } else {
        format!("; the {what}' spread crosses the aim")
    }
}

/// The aims, and the zero-loss check of the non-default reading
/// configurations, shown beside them but not aims.
fn aims(
    host: Option<&HostResult>,
    paced: Option<&RunResult>,
    full: Option<&RunResult>,
    blk: Option<&BlktraceResult>,
    pb: Option<&PbenchResult>,
    tr: Option<&TransportsResult>,
) -> (Vec<Aim>, Vec<Aim>) {
    let mut aims = Vec::new();
    let mut shown = Vec::new();
    for (label, run) in [("paced", paced), ("full speed", full)] {
        let ratio = run.and_then(mmap_vs_cat);
        let rounds = run.map_or(0, |r| r.rounds as usize);
        aims.push(Aim {
            aim: format!("mmap mode <= 0.4x the cat loop's CPU per GiB ({label} producer)"),
            measured: ratio.map_or("-".into(), |(r, spread)| {
                format!("{r:.2}x{}", spread_note(spread, rounds))
            }),
            pass: ratio.map(|(r, _)| r <= 0.4),
        });
    }

    let blk_row = |name: &str| blk.and_then(|b| b.rows.iter().find(|r| r.name == name));
    let base = blk_row("blktrace (Debian)").map(blktrace::per_gib);
    match (base, blk_row("relay-blktrace --mode mmap")) {
        (Some(base), Some(mmap)) => {
            let r = blktrace::per_gib(mmap) / base;
            let base_row = blk_row("blktrace (Debian)").expect("matched above");
            let spread = ratio_spread(
                &mmap.cpu_seconds_of_rounds,
                &base_row.cpu_seconds_of_rounds,
                base_row.bytes as f64 / mmap.bytes as f64,
            );
            let spread = spread_note(spread, mmap.cpu_seconds_of_rounds.len());
            let name = "relay-blktrace --mode mmap";
            let above = blk.and_then(|b| blktrace::above_floor_vs_blktrace(b, name));
            let moving = blk.and_then(|b| blktrace::moving_vs_blktrace(b, name));
            // Where the floor and the idle cost alone exceed the aim, say so:
            // no tracer could meet it on this machine.
            let out_of_reach = blk
                .and_then(|b| blktrace::fixed_cost_vs_blktrace(b, name))
                .filter(|&f| f > 0.5)
                .map_or(String::new(), |f| {
                    format!(
                        "; the tmpfs write floor and relay-blktrace's idle cost alone are {f:.2}x, \
                         above the aim even if moving the events cost nothing"
                    )
                });
            aims.push(Aim {
                aim: "mmap mode <= 0.5x blktrace's CPU per GiB (same blktrace channel)".into(),
                measured: match (above, moving) {
                    (Some(a), Some(m)) => format!(
                        "{r:.2}x{spread} ({a:.2}x above the tmpfs write floor, {m:.2}x above idle cost and the floor{out_of_reach})"
                    ),
                    (Some(a), None) => {
                        format!("{r:.2}x{spread} ({a:.2}x above the tmpfs write floor)")
                    }
                    _ => format!("{r:.2}x{spread}"),
                },
                pass: Some(r <= 0.5),
            });
        }
        (base, _) => {
            let read = base
                .zip(blk_row("relay-blktrace"))
                .map(|(b, r)| blktrace::per_gib(r) / b);
            aims.push(Aim {
                aim: "mmap mode <= 0.5x blktrace's CPU per GiB (same blktrace channel)".into(),
                measured: format!(
                    "the stock kernel's blktrace files have no relay ABI, so no mmap mode; relay-blktrace in read(2) mode: {}",
                    read.map_or("-".into(), |r| format!("{r:.2}x"))
                ),
                pass: None,
            });
        }
    }

    // The default must be lossless, and so must what it is made of; the
    // normal policy is shown beside them.
    for (name, how, aim) in [
        (
            readers::DEFAULT_ROW,
            "mmap mode, no flag: SCHED_FIFO priority 10 where permitted (root here)",
            true,
        ),
        (
            readers::NORMAL_ROW,
            "mmap mode, normal scheduling: `--no-realtime`",
            false,
        ),
        (
            readers::SLICE_ROW,
            "mmap mode, normal scheduling with a 100 µs slice: `--slice-us 100`",
            false,
        ),
        (
            readers::REALTIME_ROW,
            "mmap mode under SCHED_FIFO: `--realtime 10`",
            true,
        ),
    ] {
        let lost = full.and_then(|f| Some((row(f, name)?, f)));
        let (list, label) = if aim {
            (
                &mut aims,
                format!(
                    "zero loss at the producer's full speed, 8 x 256 KiB buffers on 2 CPUs ({how})"
                ),
            )
        } else {
            (&mut shown, how.to_string())
        };
        list.push(Aim {
            aim: label,
            measured: lost.map_or("-".into(), |(r, f)| {
                let offered = r.lost + r.written;
                let runs = lost_of_runs(r);
                let worst = runs.iter().copied().max().unwrap_or(0);
                let stalls = stall_note(r, f);
                format!(
                    "records lost in each of {} runs: {} of {offered} (at most {:.2}%), {} x {} KiB on {} CPUs{stalls}",
                    runs.len(),
                    runs.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                    100.0 * worst as f64 / offered.max(1) as f64,
                    f.n_subbufs,
                    f.subbuf_size >> 10,
                    f.n_cpus
                )
            }),
            pass: lost.map(|(r, _)| lost_of_runs(r).iter().all(|&l| l == 0)),
        });
    }

    // The reader core against memcpy: the case with the lowest ratio among
    // those `pick` chooses, or None where the run had none of them.
    let core = |pick: &dyn Fn(&host::CaseResult) -> bool| {
        host.and_then(|h| {
            h.cases
                .iter()
                .filter(|c| pick(c))
                .min_by(|a, b| host::ratio(a).total_cmp(&host::ratio(b)))
        })
    };
    for (aim, floor, case) in [
        (
            "reader core >= 0.8x memcpy (8 x 256 KiB, no-overwrite; the lowest of its patterns)",
            0.8,
            core(&|c| !c.overwrite && c.subbuf_size == 256 << 10),
        ),
        (
            "reader core >= 0.8x memcpy with small sub-buffers (8 x 4 KiB, no-overwrite, 256- and \
             64-byte records; the lower)",
            0.8,
            core(&|c| !c.overwrite && c.subbuf_size == 4 << 10),
        ),
        (
            "reader core >= 0.45x memcpy in overwrite mode (8 x 256 KiB: copy, then check the \
             slot)",
            0.45,
            core(&|c| c.overwrite),
        ),
    ] {
        let ratio = case.map(host::ratio);
        aims.push(Aim {
            aim: aim.into(),
            // Where the ratio falls short, what it would take: the reader's
            // time per sub-buffer above the copy, against the most the aim
            // leaves it.
            measured: case.map_or("-".into(), |c| {
                let r = host::ratio(c);
                let crosses = host::trial_spread(c)
                    .map(|spread| crosses_note(&|r| r >= floor, spread, "trials"))
                    .unwrap_or_default();
                let shown = format!("{}{crosses}", host::ratio_with_spread(c));
                if r >= floor {
                    return shown;
                }
                let per = |secs: f64| secs * 1e9 / c.subbufs.max(1) as f64;
                let copy = per(c.memcpy_secs);
                format!(
                    "{shown} ({}): the reader adds {:.1} ns per sub-buffer to memcpy's {copy:.1} \
                     ns, {floor}x leaves it {:.1} ns",
                    c.name,
                    per(c.reader_secs) - copy,
                    copy * (1.0 / floor - 1.0),
                )
            }),
            pass: ratio.map(|r| r >= floor),
        });
    }

    let klog = pb.and_then(|p| {
        Some((
            pbench::ns(p, "klog() off")?,
            pbench::ns(p, "empty function call")?,
        ))
    });
    aims.push(Aim {
        aim: "klog off indistinguishable from an empty function call (at most 1.1x its cost)"
            .into(),
        measured: klog.map_or("-".into(), |(off, empty)| {
            format!("{off:.1} ns vs {empty:.1} ns ({:.2}x)", off / empty)
        }),
        pass: klog.map(|(off, empty)| off <= 1.1 * empty),
    });
    aims.extend(transport_aims(tr));
    (aims, shown)
}

/// relay + relay-reader against the BPF ring buffer: lossless records/s
/// at 8 and 64 bytes, consumer CPU per GiB at 256 bytes. An aim holds when
/// the ratio of the medians does; the rounds' spread stands beside it.
fn transport_aims(tr: Option<&TransportsResult>) -> Vec<Aim> {
    let both = |size| {
        let tr = tr?;
        Some((
            transports::cell(tr, Transport::Relay, size)?,
            transports::cell(tr, Transport::Ringbuf, size)?,
        ))
    };
    let measured = |size, figure, holds: &dyn Fn(f64) -> bool| match both(size) {
        Some((relay, ring)) => {
            let (r, lo, hi) = transports::ratio(relay, ring, figure);
            let crosses = crosses_note(holds, (lo, hi), "rounds");
            (
                format!(
                    "{r:.2}x (rounds {lo:.2}-{hi:.2}, {} rounds{crosses})",
                    relay.rounds.len()
                ),
                Some(holds(r)),
            )
        }
        None => (
            tr.and_then(|t| t.bpf_unavailable.clone())
                .map_or("-".into(), |why| format!("no BPF on this kernel: {why}")),
            None,
        ),
    };
    let mut aims = Vec::new();
    for size in [8, 64] {
        let (m, pass) = measured(size, Figure::LosslessRate, &|r| r >= 1.5);
        aims.push(Aim {
            aim: format!(
                "relay + relay-reader >= 1.5x the BPF ring buffer's lossless records/s ({size}-byte records)"
            ),
            measured: m,
            pass,
        });
    }
    let (mut m, pass) = measured(256, Figure::CpuPerGib, &|r| r <= 0.5);
    if let Some((relay, ring)) =
        both(256).filter(|(r, _)| r.rounds.iter().any(|r| r.paced.received > 0))
    {
        let (p, lo, hi) = transports::ratio(relay, ring, Figure::PacedCpuPerGib);
        m.push_str(&format!(
            "; at the same fixed rate ({}/s per CPU) {p:.2}x (rounds {lo:.2}-{hi:.2})",
            tr.map_or(0, |t| t.paced_rate)
        ));
    }
    if let (Some((relay, ring)), Some(tr)) = (both(256), tr) {
        if let Some(work) = tr.loop_alone.iter().find(|l| l.record_size == 256) {
            // What each consumer's own work (the same records checked in
            // memory: in sub-buffer passes for relay, a record at a time
            // for the callbacks) costs, and what the transport adds to it.
            let cpu = |c| transports::median(&transports::figures(c, Figure::CpuPerGib));
            let (relay_work, ring_work) = (
                transports::median(&work.check_bulk_cpu_per_gib),
                transports::median(&work.check_each_cpu_per_gib),
            );
            let (relay_cpu, ring_cpu) = (cpu(relay), cpu(ring));
            let above = if relay_cpu > relay_work && ring_cpu > ring_work {
                format!(
                    "above it {:.2}x",
                    (relay_cpu - relay_work) / (ring_cpu - ring_work)
                )
            } else {
                "a transport at or below it is within the noise of that figure".into()
            };
            m.push_str(&format!(
                "; {relay_cpu:.2} against {ring_cpu:.2} CPU s per GiB, of which the consumer's own \
                 work on the same records in memory is {relay_work:.2} and {ring_work:.2} \
                 (so at best {:.2}x with a free transport); {above}",
                relay_work / ring_cpu,
            ));
        }
    }
    aims.push(Aim {
        aim: "relay + relay-reader <= 0.5x the BPF ring buffer's consumer CPU per GiB (256-byte records, full speed)".into(),
        measured: m,
        pass,
    });
    aims
}

/// When the run ended: the time its last JSON file was written (so that
/// rendering the report again keeps the run's date).
fn date(dir: &Path) -> String {
    let newest = [
        "host.json",
        "paced.json",
        "full.json",
        "blktrace.json",
        "pbench.json",
        "transports.json",
    ]
    .iter()
    .filter_map(|f| {
        std::fs::metadata(dir.join(f))
            .and_then(|m| m.modified())
            .ok()
    })
    .max();
    let mut cmd = Command::new("date");
    cmd.args(["-u", "+%Y-%m-%d %H:%M UTC"]);
    if let Some(secs) = newest.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()) {
        cmd.arg(format!("--date=@{}", secs.as_secs()));
    }
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// What `relay-bench report` takes.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Directory with host.json, paced.json, full.json, blktrace.json,
    /// pbench.json, transports.json.
    #[arg(long)]
    dir: PathBuf,
    /// The command that produced the files (for the header).
    #[arg(long)]
    command: String,
    /// Where to write the report.
    #[arg(long)]
    out: PathBuf,
}

/// What the transport section says before its tables.
const TRANSPORTS_INTRO: &str = "\n## VM: relay against the BPF ring buffer and the perf buffer\n\n\
    `relay-bench transports`: one producer, the relay_xbench module (`ci/bench/module/`, built \
    out of tree by `cargo xtask bench`), writes numbered records from a work item on every CPU \
    for a fixed time, as fast as it can or at a fixed rate, through `relay_app_write()` into a \
    relay channel read by relay-reader (`relay_recorder::Recording`, mmap mode, its default \
    thread per buffer pinned to the buffer's CPU, normal scheduling), or through its tracepoint \
    `relay_xbench_record`, to which a BPF program is attached as a raw tracepoint (`raw_tp`: \
    module tracepoints work with it on stock Debian 6.12 without BTF or kprobes; it gets the \
    record's address and copies it with `bpf_probe_read_kernel`) into a BPF ring buffer \
    (`bpf_ringbuf_reserve`, copy, `bpf_ringbuf_submit`; consumed by libbpf-rs `RingBuffer` on \
    one thread) or the perf buffer (`bpf_perf_event_output`; libbpf-rs `PerfBuffer`, one \
    thread, libbpf's default of a wake-up per sample). Every consumer does the same work per \
    record and writes nothing: it sums every 64-bit word and checks every record's CPU and \
    sequence number. Loss is each transport's own count: records `relay_app_write()` refused, \
    records the BPF program's output helper could not place. Consumer CPU is the user + system \
    time of the consumer threads (the process's less its main thread's) from the start of a run \
    until every record arrived (relay's partly filled sub-buffers flushed through relay_app's \
    `enabled` file), at full speed and at a fixed rate every transport can take; the consumers \
    are set up before a round's runs and torn down after them, unmeasured; the producer's cost per record is its loop's time over the \
    records it offered, alone (no consumer: a burst the buffers hold) and at full speed with the \
    consumer running (a pinned relay reader takes its CPU from that CPU's producer). The \
    consumers' own work is timed apart, on records held in a buffer of the same size, while the \
    producer loop runs on every CPU as in a run. A transport \
    that lost nothing at full speed has its full speed as its lossless rate: there the producer, \
    not the consumer, is the limit. Ratios are against the BPF ring buffer. The BPF transports \
    need a kernel with BPF (`CONFIG_BPF_SYSCALL`, `CONFIG_BPF_EVENTS`): the stock Debian kernel \
    that `cargo xtask bench` boots by default has it, the slim kernels of kernel-patches/config \
    do not (relay's rows alone then).\n\n";

/// Writes the report.
pub fn run(args: &ReportArgs) -> Result<()> {
    let (dir, command, out) = (
        args.dir.as_path(),
        args.command.as_str(),
        args.out.as_path(),
    );
    let host: Option<HostResult> = json::read(dir, "host.json")?;
    let paced: Option<RunResult> = json::read(dir, "paced.json")?;
    let full: Option<RunResult> = json::read(dir, "full.json")?;
    let blk: Option<BlktraceResult> = json::read(dir, "blktrace.json")?;
    let pb: Option<PbenchResult> = json::read(dir, "pbench.json")?;
    let tr: Option<TransportsResult> = json::read(dir, "transports.json")?;
    let kernel = [&paced, &full]
        .iter()
        .find_map(|run| Some(run.as_ref()?.kernel.clone()))
        .or_else(|| Some(blk.as_ref()?.kernel.clone()))
        .unwrap_or_else(|| "?".into());
    let vcpus = paced
        .as_ref()
        .or(full.as_ref())
        .map_or("?".into(), |run| run.n_cpus.to_string());
    // Series kernels are named <version>-relay[-variant] (build-kernel.sh).
    let kind = if kernel.contains("-relay") {
        "built from kernel-patches/series"
    } else {
        "stock Debian"
    };
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(&format!(
        "Generated by `{command}` on {} (do not edit: run the command again). \
         Everything below comes from that one run: each table compares contenders measured \
         side by side under the same load, so read the ratios, not the absolute numbers.\n\n",
        date(dir)
    ));
    s.push_str(&format!(
        "- Host: {}, {} CPUs, shared with other work (the host benchmark takes the best of several alternating trials).\n\
         - VM: the kernel {kernel} ({kind}), {vcpus} vCPUs, under QEMU TCG (software emulation, no KVM): \
         absolute times are many times slower than on hardware, and the guest's clock and \
         scheduling are emulated too.\n\n",
        host.as_ref()
            .map_or_else(host::cpu_model, |h| h.cpu.clone()),
        host.as_ref().map_or("?".into(), |h| h.n_cpus.to_string()),
    ));

    s.push_str("## Aims\n\n| aim | measured | result |\n|---|---|---|\n");
    let (aims, shown) = aims(
        host.as_ref(),
        paced.as_ref(),
        full.as_ref(),
        blk.as_ref(),
        pb.as_ref(),
        tr.as_ref(),
    );
    for aim in aims {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            aim.aim,
            aim.measured,
            verdict(aim.pass)
        ));
    }
    s.push_str(
        "\nZero loss at the producer's full speed, the same check for the configurations the \
         default was chosen over, shown beside the aims and not aims themselves: under the normal policy a TCG vCPU can stand still for \
         longer than a buffer takes to fill (see the full-speed table below), which is why \
         `relay-reader record` runs its readers under SCHED_FIFO where it may.\n\n\
         | configuration | measured | lossless in every run |\n|---|---|---|\n",
    );
    for row in shown {
        let lossless = match row.pass {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not measured",
        };
        s.push_str(&format!(
            "| {} | {} | {lossless} |\n",
            row.aim, row.measured
        ));
    }

    s.push_str("\n## Host: the reader core against memcpy\n\n");
    match &host {
        Some(h) => {
            s.push_str(&format!(
                "`relay-bench host` (release build: one codegen unit and LTO, as the workspace's release \
                 profile sets), no kernel: the relay model's writer fills \
                 sub-buffers with records ({} bytes unless the case names another size; the \
                 reader delivers whole sub-buffers, so the size decides only the padding) (not \
                 timed), then either the reader core \
                 (`MappedSource::drain` over `ModelMapping`, the model read the way `KernelBuffer` \
                 reads a relay file's mapping, without the model's own checks on the reader; its \
                 callback copies each sub-buffer into a sink buffer, as write(2) into the page \
                 cache would) or a plain `copy_from_slice` of the same sub-buffers into the same \
                 sink buffer is timed. Rounds alternate, and so does which side goes first; the \
                 best of {} trials of {} MiB counts (the ratio of the two best times; beside it the lowest and highest ratio within one trial). Each round's time leaves out the clock's \
                 own cost (read once more just before the round, and the difference taken off), \
                 which would otherwise weigh on both sides of the small-sub-buffer cases alike \
                 and pull their ratios towards 1. ABI system calls per sub-buffer are the ones \
                 the reader makes into the relay ABI: with the meta area the model has (as the patched \
                 kernel does), counters and sub-buffer locations are reads of the mapping and a \
                 drain releases what it read with one CONSUME (without overwrite, two when a batch \
                 passes half the ring); \
                 a trivial system call (getppid) costs {:.0} ns on this host. Besides them the reader makes one \
                 poll(2) per wake-up and the sink one write(2) per sub-buffer.\n\n",
                h.record_size, h.trials, h.mib_per_trial, h.syscall_ns,
            ));
            s.push_str(&host::table(h));
        }
        None => s.push_str("Not run.\n"),
    }

    s.push_str(
        "\n## VM: relay-reader, a cat loop and dd under the relay_bench producer\n\n\
         Each contender (run from the guest's tmpfs) reads the relay_bench channel (module \
         loaded afresh for each) into \
         /dev/null while every CPU writes the same numbered records; CPU seconds are the \
         reader's user + system time (getrusage), records lost are what the kernel refused \
         because the buffer was full. `dd` from /dev/zero to /dev/null moves the same bytes: \
         the floor.\n\n",
    );
    for (title, run) in [
        ("A paced producer", &paced),
        (
            "The producer at full speed (a kernel worker on every CPU fills the buffers in \
             milliseconds). relay-reader reads each buffer on a thread pinned to the buffer's \
             CPU unless told `--single-thread`: relay wakes a reader from the CPU that filled \
             its buffer, so a pinned reader is woken where its producer runs and, once it has \
             the CPU, that producer waits; a stalled vCPU stops both. One thread serving both \
             buffers is woken across CPUs and competes with its own CPU's producer: under the \
             normal policy it waits for its turn while the other buffer fills, under \
             SCHED_FIFO it runs as soon as the kernel wakes it unless its virtual CPU stops \
             (under TCG a vCPU can stand still for milliseconds while the host runs the \
             emulator's other threads; a long producer pause in a run that lost records shows \
             it). A short slice (`--slice-us`) lets a woken reader preempt a producer under \
             Linux 6.12's EEVDF without privileges",
            &full,
        ),
    ] {
        s.push_str(&format!("{title}:\n\n"));
        match run {
            Some(r) => s.push_str(&table(r)),
            None => s.push_str("Not run.\n"),
        }
        s.push('\n');
    }

    s.push_str(
        "## VM: blktrace against relay-blktrace\n\n\
         Debian's `blktrace` and `relay-blktrace` each record the same blktrace relay channel \
         (`<debugfs>/block/nullb0/trace<cpu>`) to per-CPU files on the guest's tmpfs while the \
         same fio load runs; tracer CPU is user + system time of the tracer alone, trace data \
         is the size of its files, drops the kernel's `dropped` count both print.\n\n",
    );
    match &blk {
        Some(b) => s.push_str(&blktrace::table(b)),
        None => s.push_str("Not run.\n"),
    }
    s.push_str(
        "\n## VM: the producer side\n\n\
         The relay_pbench module times each way to log an event in a loop in the kernel \
         (`relay-bench pbench`). klog off is a static-key branch over the call; klog on \
         goes through relay_klog's handler into its relay channel.\n\n",
    );
    match &pb {
        Some(p) => s.push_str(&pbench::table(p)),
        None => s.push_str("Not run.\n"),
    }
    s.push_str(TRANSPORTS_INTRO);
    match &tr {
        Some(t) => s.push_str(&transports::table(t)),
        None => s.push_str("Not run.\n"),
    }
    std::fs::write(out, s).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("report: wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_note_names_the_runs_lost_in_a_stall() {
        // 64 MiB per CPU in 0.128 s: 500 MiB/s, 2 MiB fill in 4 ms.
        let full = RunResult {
            bytes_per_cpu: 64 << 20,
            subbuf_size: 256 << 10,
            n_subbufs: 8,
            rows: vec![Row {
                name: readers::REALTIME_ROW.into(),
                produce_secs: 0.128,
                ..Row::default()
            }],
            ..RunResult::default()
        };
        let row = |pauses: [u64; 3]| Row {
            lost_of_rounds: vec![5, 0, 9],
            max_pause_ns_of_rounds: pauses.into_iter().map(Some).collect(),
            ..Row::default()
        };
        assert_eq!(
            stall_note(&row([4_500_000, 9_000_000, 6_000_000]), &full),
            "; runs 1, 3 lost while a producer was held up for 4.5 ms, 6.0 ms, at least the 4.0 ms a buffer takes to fill (a stalled vCPU, see below)"
        );
        assert_eq!(
            stall_note(&row([4_500_000, 0, 1_000_000]), &full),
            "; run 1 lost while a producer was held up for 4.5 ms, at least the 4.0 ms a buffer takes to fill (a stalled vCPU, see below)"
        );
        assert_eq!(stall_note(&row([1, 1, 1]), &full), "");
        assert_eq!(stall_note(&row([1, 1, 1]), &RunResult::default()), "");
    }

    #[test]
    fn a_run_file_of_the_first_format_still_reads() {
        // paced.json as `run` wrote it before rounds, warm-up and pauses.
        let old = r#"{"kernel": "6.12.117+deb12-amd64", "n_cpus": 2,
            "bytes_per_cpu": 67108864, "record_size": 256, "rate": 0,
            "subbuf_size": 262144, "n_subbufs": 8, "rows": [
            {"name": "relay-reader --mode mmap", "bytes": 134217728,
             "cpu_seconds": 0.5, "lost": 0, "written": 524288},
            {"name": "cat loop (4 KiB read(2) + poll)", "bytes": 134217728,
             "cpu_seconds": 2.0, "lost": 10, "written": 524278}]}"#;
        let run: RunResult = serde_json::from_str(old).unwrap();
        assert_eq!((run.rounds, run.rows[0].max_pause_ns), (0, None));
        assert_eq!(mmap_vs_cat(&run), Some((0.25, None)));
        assert_eq!(lost_of_runs(&run.rows[1]), [10]);
        let table = table(&run);
        assert!(
            table.contains("the median (by CPU time) of 1 runs"),
            "{table}"
        );
        assert!(table.contains("| 0.25x |"), "{table}");
    }
}
