//! Running the programs a benchmark measures: commands that must succeed,
//! the CPU time they used, and copies of them on the guest's tmpfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};

/// User + system CPU seconds of `who` so far.
pub fn cpu_seconds(who: UsageWho) -> Result<f64> {
    let usage = getrusage(who).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// CPU seconds of `clock` (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID):
/// exact to the nanosecond, where getrusage's figures for a running thread
/// lag by up to a scheduler tick.
pub fn cpu_clock(clock: nix::time::ClockId) -> Result<f64> {
    let t = nix::time::clock_gettime(clock).context("clock_gettime")?;
    Ok(t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// CPU seconds of the children waited for so far.
pub fn cpu_seconds_of_children() -> Result<f64> {
    cpu_seconds(UsageWho::RUSAGE_CHILDREN)
}

/// Runs `cmd`; fails unless it exits 0.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// A copy of `program` on the guest's tmpfs, to run contenders from: started
/// from the host's 9p share, every page of a binary is fetched over virtio
/// at each start, which costs a larger binary more and is no part of what
/// is measured.
pub fn local_copy(program: &Path) -> Result<PathBuf> {
    let dir = Path::new("/tmp/relay-bench-bin");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let to = dir.join(program.file_name().context("a program file name")?);
    std::fs::copy(program, &to)
        .with_context(|| format!("copying {} to {}", program.display(), to.display()))?;
    Ok(to)
}
