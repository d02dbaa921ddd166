//! Support for the tests that run as root inside a virtme-ng guest, against
//! the real kernel, the real modules and the real reader.
//!
//! `cargo xtask test` builds these test binaries on the host and runs them in
//! the guest with `RELAY_IN_VM=1`, `RELAY_MODULES_DIR` (the out-of-tree module
//! build) and `RELAY_BIN_DIR` (the workspace binaries, examples in its
//! `examples/`). Outside a guest every
//! test returns at once, saying so: they load modules into the running kernel.
//! Failures panic with a message that says what broke.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

/// True inside the test guest. Tests start with `if !in_vm() { return; }`.
pub fn in_vm() -> bool {
    if std::env::var_os("RELAY_IN_VM").is_some() {
        return true;
    }
    eprintln!("not in the test VM (RELAY_IN_VM unset): skipped; run `cargo xtask test`");
    false
}

fn env_dir(name: &str) -> PathBuf {
    let dir =
        std::env::var_os(name).unwrap_or_else(|| panic!("{name} is not set by the VM test runner"));
    PathBuf::from(dir)
}

/// The directory of the modules (and, for a series build, the selftest's
/// programs) the VM test runner was given.
pub fn modules_dir() -> PathBuf {
    env_dir("RELAY_MODULES_DIR")
}

/// A workspace binary built for the guest, e.g. `bin("relay-reader")`.
pub fn bin(name: &str) -> PathBuf {
    let path = env_dir("RELAY_BIN_DIR").join(name);
    assert!(path.exists(), "binary {} was not built", path.display());
    path
}

/// A workspace example built for the guest (`cargo build --examples`), e.g.
/// `example("tokio_asyncfd")`.
pub fn example(name: &str) -> PathBuf {
    bin(&format!("examples/{name}"))
}

/// Modules loaded for one test, unloaded in reverse order on drop.
#[derive(Debug)]
pub struct Modules {
    names: Vec<String>,
}

impl Modules {
    /// `insmod`s each module (`name.ko` from `RELAY_MODULES_DIR`) with its
    /// parameters, e.g. `&[("klog", ""), ("relay_klog", "n_subbufs=4")]`.
    pub fn load(modules: &[(&str, &str)]) -> Modules {
        let dir = env_dir("RELAY_MODULES_DIR");
        let mut loaded = Modules { names: Vec::new() };
        for (name, params) in modules {
            let ko = dir.join(format!("{name}.ko"));
            let mut cmd = Command::new("insmod");
            cmd.arg(&ko);
            cmd.args(params.split_whitespace());
            let out = cmd.output().expect("running insmod");
            assert!(
                out.status.success(),
                "insmod {} {params} failed: {}\n{}",
                ko.display(),
                String::from_utf8_lossy(&out.stderr),
                dmesg_tail(20)
            );
            loaded.names.push(name.to_string());
        }
        loaded
    }

    /// The klog example: klog core, helper, handler and load generator.
    pub fn klog(handler_params: &str) -> Modules {
        Modules::load(&[
            ("klog", ""),
            ("relay_app", ""),
            ("relay_klog", handler_params),
            ("klog_gen", ""),
        ])
    }
}

impl Modules {
    /// Unloads one module now (a test of what readers see when it goes).
    pub fn unload(&mut self, name: &str) {
        let out = Command::new("rmmod")
            .arg(name)
            .output()
            .expect("running rmmod");
        assert!(
            out.status.success(),
            "rmmod {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.names.retain(|n| n != name);
    }
}

impl Drop for Modules {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let out = Command::new("rmmod")
                .arg(name)
                .output()
                .expect("running rmmod");
            if !out.status.success() && !std::thread::panicking() {
                panic!(
                    "rmmod {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if !std::thread::panicking() {
            let log = dmesg_tail(200);
            let reports = kernel_reports(&log);
            assert!(reports.is_empty(), "kernel log shows {reports:?}:\n{log}");
        }
    }
}

/// The last `n` lines of the kernel log, for failure messages.
pub fn dmesg_tail(n: usize) -> String {
    let out = Command::new("dmesg")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes `value` to a control file, panicking with the path on failure.
pub fn write_control(path: impl AsRef<Path>, value: &str) {
    let path = path.as_ref();
    std::fs::write(path, value)
        .unwrap_or_else(|e| panic!("writing {value:?} to {}: {e}", path.display()));
}

/// Makes every online CPU log `n` records `klog_gen cpu=C seq=S` through klog.
pub fn generate_klog(n: u64) {
    write_control("/sys/kernel/debug/klog_gen/run", &n.to_string());
}

/// Online CPUs of the guest.
pub fn online_cpus() -> Vec<u32> {
    let cpus = relay_reader::channel::online_cpus();
    assert!(
        !cpus.is_empty(),
        "no online CPUs read from /sys/devices/system/cpu/online"
    );
    cpus
}

/// Parses klog_gen records and checks them: per CPU, the sequence numbers
/// received, in order. Panics on a malformed or misplaced record.
pub fn klog_gen_records(per_cpu: &BTreeMap<u32, Vec<u8>>) -> BTreeMap<u32, Vec<u64>> {
    let mut out = BTreeMap::new();
    for (&cpu, data) in per_cpu {
        let text = std::str::from_utf8(data).unwrap_or_else(|e| {
            panic!("cpu{cpu}: recording is not text (padding or stale bytes leaked?): {e}")
        });
        let seqs: Vec<u64> = text
            .lines()
            .map(|line| {
                let rest = line
                    .strip_prefix("klog_gen cpu=")
                    .unwrap_or_else(|| panic!("cpu{cpu}: unexpected record {line:?}"));
                let (c, s) = rest
                    .split_once(" seq=")
                    .unwrap_or_else(|| panic!("cpu{cpu}: malformed record {line:?}"));
                assert_eq!(
                    c,
                    cpu.to_string(),
                    "record of cpu {c} in the buffer of cpu {cpu}"
                );
                s.parse()
                    .unwrap_or_else(|_| panic!("cpu{cpu}: bad seq in {line:?}"))
            })
            .collect();
        out.insert(cpu, seqs);
    }
    out
}

/// Checks that every CPU of `cpus` delivered exactly klog_gen's records
/// `0..n`, in order; `what` names the reader in a failure.
pub fn assert_klog_gen_complete(
    per_cpu: &BTreeMap<u32, Vec<u8>>,
    cpus: &[u32],
    n: u64,
    what: &str,
) {
    let records = klog_gen_records(per_cpu);
    for cpu in cpus {
        let seqs = records
            .get(cpu)
            .unwrap_or_else(|| panic!("{what}: no records from cpu {cpu}"));
        assert!(
            seqs.iter().copied().eq(0..n),
            "{what}: cpu {cpu}: {} records, not 0..{n} in order",
            seqs.len()
        );
    }
}

/// The kernel stack of every thread of this process, for the failure
/// message of a test that found the kernel stuck.
pub fn task_stacks() -> String {
    let mut out = String::new();
    let me = std::process::id();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let stack = std::fs::read_to_string(task.path().join("stack")).unwrap_or_default();
        out.push_str(&format!(
            "task {}:\n{stack}\n",
            task.file_name().to_string_lossy()
        ));
    }
    out
}

/// Spawns a recorder (`relay-reader record ...` and the like) with its
/// standard error piped, and waits until its first line says it records:
/// its buffer files are open. Under TCG start-up alone can take a while.
/// Returns the child, the rest of its standard error and that first line.
pub fn start_recording(cmd: &mut Command) -> (Child, BufReader<ChildStderr>, String) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut first = String::new();
    stderr
        .read_line(&mut first)
        .expect("reading the recorder's stderr");
    assert!(
        first.contains("recording"),
        "the recorder did not start recording: {first}"
    );
    (child, stderr, first)
}

/// Whether the guest's relay core implements the relay ioctls (a kernel
/// built from kernel-patches/series/): it has `relay_flush_buf()`.
pub fn patched_kernel() -> bool {
    let syms = std::fs::read_to_string("/proc/kallsyms").expect("reading /proc/kallsyms");
    syms.lines()
        .any(|line| line.split_whitespace().nth(2) == Some("relay_flush_buf"))
}

/// The lines of a kernel log that report a kernel bug: BUGs, warnings,
/// oopses, KASAN and lockdep reports, hung tasks. KCSAN data-race reports
/// are left out: the kernel matrix's KCSAN stage reads them from the
/// console and fails on those in relay code, while KCSAN also reports
/// races elsewhere in the kernel (the VFS, pipes, debugfs) that a test of
/// relay cannot be failed for.
pub fn kernel_reports(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| !l.contains("BUG: KCSAN:"))
        .filter(|l| {
            [
                "BUG:",
                "WARNING:",
                "Oops",
                "KASAN",
                "possible circular locking",
                "possible recursive locking",
                "INFO: task",
                "general protection",
            ]
            .iter()
            .any(|p| l.contains(p))
        })
        .collect()
}

/// The kernel bug reports ([`kernel_reports`]) logged after `marker`, a
/// line the test wrote to `/dev/kmsg` before it started (none if the
/// marker is not in the log).
pub fn kernel_reports_since(marker: &str) -> Vec<String> {
    let out = Command::new("dmesg").output().expect("running dmesg");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let after = text.rsplit_once(marker).map_or("", |(_, rest)| rest);
    kernel_reports(after)
        .into_iter()
        .map(str::to_string)
        .collect()
}
