//! Guest-side helpers: the relay_readtest channel's control files, module
//! loading, and the kernel log watched for splats.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The readtest module's debugfs directory.
pub const DIR: &str = "/sys/kernel/debug/relay_readtest";

/// The channel base path (`cpu0`, `cpu1`, ...).
pub fn channel() -> PathBuf {
    Path::new(DIR).join("cpu")
}

/// A control file of the readtest directory.
pub fn ctl(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

/// Writes `value` to the control file `name`.
pub fn set(name: &str, value: impl ToString) -> Result<()> {
    let path = ctl(name);
    let value = value.to_string();
    std::fs::write(&path, &value).with_context(|| format!("writing {value} to {}", path.display()))
}

/// Reads a number from the control file `name`.
pub fn get(name: &str) -> Result<u64> {
    let path = ctl(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text:?} is not a number", path.display()))
}

/// Channel settings of one test.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Overwrite mode.
    pub overwrite: bool,
    /// Sub-buffer size in bytes.
    pub subbuf_size: u64,
    /// Sub-buffers per CPU.
    pub n_subbufs: u64,
    /// Events per CPU.
    pub event_n: u64,
    /// Bytes per event.
    pub event_size: u64,
}

impl Setup {
    /// (Re)creates the channel with these settings: counters start at zero.
    pub fn apply(&self) -> Result<()> {
        wait_done(Duration::from_secs(600))?;
        set("subbuf_size", self.subbuf_size)?;
        set("n_subbufs", self.n_subbufs)?;
        set("overwrite", u8::from(self.overwrite))?;
        set("create", 1)?;
        set("enabled", 1)?;
        set("event_n", self.event_n)?;
        set("event_size", self.event_size)?;
        Ok(())
    }

    /// Events that fit in one sub-buffer (after the 4-byte padding word).
    pub fn events_per_subbuf(&self) -> u64 {
        (self.subbuf_size - 4) / self.event_size
    }
}

/// True when no readtest test is running.
pub fn done() -> Result<bool> {
    Ok(get("test_done")? == 1)
}

/// Waits until the running test (if any) is done.
pub fn wait_done(limit: Duration) -> Result<()> {
    let started = Instant::now();
    while !done()? {
        if started.elapsed() > limit {
            bail!("the readtest test did not finish in {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts a test: every online CPU writes `event_n` events.
pub fn start_test() -> Result<()> {
    set("start_test", 1)
}

/// `insmod DIR/NAME.ko`.
pub fn insmod(modules: &Path, name: &str) -> Result<()> {
    let ko = modules.join(format!("{name}.ko"));
    let out = Command::new("insmod")
        .arg(&ko)
        .output()
        .context("running insmod")?;
    if !out.status.success() {
        bail!(
            "insmod {} failed: {}",
            ko.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `rmmod NAME`; the error text if it fails.
pub fn rmmod(name: &str) -> Result<()> {
    let out = Command::new("rmmod")
        .arg(name)
        .output()
        .context("running rmmod")?;
    if !out.status.success() {
        bail!(
            "rmmod {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Loads relay_app and relay_readtest unless the channel is there already.
pub fn ensure_loaded(modules: &Path) -> Result<()> {
    if !Path::new("/sys/module/relay_app").exists() {
        insmod(modules, "relay_app")?;
    }
    if !Path::new(DIR).exists() {
        insmod(modules, "relay_readtest")?;
    }
    Ok(())
}

/// Markers of a kernel splat in the log.
const SPLATS: [&str; 11] = [
    "BUG:",
    "WARNING:",
    "Oops",
    "general protection",
    "KASAN",
    "UBSAN",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "refcount_t:",
    "Call Trace:",
];

/// The kernel log from a point on: `since()` marks it, `splats()` returns
/// the lines after the mark that show a kernel splat.
pub struct Kmsg {
    lines: usize,
}

fn dmesg_lines() -> Vec<String> {
    let out = Command::new("dmesg")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect()
}

impl Kmsg {
    /// Marks the end of the log now.
    pub fn since() -> Kmsg {
        Kmsg {
            lines: dmesg_lines().len(),
        }
    }

    /// Splat lines logged since the mark (empty: the kernel stayed clean).
    pub fn splats(&self) -> Vec<String> {
        dmesg_lines()
            .into_iter()
            .skip(self.lines)
            .filter(|l| SPLATS.iter().any(|s| l.contains(s)))
            .collect()
    }
}

/// The running kernel's release.
pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether the running kernel has KASAN and lockdep: from its config in
/// /boot or /proc/config.gz, else from what the running kernel shows (the
/// slim series kernels have neither config file): KASAN's report function
/// in /proc/kallsyms, lockdep's /proc/lockdep_chains (CONFIG_PROVE_LOCKING).
pub fn debug_options() -> (Option<bool>, Option<bool>) {
    match debug_options_from_config() {
        (None, None) => {
            let kasan = std::fs::read_to_string("/proc/kallsyms").ok().map(|syms| {
                syms.lines()
                    .any(|l| l.split_whitespace().nth(2) == Some("kasan_report"))
            });
            (
                kasan,
                Some(std::path::Path::new("/proc/lockdep_chains").exists()),
            )
        }
        known => known,
    }
}

fn debug_options_from_config() -> (Option<bool>, Option<bool>) {
    let release = release();
    let text = std::fs::read_to_string(format!("/boot/config-{release}")).ok();
    let text = text.or_else(|| {
        Command::new("zcat")
            .arg("/proc/config.gz")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    match text {
        Some(t) => (
            Some(t.lines().any(|l| l == "CONFIG_KASAN=y")),
            Some(t.lines().any(|l| l == "CONFIG_PROVE_LOCKING=y")),
        ),
        None => (None, None),
    }
}
