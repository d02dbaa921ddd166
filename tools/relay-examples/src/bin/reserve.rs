//! `relay-example-reserve`: the user side of the reserve example. Prints
//! the records of the `relay_reserve` channel, `cpu<N> <text>` per line,
//! until Ctrl-C, taking a sub-buffer only once every record in it was
//! filled.
//!
//! The module reserves room for a record, then fills it in place (straight
//! from user space), so a sub-buffer may reach readers before its slots are
//! written. Each sub-buffer's data starts with a u32 count of committed
//! bytes, raised as each record is filled: the sub-buffer is complete when
//! the count equals the length of the data after it. Until then this
//! reader neither prints nor releases it (the channel is no-overwrite, so
//! the writer waits for the release) and says once on stderr that it waits.
//!
//! This uses the library's lower layer, the relay ioctls of one buffer
//! ([`MappedBuffer`]): `Reader::poll` releases each sub-buffer when its callback
//! returns, which is right for every other channel but this one.
//!
//! Run it (as root; the top-level README shows it in the VM):
//!
//! ```text
//! insmod relay_app.ko; insmod relay_reserve.ko
//! echo hello > /sys/kernel/debug/relay_reserve/write
//! relay-example-reserve -w 1              # prints "cpu<N> hello"
//! ```

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags};
use relay_examples::{load_hint, stop_on_signals};
use relay_reader::kernel::KernelBuffer;
use relay_reader::mapped::{MappedBuffer, SubbufLookup};
use relay_reader::source::Source;
use relay_reader::{Mode, Reader};

/// Print the records of the relay_reserve channel until Ctrl-C.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  insmod relay_app.ko; insmod relay_reserve.ko\n  \
                  echo hello > /sys/kernel/debug/relay_reserve/write; relay-example-reserve -w 1"
)]
struct Cli {
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(short = 'w', long)]
    duration: Option<f64>,
    /// Channel base path.
    #[arg(long, default_value = "/sys/kernel/debug/relay_reserve/cpu")]
    channel: PathBuf,
}

/// Bytes of the committed count at the start of each sub-buffer's data.
const COUNT: usize = 4;
/// Record length flag of a record whose copy failed (`RELAY_RESERVE_DISCARDED`).
const DISCARDED: u32 = 1 << 31;

/// One buffer: where its reader stands.
struct Buffer<'a> {
    cpu: u32,
    buf: &'a mut KernelBuffer,
    /// The next sub-buffer to print.
    next: u64,
    /// The incomplete sub-buffer already reported, not to repeat it.
    reported: Option<u64>,
}

/// The committed count at the start of `data`, loaded with acquire
/// ordering: the bytes it vouches for are read after it.
fn committed(data: &[u8]) -> Result<u32> {
    let ptr = data.as_ptr().cast::<u32>();
    if data.len() < COUNT || !ptr.is_aligned() {
        bail!(
            "sub-buffer data of {} bytes has no aligned committed count",
            data.len()
        );
    }
    // SAFETY: `ptr` points at 4 aligned bytes inside the mapping, which
    // outlives this call. The kernel changes them only with atomic_set() and
    // atomic_add() (relay_app_commit()), and an atomic load of a u32 is
    // allowed on read-only memory.
    let count = unsafe { AtomicU32::from_ptr(ptr.cast_mut()) };
    // Acquire pairs with smp_mb__before_atomic() in relay_app_commit(): the
    // record bytes this count vouches for are read after it.
    Ok(count.load(Ordering::Acquire))
}

/// Prints the complete sub-buffers of `b`; returns how many, and whether
/// an incomplete one holds the rest back.
fn drain(b: &mut Buffer<'_>, out: &mut impl Write) -> Result<(u64, bool)> {
    let state = b.buf.state()?;
    b.next = b.next.max(state.consumed);
    let mut printed = 0;
    while b.next < state.produced {
        let loc = match b.buf.subbuf(b.next)? {
            SubbufLookup::Ready(loc) => loc,
            SubbufLookup::NotReady => break,
            SubbufLookup::Overwritten => {
                bail!("cpu{}: a no-overwrite buffer was overwritten", b.cpu)
            }
        };
        let data = b.buf.data(&loc);
        let count = committed(data)? as usize;
        let len = data.len() - COUNT;
        if count != len {
            if count > len {
                bail!(
                    "cpu{} sub-buffer {}: {count} bytes committed of {len}",
                    b.cpu,
                    b.next
                );
            }
            if b.reported != Some(b.next) {
                eprintln!(
                    "relay-example-reserve: cpu{} sub-buffer {}: {count} of {len} bytes committed, \
                     waiting for its writers",
                    b.cpu, b.next
                );
                b.reported = Some(b.next);
            }
            return Ok((printed, true));
        }
        // Complete: every record in it was filled. Print it, then release it.
        let mut records = &data[COUNT..];
        while !records.is_empty() {
            let Some((head, rest)) = records.split_first_chunk::<4>() else {
                bail!("cpu{} sub-buffer {}: a torn record header", b.cpu, b.next);
            };
            let word = u32::from_ne_bytes(*head);
            let n = (word & !DISCARDED) as usize;
            if n > rest.len() {
                bail!(
                    "cpu{} sub-buffer {}: record of {n} bytes past the end",
                    b.cpu,
                    b.next
                );
            }
            if word & DISCARDED == 0 {
                let text = String::from_utf8_lossy(&rest[..n]);
                writeln!(out, "cpu{} {}", b.cpu, text.trim_end_matches('\n'))?;
            }
            records = &rest[n..];
        }
        out.flush()?;
        b.buf.release(b.next, 1)?;
        b.next += 1;
        printed += 1;
    }
    Ok((printed, false))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Its own loop, not a Recording: a recording releases every sub-buffer
    // it delivers, and this reader must hold incomplete ones.
    let stop = stop_on_signals()?;
    let deadline = match cli.duration {
        Some(s) => Some(
            Instant::now()
                + Duration::try_from_secs_f64(s)
                    .with_context(|| format!("-w {s}: not a duration"))?,
        ),
        None => None,
    };
    let done = || stop.is_raised() || deadline.is_some_and(|d| Instant::now() >= d);
    let mut reader = Reader::open(&cli.channel, Mode::Mmap).context(load_hint("relay_reserve"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    eprintln!(
        "relay-example-reserve: printing the records of {} buffers of {} until Ctrl-C",
        reader.sources().len(),
        cli.channel.display()
    );
    let mut buffers = Vec::new();
    for source in reader.sources_mut() {
        let Source::Mmap(s) = source else {
            bail!(
                "{}: not read through the relay ioctls",
                source.path().display()
            );
        };
        let cpu = s.stats().cpu;
        let buf = s.buffer_mut();
        let next = buf.state()?.consumed;
        buffers.push(Buffer {
            cpu,
            buf,
            next,
            reported: None,
        });
    }

    while !done() {
        {
            let mut fds: Vec<PollFd<'_>> = buffers
                .iter()
                .map(|b| PollFd::new(b.buf.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, 100u16) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => other.context("poll")?,
            };
        }
        let (mut printed, mut waiting) = (0, false);
        for b in &mut buffers {
            let (n, w) = drain(b, &mut out)?;
            printed += n;
            waiting |= w;
        }
        // poll keeps reporting a ready but incomplete sub-buffer.
        if waiting && printed == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // The partly filled sub-buffers too, once their writers are done.
    let deadline = Instant::now() + Duration::from_secs(10);
    for b in &mut buffers {
        b.buf.flush()?;
        while drain(b, &mut out)?.1 {
            if Instant::now() > deadline {
                bail!("cpu{}: sub-buffer {} never completed", b.cpu, b.next);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}
