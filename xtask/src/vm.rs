//! Booting a kernel under virtme-ng (TCG, no KVM) and running a command in it.
//!
//! The guest sees the host filesystem read-only, with the repository as its
//! working directory, and runs the command as root with debugfs mounted.
//! Directories passed as `rwdirs` are writable from the guest, so results can
//! be read back on the host. Output is streamed as it comes; a hard timeout
//! kills the whole process group (vng, qemu and helpers) of a hung guest.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::setup::Tools;
use crate::util;

/// Default hard timeout of `cargo xtask vm`, in seconds.
const DEFAULT_TIMEOUT: u64 = 600;

/// Options shared by every subcommand that boots a VM.
#[derive(Args, Clone)]
pub struct VmArgs {
    /// Kernel to boot: a bzImage/vmlinuz or a kernel build directory
    /// (default: the stock /boot/vmlinuz-6.12*-amd64).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Hard limit for the whole VM run, in seconds; the guest is killed after
    /// it (default: 600, or 1800 for `test`).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Guest memory (qemu syntax).
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Show kernel console messages (vng --verbose).
    #[arg(long)]
    pub verbose: bool,
    /// Also write the whole guest output, the kernel console included (as
    /// with --verbose), to FILE.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// A host directory the guest may write (same path in the guest; created
    /// if missing). Repeatable. The rest of the host is read-only in the guest.
    #[arg(long, value_name = "DIR")]
    pub rwdir: Vec<PathBuf>,
}

/// What `cargo xtask vm` takes.
#[derive(Args)]
pub struct VmCommandArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// The command to run in the guest: one argument is taken as a shell
    /// snippet, several are quoted and joined.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `cargo xtask vm`: boots the VM and runs the command in it; exits with
/// the guest command's status.
pub fn command(tools: &Tools, root: &Path, args: &VmCommandArgs) -> Result<ExitCode> {
    let opts = VmOptions::from_args(&args.vm, DEFAULT_TIMEOUT)?;
    let command = shell_command(&args.command);
    let outcome = run(tools, root, &opts, &command)?;
    if let Err(err) = outcome.check(&command) {
        eprintln!("error: {err:#}");
        // The guest's own status when it has one (a signal has none).
        let code = outcome.status.code().and_then(|c| u8::try_from(c).ok());
        return Ok(ExitCode::from(code.filter(|c| *c != 0).unwrap_or(1)));
    }
    Ok(ExitCode::SUCCESS)
}

/// How many lines of guest output to keep for error messages.
const TAIL_LINES: usize = 60;

/// Which VM test binaries a run of the VM tests takes, and what it adds to
/// their environment (the kernel matrix's long exerciser run).
#[derive(Debug, Default, Clone)]
pub struct TestSelection {
    /// Only the binary of this test target (its file name without cargo's
    /// hash suffix); every binary if `None`.
    pub only: Option<&'static str>,
    /// Variables set for the test binaries in the guest.
    pub env: Vec<(&'static str, String)>,
}

/// Everything needed to boot a VM.
pub struct VmOptions {
    /// Kernel image or kernel build directory, absolute (vng -r takes either).
    pub kernel: PathBuf,
    /// Hard limit for the whole run.
    pub timeout: Duration,
    /// Guest memory, qemu syntax.
    pub memory: String,
    /// Guest vCPUs.
    pub cpus: u32,
    /// Pass `--verbose` to vng (kernel console messages).
    pub verbose: bool,
    /// Host directories the guest may write (same path in the guest).
    pub rwdirs: Vec<PathBuf>,
    /// A file that gets the whole output, the kernel console included
    /// (the run is then verbose).
    pub console_log: Option<PathBuf>,
}

impl VmOptions {
    /// Options from the command line, with `default_timeout` seconds unless
    /// `--timeout` was given and the stock kernel unless `--kernel` was.
    pub fn from_args(args: &VmArgs, default_timeout: u64) -> Result<Self> {
        let kernel = match &args.kernel {
            Some(kernel) => std::fs::canonicalize(kernel).with_context(|| {
                format!(
                    "--kernel {}: no such file or directory (give a bzImage/vmlinuz or a \
                     kernel build directory)",
                    kernel.display()
                )
            })?,
            None => stock_kernel()?,
        };
        let rwdirs = args
            .rwdir
            .iter()
            .map(|dir| {
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::canonicalize(dir))
                    .with_context(|| format!("--rwdir {}: cannot create it", dir.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kernel,
            timeout: Duration::from_secs(args.timeout.unwrap_or(default_timeout)),
            memory: args.memory.clone(),
            cpus: args.cpus,
            verbose: args.verbose || args.console_log.is_some(),
            rwdirs,
            console_log: args.console_log.clone(),
        })
    }
}

/// The newest stock Debian 6.12 kernel, `/boot/vmlinuz-6.12*-amd64`.
pub fn stock_kernel() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .context("reading /boot")?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("vmlinuz-6.12") && name.ends_with("-amd64"))
        })
        .collect();
    found.sort_by_key(|path| version_key(&path.to_string_lossy()));
    found.pop().context(
        "no /boot/vmlinuz-6.12*-amd64: install the stock kernel with `cargo xtask setup` \
         (as root), or pass --kernel",
    )
}

/// The release of a stock kernel image (`/boot/vmlinuz-<release>`).
pub fn stock_release(kernel: &Path) -> Result<String> {
    kernel
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_prefix("vmlinuz-"))
        .map(str::to_string)
        .with_context(|| format!("{} is not named vmlinuz-<release>", kernel.display()))
}

/// The numbers in `s`, in order: sorts `6.12.9` before `6.12.117`.
fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The guest command line for `vm -- <args>`: a single argument is used as a
/// shell snippet as is, several are quoted and joined.
fn shell_command(args: &[String]) -> String {
    match args {
        [single] => single.clone(),
        _ => args
            .iter()
            .map(|arg| util::shell_quote(arg))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// How a VM run ended.
pub struct VmOutcome {
    /// vng's exit status, which is the guest command's.
    pub status: ExitStatus,
    /// The last lines of output (stdout and stderr, interleaved).
    pub tail: Vec<String>,
}

impl VmOutcome {
    /// Fails unless the guest command exited 0.
    pub fn check(&self, command: &str) -> Result<()> {
        if self.status.success() {
            return Ok(());
        }
        bail!(
            "the guest command `{command}` failed ({}); see its output above (if nothing ran, \
             vng could not boot the kernel: rerun with --verbose for the console)",
            self.status
        )
    }
}

/// Set by SIGINT/SIGTERM so that a hung guest is killed rather than orphaned.
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn interrupted_flag() -> Result<Arc<AtomicBool>> {
    if let Some(flag) = INTERRUPTED.get() {
        return Ok(flag.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())
            .context("installing the SIGINT/SIGTERM handler")?;
    }
    Ok(INTERRUPTED.get_or_init(|| flag).clone())
}

/// Longer guest commands run from a script file (see [`run`]).
const LONG_COMMAND: usize = 512;

/// Boots the VM, runs `command` in the guest (as root, cwd = `root`), streams
/// its output and returns how it ended. Fails on timeout or interruption.
pub fn run(tools: &Tools, root: &Path, opts: &VmOptions, command: &str) -> Result<VmOutcome> {
    let interrupted = interrupted_flag()?;
    let mut cmd = Command::new(&tools.vng);
    cmd.current_dir(root)
        .env("PATH", path_with(&tools.venv_bin)?)
        .arg("--disable-kvm")
        .arg("-r")
        .arg(&opts.kernel)
        .args(["--cpus", &opts.cpus.to_string()])
        .args(["--memory", &opts.memory]);
    if opts.verbose {
        cmd.arg("--verbose");
    }
    for dir in &opts.rwdirs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        cmd.arg(format!("--rwdir={}", dir.display()));
    }
    // virtme-ng passes the command on the kernel command line, which the
    // kernel truncates at 2 KiB (with the module and mount parameters of a
    // built tree, a long command no longer fits): run long ones from a file.
    if command.len() > LONG_COMMAND {
        let script = root
            .join("target/vm")
            .join(format!("command-{}.sh", std::process::id()));
        std::fs::create_dir_all(script.parent().unwrap_or(root))
            .and_then(|()| std::fs::write(&script, format!("{command}\n")))
            .with_context(|| format!("writing {}", script.display()))?;
        cmd.arg("--exec")
            .arg(format!("bash {}", util::shell_quote_path(&script)));
    } else {
        cmd.arg("--exec").arg(command);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so that a timeout can kill qemu and every helper.
        .process_group(0);

    println!(
        "vm: booting {} ({} vCPUs, {}, timeout {} s): {command}",
        opts.kernel.display(),
        opts.cpus,
        opts.memory,
        opts.timeout.as_secs()
    );
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "could not start {}: run `cargo xtask setup`",
            util::display(&cmd)
        )
    })?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let console_log = match &opts.console_log {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating the console log {}", path.display()))?;
            println!("vm: console log {}", path.display());
            Some(Arc::new(Mutex::new(file)))
        }
        None => None,
    };
    let readers = [
        stream(
            child.stdout.take(),
            std::io::stdout,
            tail.clone(),
            console_log.clone(),
        ),
        stream(
            child.stderr.take(),
            std::io::stderr,
            tail.clone(),
            console_log,
        ),
    ];

    loop {
        if let Some(status) = child.try_wait().context("waiting for vng")? {
            finish_readers(readers);
            println!(
                "vm: finished in {} s ({status})",
                started.elapsed().as_secs()
            );
            return Ok(VmOutcome {
                status,
                tail: snapshot(&tail),
            });
        }
        if interrupted.load(Ordering::Relaxed) {
            kill_group(&mut child);
            bail!("interrupted: killed the VM");
        }
        if started.elapsed() >= opts.timeout {
            kill_group(&mut child);
            // Let the readers pick up what was still in the pipes.
            std::thread::sleep(Duration::from_millis(300));
            let lines = snapshot(&tail);
            bail!(
                "VM timed out after {} s and was killed (command: `{command}`).\n\
                 --- last {} lines of guest output ---\n{}\n--- end of guest output ---\n\
                 If the guest hung, rerun with --verbose to see kernel messages; if the work \
                 needs more time, raise --timeout.",
                opts.timeout.as_secs(),
                lines.len(),
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `PATH` with `dir` first (vng runs `virtme-run` by name).
fn path_with(dir: &Path) -> Result<std::ffi::OsString> {
    let old = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&old)))
        .context("building PATH for vng")
}

/// Copies `pipe` to `sink` (and `log`) line by line, keeping the last lines
/// in `tail`.
fn stream<R, W>(
    pipe: Option<R>,
    sink: fn() -> W,
    tail: Arc<Mutex<VecDeque<String>>>,
    log: Option<Arc<Mutex<std::fs::File>>>,
) -> Option<JoinHandle<()>>
where
    R: Read + Send + 'static,
    W: Write + 'static,
{
    let pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut out = sink();
            // Output errors (e.g. a closed terminal) must not stop the capture.
            let _ = out.write_all(&line);
            let _ = out.flush();
            if let Some(log) = &log {
                let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let _ = log.write_all(&line);
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
    }))
}

/// Waits (a bounded time: a stray helper may keep a pipe open) for the
/// readers to copy the rest of the output.
fn finish_readers(readers: [Option<JoinHandle<()>>; 2]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for reader in readers.into_iter().flatten() {
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if reader.is_finished() {
            // A reader only fails to join if it panicked; its output is lost then.
            let _ = reader.join();
        }
    }
}

fn snapshot(tail: &Mutex<VecDeque<String>>) -> Vec<String> {
    let tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tail.iter().cloned().collect()
}

/// SIGKILLs the child's whole process group and reaps the child.
fn kill_group(child: &mut Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours;
        // the group id is the child's pid (it was started with process_group(0)).
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
