//! One block device's trace set up through the ioctls, torn down when
//! dropped, whatever happened: tracing must never be left set up.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;

use crate::ioctl::{self, blk_user_trace_setup};
use crate::record::{Abi, V1_CATEGORIES};

/// Where the trace is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SetUp,
    Running,
    Stopped,
    TornDown,
}

/// Which trace ABI to set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiChoice {
    /// v2 where the kernel has `BLKTRACESETUP2`, v1 where it has not.
    Auto,
    /// v1 (`BLKTRACESETUP`), on every kernel.
    V1,
    /// v2 (`BLKTRACESETUP2`), Linux 6.19 and later only.
    V2,
}

/// Geometry, filter and format of a trace.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Bytes per relay sub-buffer.
    pub buf_size: u32,
    /// Sub-buffers per CPU.
    pub buf_nr: u32,
    /// `BLK_TC_*` categories; 0 for the kernel's default (bits 0-15).
    pub act_mask: u64,
    /// The ABI to ask for.
    pub abi: AbiChoice,
}

/// How the trace's ABI was chosen, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// As the user asked (`--abi v1` or `--abi v2`).
    Asked,
    /// `--abi auto` on a kernel with `BLKTRACESETUP2`.
    Newest,
    /// `--abi auto` on a kernel that refused `BLKTRACESETUP2` with this
    /// errno (ENOTTY or EINVAL: it does not know the request).
    Fallback(Errno),
}

/// A trace set up on one block device.
#[derive(Debug)]
pub struct Tracer {
    dev_path: PathBuf,
    dev: File,
    name: String,
    state: State,
    abi: Abi,
    chosen: Chosen,
}

/// Opens the block device `path` as blktrace does (read-only, non-blocking).
fn open_device(path: &Path) -> Result<File> {
    let dev = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening the block device {}", path.display()))?;
    let meta = dev.metadata()?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_block_device() {
        bail!("{} is not a block device", path.display());
    }
    Ok(dev)
}

/// Says what an errno from a trace ioctl means for the user.
fn explain(op: &str, dev: &Path, e: Errno) -> anyhow::Error {
    let d = dev.display();
    let hint = match e {
        Errno::EBUSY => format!(
            "a trace is already set up on {d} (another blktrace, or one that was killed); \
             remove it with `relay-blktrace -k -d {d}`"
        ),
        Errno::ENOTTY | Errno::EINVAL if op == "BLKTRACESETUP2" => {
            "this kernel has no BLKTRACESETUP2, which came with Linux 6.19: record v1 with \
             --abi v1 (or --abi auto, which falls back to it)"
                .into()
        }
        Errno::ENOTTY => format!(
            "{d} does not support block tracing (kernel built without CONFIG_BLK_DEV_IO_TRACE?)"
        ),
        Errno::EPERM | Errno::EACCES => "block tracing needs root (CAP_SYS_ADMIN)".into(),
        Errno::ENOENT => "the block layer's debugfs directory is missing: mount debugfs with \
                          `mount -t debugfs none /sys/kernel/debug`"
            .into(),
        Errno::ENOMEM => "the kernel could not allocate the buffers: try a smaller -b or -n".into(),
        Errno::EINVAL if op == "BLKTRACESETUP" => {
            "invalid buffer geometry (-b and -n must be positive)".into()
        }
        Errno::EINVAL => format!("no trace is set up on {d}"),
        _ => String::new(),
    };
    if hint.is_empty() {
        anyhow::anyhow!("{op} on {d}: {e}")
    } else {
        anyhow::anyhow!("{op} on {d}: {e}: {hint}")
    }
}

impl Tracer {
    /// BLKTRACESETUP on `dev_path`: the relay channel
    /// `<debugfs>/block/<name>/trace<cpu>` exists when this returns.
    ///
    /// With [`AbiChoice::Auto`] it asks for v2 first, as blktrace(8) does
    /// since 6.19, and falls back to v1 only where the kernel does not know
    /// `BLKTRACESETUP2` (ENOTTY from the block layer, EINVAL from a
    /// driver's own ioctl handler that sees an unknown request): any other
    /// error (a trace already set up, no memory) is the answer.
    pub fn setup(dev_path: &Path, params: Params) -> Result<Tracer> {
        let dev = open_device(dev_path)?;
        let v2_only = params.act_mask & !V1_CATEGORIES;
        if params.abi == AbiChoice::V1 && v2_only != 0 {
            bail!(
                "categories {v2_only:#x} (zone management, write-zeroes) exist in blktrace v2 \
                 only: leave out --abi v1"
            );
        }
        let (name, abi, chosen) = match params.abi {
            AbiChoice::V1 => (setup_v1(&dev, dev_path, params)?, Abi::V1, Chosen::Asked),
            AbiChoice::V2 => (
                setup_v2(&dev, params).map_err(|e| explain("BLKTRACESETUP2", dev_path, e))?,
                Abi::V2,
                Chosen::Asked,
            ),
            AbiChoice::Auto => match setup_v2(&dev, params) {
                Ok(name) => (name, Abi::V2, Chosen::Newest),
                Err(e @ (Errno::ENOTTY | Errno::EINVAL)) => {
                    if v2_only != 0 {
                        return Err(explain("BLKTRACESETUP2", dev_path, e).context(format!(
                            "categories {v2_only:#x} (zone management, write-zeroes) need \
                             blktrace v2"
                        )));
                    }
                    (
                        setup_v1(&dev, dev_path, params)?,
                        Abi::V1,
                        Chosen::Fallback(e),
                    )
                }
                Err(e) => return Err(explain("BLKTRACESETUP2", dev_path, e)),
            },
        };
        let tracer = Tracer {
            dev_path: dev_path.into(),
            dev,
            name,
            state: State::SetUp,
            abi,
            chosen,
        };
        if tracer.name.is_empty() {
            // Dropping tears it down again.
            bail!(
                "BLKTRACESETUP on {} returned no device name",
                dev_path.display()
            );
        }
        Ok(tracer)
    }

    /// The device's name under `<debugfs>/block/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The format of the trace's records.
    pub fn abi(&self) -> Abi {
        self.abi
    }

    /// How [`Tracer::abi`] was chosen.
    pub fn chosen(&self) -> Chosen {
        self.chosen
    }

    /// The device path given by the user.
    pub fn dev_path(&self) -> &Path {
        &self.dev_path
    }

    /// BLKTRACESTART.
    pub fn start(&mut self) -> Result<()> {
        ioctl::start(&self.dev).map_err(|e| explain("BLKTRACESTART", &self.dev_path, e))?;
        self.state = State::Running;
        Ok(())
    }

    /// BLKTRACESTOP: no new events, and the kernel flushes the channel.
    pub fn stop(&mut self) -> Result<()> {
        if self.state != State::Running {
            return Ok(());
        }
        ioctl::stop(&self.dev).map_err(|e| explain("BLKTRACESTOP", &self.dev_path, e))?;
        self.state = State::Stopped;
        Ok(())
    }

    /// BLKTRACETEARDOWN: the channel and its files go away.
    pub fn teardown(&mut self) -> Result<()> {
        if self.state == State::TornDown {
            return Ok(());
        }
        // Marked first: a failed teardown is not retried by Drop.
        self.state = State::TornDown;
        ioctl::teardown(&self.dev).map_err(|e| explain("BLKTRACETEARDOWN", &self.dev_path, e))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if self.state == State::TornDown {
            return;
        }
        let stopped = self.stop();
        if let Err(e) = stopped.and_then(|()| self.teardown()) {
            eprintln!("relay-blktrace: warning: {e:#}");
        }
    }
}

/// BLKTRACESETUP (v1); returns the device name.
fn setup_v1(dev: &File, dev_path: &Path, params: Params) -> Result<String> {
    let mut buts = blk_user_trace_setup {
        // Checked by the caller: v1 categories only.
        act_mask: (params.act_mask & V1_CATEGORIES) as u16,
        buf_size: params.buf_size,
        buf_nr: params.buf_nr,
        ..blk_user_trace_setup::default()
    };
    ioctl::setup(dev, &mut buts).map_err(|e| explain("BLKTRACESETUP", dev_path, e))?;
    Ok(ioctl::name(&buts.name))
}

/// BLKTRACESETUP2 (v2); returns the device name, or the errno.
fn setup_v2(dev: &File, params: Params) -> nix::Result<String> {
    let mut buts = ioctl::setup2_args(params.act_mask, params.buf_size, params.buf_nr);
    ioctl::setup2(dev, &mut buts)?;
    Ok(ioctl::name(&buts.name))
}

/// `-k`: stops and removes a trace left set up on `dev_path` (by a killed
/// blktrace, say). Returns false when there was none.
pub fn kill(dev_path: &Path) -> Result<bool> {
    let dev = open_device(dev_path)?;
    // STOP fails with EINVAL when the trace is not running: not an error here.
    let _ = ioctl::stop(&dev);
    match ioctl::teardown(&dev) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL) => Ok(false),
        Err(e) => Err(explain("BLKTRACETEARDOWN", dev_path, e)),
    }
}
