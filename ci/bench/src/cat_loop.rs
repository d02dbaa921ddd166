//! `relay-bench cat-loop`: the baseline reader of `relay-bench run`, a
//! cat-style loop per CPU file: 4 KiB read(2)s, poll with a 10 ms timeout
//! when empty (as relay-apps' read example).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// What `relay-bench cat-loop` takes.
#[derive(clap::Args)]
pub struct CatLoopArgs {
    /// Channel base path.
    channel: PathBuf,
}

/// Reads every CPU file of the channel until SIGINT or SIGTERM, then
/// prints the bytes read as `{"bytes": N}` on stderr.
pub fn run(args: &CatLoopArgs) -> Result<()> {
    let channel = &args.channel;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mut files = Vec::new();
    for cpu in 0.. {
        let path = PathBuf::from(format!("{}{cpu}", channel.display()));
        match File::open(&path) {
            Ok(f) => files.push(f),
            Err(_) if cpu > 0 => break,
            Err(e) => bail!("{}: {e}", path.display()),
        }
    }
    eprintln!("cat loop: reading {} files", files.len());
    let threads: Vec<_> = files
        .into_iter()
        .map(|mut file| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || -> std::io::Result<u64> {
                let mut out = File::create("/dev/null")?;
                let mut buf = vec![0u8; 4096];
                let mut total = 0u64;
                loop {
                    let n = file.read(&mut buf)?;
                    if n > 0 {
                        out.write_all(&buf[..n])?;
                        total += n as u64;
                        continue;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return Ok(total);
                    }
                    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(10u8));
                }
            })
        })
        .collect();
    let mut bytes = 0;
    for t in threads {
        bytes += t.join().expect("reader thread panicked")?;
    }
    eprintln!("{{\"bytes\": {bytes}}}");
    Ok(())
}
