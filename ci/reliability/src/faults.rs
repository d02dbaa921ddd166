//! Faults during a recording with the `relay-reader` binary: the module
//! unloaded, the reader SIGKILLed and restarted, the output disk full, a
//! CPU taken offline and back.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::events::Checker;
use crate::guest::{self, Kmsg, Setup};

/// The outcome of one fault.
#[derive(Debug, Serialize, Deserialize)]
pub struct FaultRow {
    /// The fault.
    pub name: String,
    /// What happened, measured.
    pub what: String,
    /// Kernel splat lines logged meanwhile.
    pub splats: Vec<String>,
    /// The row's checks held.
    pub pass: bool,
}

/// A `relay-reader record` running in the background.
struct Recording {
    child: Child,
    stderr: BufReader<std::process::ChildStderr>,
    out: PathBuf,
}

impl Recording {
    /// Starts `reader record --mode mmap -q -o out <channel>` and waits
    /// until it says it is recording.
    fn start(reader: &Path, out: &Path, extra: &[&str]) -> Result<Recording> {
        let _ = std::fs::remove_dir_all(out);
        let mut child = Command::new(reader)
            .args(["record", "--mode", "mmap", "-q", "-o"])
            .arg(out)
            .args(extra)
            .arg(guest::channel())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", reader.display()))?;
        let mut stderr = BufReader::new(child.stderr.take().context("no stderr")?);
        let mut first = String::new();
        stderr.read_line(&mut first)?;
        if !first.contains("recording") {
            let _ = child.kill();
            bail!("relay-reader did not start recording: {first}");
        }
        Ok(Recording {
            child,
            stderr,
            out: out.into(),
        })
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).context("signalling relay-reader")
    }

    /// Waits (at most `limit`) for the reader to exit; its status and the
    /// rest of its stderr.
    fn wait(mut self, limit: Duration) -> Result<(ExitStatus, String)> {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("relay-reader did not exit within {} s", limit.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest)?;
        Ok((status, rest))
    }
}

/// Events found in the per-CPU files of `dir`, and the sizes of the files.
fn check_files(dir: &Path, setup: &Setup) -> Result<(Checker, Vec<(String, u64)>)> {
    let mut checker = Checker::new(setup.event_size, setup.event_n);
    let mut sizes = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(cpu) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let data = std::fs::read(entry.path())?;
        sizes.push((name, data.len() as u64));
        checker.feed(cpu, &data, true);
    }
    checker.finish();
    Ok((checker, sizes))
}

fn first_line(text: &str, needle: &str) -> String {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Runs every fault; `scratch` is a writable directory in the guest.
pub fn run(modules: &Path, reader: &Path, scratch: &Path, base: Setup) -> Result<Vec<FaultRow>> {
    let mut rows = Vec::new();
    let faults: [(&str, FaultFn); 4] = [
        ("module unloaded while recording", unload),
        ("reader SIGKILLed and restarted", sigkill),
        ("output disk full", disk_full),
        ("CPU offline and back while recording", hotplug),
    ];
    for (name, fault) in faults {
        guest::ensure_loaded(modules)?;
        let kmsg = Kmsg::since();
        let (what, ok) = match fault(modules, reader, scratch, base) {
            Ok(outcome) => outcome,
            Err(e) => (format!("the test itself failed: {e:#}"), false),
        };
        let splats = kmsg.splats();
        let pass = ok && splats.is_empty();
        println!(
            "fault: {name}: {what}: {}",
            if pass { "pass" } else { "FAIL" }
        );
        rows.push(FaultRow {
            name: name.into(),
            what,
            splats,
            pass,
        });
    }
    guest::ensure_loaded(modules)?;
    Ok(rows)
}

/// Waits until the running test has offered `n` events.
fn wait_written(n: u64) -> Result<()> {
    let started = Instant::now();
    while guest::get("write_count")? < n && !guest::done()? {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the test did not get to {n} events in 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

type FaultFn = fn(&Path, &Path, &Path, Setup) -> Result<(String, bool)>;

/// The module goes while the reader records: the reader must save every
/// event the kernel accepted and exit 0 on its own.
fn unload(_modules: &Path, reader: &Path, scratch: &Path, base: Setup) -> Result<(String, bool)> {
    let setup = Setup {
        event_n: 100_000,
        ..base
    };
    setup.apply()?;
    let rec = Recording::start(reader, &scratch.join("unload"), &[])?;
    guest::start_test()?;
    guest::wait_done(Duration::from_secs(300))?;
    let produced = guest::get("write_count")?;
    let dropped = guest::get("dropped")?;
    // The partly filled sub-buffers are still in the kernel: relay_app
    // flushes them when the channel is destroyed.
    let started = Instant::now();
    guest::rmmod("relay_readtest")?;
    let out = rec.out.clone();
    let (status, stderr) = rec.wait(Duration::from_secs(60))?;
    let exit_secs = started.elapsed().as_secs_f64();
    let (checker, _) = check_files(&out, &setup)?;
    let c = checker.counts;
    let ok = status.success()
        && c.received + dropped == produced
        && c.corrupt == 0
        && c.duplicated == 0
        && c.out_of_order == 0;
    Ok((
        format!(
            "rmmod relay_readtest under the reader: it exited on its own {exit_secs:.1} s later \
             ({status}); saved {} events + {dropped} dropped by the full buffer == produced \
             {produced}: {}; corrupt {}, duplicated {}{}",
            c.received,
            c.received + dropped == produced,
            c.corrupt,
            c.duplicated,
            if status.success() {
                String::new()
            } else {
                format!("; stderr: {}", stderr.trim())
            }
        ),
        ok,
    ))
}

/// The reader is SIGKILLed mid-recording (what it consumed but had not
/// written out is lost with it); the kernel side must be unharmed and a new
/// reader must pick up: the rest of the first test, then a whole second one.
fn sigkill(_modules: &Path, reader: &Path, scratch: &Path, base: Setup) -> Result<(String, bool)> {
    let first = Setup {
        event_n: 5_000_000,
        ..base
    };
    first.apply()?;
    let rec = Recording::start(reader, &scratch.join("killed"), &[])?;
    guest::start_test()?;
    wait_written(200_000)?;
    let running = !guest::done()?;
    rec.signal(nix::sys::signal::Signal::SIGKILL)?;
    let (status, _) = rec.wait(Duration::from_secs(10))?;
    guest::wait_done(Duration::from_secs(600))?;
    let dropped_first = guest::get("dropped")?;
    // The kernel still answers for the channel.
    let info = Command::new(reader)
        .args(["info"])
        .arg(guest::channel())
        .output()?;
    let info_ok = info.status.success();

    // The second reader: the same channel, not recreated; the second
    // test's events are larger, so that the two tests' events tell apart.
    let second_n = 100_000;
    let second_size = first.event_size + 8;
    guest::set("event_n", second_n)?;
    guest::set("event_size", second_size)?;
    let rec = Recording::start(reader, &scratch.join("restarted"), &[])?;
    guest::start_test()?;
    guest::wait_done(Duration::from_secs(600))?;
    let produced = guest::get("write_count")?;
    let dropped = guest::get("dropped")? - dropped_first;
    std::thread::sleep(Duration::from_millis(300));
    rec.signal(nix::sys::signal::Signal::SIGINT)?;
    let out = rec.out.clone();
    let (status2, stderr2) = rec.wait(Duration::from_secs(60))?;

    // Per CPU file: what was left of the first test, then the second test.
    let mut old = Checker::new(first.event_size, first.event_n);
    let mut second = Checker::new(second_size, second_n);
    let mut bad = 0u64;
    for entry in std::fs::read_dir(&out)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(cpu) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let data = std::fs::read(entry.path())?;
        let mut at = 0;
        while at < data.len() {
            let len = data
                .get(at + 4..at + 8)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")) as u64);
            let checker = match len {
                Some(len) if len == first.event_size => &mut old,
                Some(len) if len == second_size => &mut second,
                _ => {
                    bad += 1;
                    break;
                }
            };
            let end = (at + len.unwrap_or(0) as usize).min(data.len());
            checker.feed(cpu, &data[at..end], false);
            at = end;
        }
    }
    old.finish();
    second.finish();
    let tail = old.counts.received;
    let c = second.counts;
    let ok = running
        && info_ok
        && status2.success()
        && c.received + dropped == produced
        && c.corrupt + old.counts.corrupt + bad == 0
        && c.duplicated + old.counts.duplicated == 0
        && c.out_of_order + old.counts.out_of_order == 0;
    Ok((
        format!(
            "killed mid-test ({status}, test still running: {running}); `relay-reader info` \
             afterwards: {}; the restarted reader saved {tail} events left from the first test, \
             then of the second test {} + {dropped} dropped == produced {produced}: {}; corrupt \
             {}, duplicated {}, unparsable {bad}; exit {status2}{}",
            if info_ok { "ok" } else { "failed" },
            c.received,
            c.received + dropped == produced,
            c.corrupt + old.counts.corrupt,
            c.duplicated + old.counts.duplicated,
            if status2.success() {
                String::new()
            } else {
                format!(": {}", stderr2.trim())
            }
        ),
        ok,
    ))
}

/// Recording into a 256 KiB tmpfs: a clear error, a non-zero exit, and files
/// that end at an event boundary.
fn disk_full(
    _modules: &Path,
    reader: &Path,
    scratch: &Path,
    base: Setup,
) -> Result<(String, bool)> {
    let mnt = scratch.join("full");
    std::fs::create_dir_all(&mnt)?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "reliability-full"])
        .arg(&mnt)
        .status()?;
    if !status.success() {
        bail!("mounting a 1 MiB tmpfs on {} failed", mnt.display());
    }
    let result = (|| -> Result<(String, bool)> {
        // 48-byte events: sub-buffers and pages do not end on an event
        // boundary, so a write cut at the page the disk filled up in tears one.
        let setup = Setup {
            event_n: 50_000,
            event_size: 48,
            ..base
        };
        setup.apply()?;
        // -w: a reader that never notices the full disk stops anyway.
        let mut rec = Recording::start(reader, &mnt.join("rec"), &["-w", "120"])?;
        // Tests until the disk is full and the reader gives up.
        let mut tests = 0;
        while rec.child.try_wait()?.is_none() && tests < 50 {
            guest::wait_done(Duration::from_secs(300))?;
            guest::start_test()?;
            tests += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = rec.out.clone();
        let (status, stderr) = rec.wait(Duration::from_secs(150))?;
        guest::wait_done(Duration::from_secs(300))?;
        let error = first_line(&stderr, "error");
        let (checker, sizes) = check_files(&out, &setup)?;
        let c = checker.counts;
        let torn: Vec<String> = sizes
            .iter()
            .filter(|(_, len)| len % setup.event_size != 0)
            .map(|(name, len)| format!("{name} {len} bytes"))
            .collect();
        let clear = error.contains("No space left on device") && error.contains("rec/cpu");
        let ok = !status.success() && clear && torn.is_empty() && c.corrupt == 0;
        let files = sizes
            .iter()
            .map(|(n, l)| format!("{n} {l} B"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok((
            format!(
                "after {tests} test(s): exit {status}; error `{error}`; files {files}; {} events intact, {} torn \
                 record(s){}",
                c.received,
                c.corrupt,
                if torn.is_empty() {
                    String::new()
                } else {
                    format!(" (not a multiple of {} bytes: {})", setup.event_size, torn.join(", "))
                }
            ),
            ok,
        ))
    })();
    let _ = Command::new("umount").arg(&mnt).status();
    result
}

/// The last CPU goes offline and comes back while a test runs and the
/// reader records; its work item moves to another CPU meanwhile.
fn hotplug(_modules: &Path, reader: &Path, scratch: &Path, base: Setup) -> Result<(String, bool)> {
    let cpus = relay_reader::channel::online_cpus();
    let Some(&last) = cpus.last().filter(|&&c| c > 0) else {
        bail!("needs at least 2 CPUs");
    };
    let online = PathBuf::from(format!("/sys/devices/system/cpu/cpu{last}/online"));
    let setup = Setup {
        event_n: 5_000_000,
        ..base
    };
    setup.apply()?;
    let rec = Recording::start(reader, &scratch.join("hotplug"), &[])?;
    guest::start_test()?;
    wait_written(200_000)?;
    let off = std::fs::write(&online, "0");
    let was_running = !guest::done()?;
    std::thread::sleep(Duration::from_millis(300));
    let on = std::fs::write(&online, "1");
    // Whatever happened, the CPU must be back for what follows.
    if on.is_err() {
        let _ = std::fs::write(&online, "1");
    }
    guest::wait_done(Duration::from_secs(600))?;
    let produced = guest::get("write_count")?;
    let dropped = guest::get("dropped")?;
    std::thread::sleep(Duration::from_millis(300));
    rec.signal(nix::sys::signal::Signal::SIGINT)?;
    let out = rec.out.clone();
    let (status, stderr) = rec.wait(Duration::from_secs(60))?;
    let (checker, _) = check_files(&out, &setup)?;
    let c = checker.counts;
    let per_cpu: Vec<String> = cpus
        .iter()
        .map(|&cpu| format!("cpu{cpu} {}", checker.received_of(cpu)))
        .collect();
    let ok = off.is_ok()
        && on.is_ok()
        && status.success()
        && c.received + dropped == produced
        && c.corrupt == 0
        && c.duplicated == 0;
    Ok((
        format!(
            "cpu{last} offline {} (test still running after it: {was_running}) and online {}; reader exit \
             {status}; received {} ({}) + {dropped} dropped == produced {produced}: {}; \
             corrupt {}, duplicated {}{}",
            if off.is_ok() { "ok" } else { "FAILED" },
            if on.is_ok() { "ok" } else { "FAILED" },
            c.received,
            per_cpu.join(", "),
            c.received + dropped == produced,
            c.corrupt,
            c.duplicated,
            if status.success() {
                String::new()
            } else {
                format!(": {}", stderr.trim())
            }
        ),
        ok,
    ))
}
