//! Reads a relay channel from tokio: the [`Reader`]'s fd (an epoll fd over
//! every buffer of the channel) in tokio's `AsyncFd`, and the pull API once
//! it is readable.
//!
//! ```sh
//! cargo run -p relay-reader --example tokio_asyncfd -- /sys/kernel/debug/relay_klog/cpu 10
//! ```
//!
//! Usage: `tokio_asyncfd [--mode auto|mmap|relay-app|read] [--out DIR] CHANNEL SECONDS`.
//! Reads CHANNEL for SECONDS (or until the kernel closes every buffer),
//! then flushes and takes the partly filled sub-buffers, and prints what
//! each CPU's buffer delivered:
//!
//! ```text
//! cpu 0: subbufs=47 before_flush=46 bytes=190123 lost_subbufs=0 produced=47 dropped=0
//! ```
//!
//! `before_flush` counts the sub-buffers taken while reading, woken by
//! tokio; `produced` and `dropped` (writes the kernel dropped, buffer full or
//! too big) are the kernel's counters, `-` where the buffer has none. With
//! `--out DIR` each CPU's data is also written to `DIR/cpuN`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use relay_reader::{Mode, Reader, SubBufGuard};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

type Error = Box<dyn std::error::Error>;

struct Args {
    mode: Mode,
    out: Option<PathBuf>,
    channel: PathBuf,
    duration: Duration,
}

fn usage() -> Error {
    "usage: tokio_asyncfd [--mode auto|mmap|relay-app|read] [--out DIR] CHANNEL SECONDS".into()
}

fn parse_args() -> Result<Args, Error> {
    let mut mode = Mode::Auto;
    let mut out = None;
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => {
                let name = args.next().ok_or_else(usage)?;
                mode = [Mode::Auto, Mode::Mmap, Mode::RelayApp, Mode::Read]
                    .into_iter()
                    .find(|m| m.name() == name)
                    .ok_or_else(usage)?;
            }
            "--out" => out = Some(PathBuf::from(args.next().ok_or_else(usage)?)),
            _ => rest.push(arg),
        }
    }
    let [channel, seconds] = <[String; 2]>::try_from(rest).map_err(|_| usage())?;
    Ok(Args {
        mode,
        out,
        channel: channel.into(),
        duration: Duration::from_secs_f64(seconds.parse().map_err(|_| usage())?),
    })
}

/// What one CPU's buffer delivered.
#[derive(Default)]
struct Received {
    subbufs: u64,
    data: Vec<u8>,
}

fn keep(got: &mut BTreeMap<u32, Received>, sb: &SubBufGuard<'_>, keep_data: bool) {
    let cpu = got.entry(sb.cpu()).or_default();
    cpu.subbufs += 1;
    if keep_data {
        cpu.data.extend_from_slice(sb);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_asyncfd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let keep_data = args.out.is_some();
    let reader = Reader::open(&args.channel, args.mode)?;
    eprintln!(
        "tokio_asyncfd: recording {} for {:?} ({} mode, {} buffers)",
        args.channel.display(),
        args.duration,
        reader.mode(),
        reader.sources().len()
    );
    // SAFETY: a Reader's fd is its poller's, open and the same for as long
    // as the reader lives (documented on `impl AsRawFd for Reader`), and
    // the AsyncFd owns the reader.
    let mut fd = unsafe { AsyncFd::register_with_interest(reader, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let deadline = tokio::time::Instant::now() + args.duration;
    let mut got = BTreeMap::new();
    loop {
        let Ok(guard) = tokio::time::timeout_at(deadline, fd.readable_mut()).await else {
            break; // the time is up
        };
        let mut guard = guard?;
        let reader = guard.get_inner_mut();
        // Never blocks: notes buffers the kernel closed and new CPUs'.
        reader.wait(Duration::ZERO)?;
        while let Some(sb) = reader.next()? {
            keep(&mut got, &sb, keep_data);
        } // each sub-buffer goes back to the kernel as `sb` is dropped
        let finished = reader.finished();
        // Readable again once a buffer has more (tokio keeps a wake-up that
        // came in the meantime).
        guard.clear_ready();
        if finished {
            break;
        }
    }

    let mut reader = fd.into_inner();
    let before_flush: BTreeMap<u32, u64> = got.iter().map(|(&c, r)| (c, r.subbufs)).collect();
    reader.flush()?;
    while let Some(sb) = reader.next()? {
        keep(&mut got, &sb, keep_data);
    }

    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        for (cpu, received) in &got {
            std::fs::write(dir.join(format!("cpu{cpu}")), &received.data)?;
        }
    }
    let count = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    for stats in reader.stats() {
        let kernel = stats.kernel;
        println!(
            "cpu {}: subbufs={} before_flush={} bytes={} lost_subbufs={} produced={} dropped={}",
            stats.cpu,
            stats.subbufs,
            before_flush.get(&stats.cpu).copied().unwrap_or(0),
            stats.bytes,
            stats.lost_subbufs,
            count(kernel.map(|k| k.produced)),
            count(kernel.map(|k| k.lost_full + k.lost_toobig)),
        );
    }
    Ok(())
}
