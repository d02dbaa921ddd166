//! One block device's trace set up through the ioctls, torn down when
//! dropped, whatever happened: tracing must never be left set up.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;

use crate::ioctl::{self, blk_user_trace_setup};

/// Where the trace is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SetUp,
    Running,
    Stopped,
    TornDown,
}

/// Geometry and filter of a trace.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Bytes per relay sub-buffer.
    pub buf_size: u32,
    /// Sub-buffers per CPU.
    pub buf_nr: u32,
    /// `BLK_TC_*` categories; 0 for all.
    pub act_mask: u16,
}

/// A trace set up on one block device.
#[derive(Debug)]
pub struct Tracer {
    dev_path: PathBuf,
    dev: File,
    name: String,
    state: State,
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
    pub fn setup(dev_path: &Path, params: Params) -> Result<Tracer> {
        let dev = open_device(dev_path)?;
        let mut buts = blk_user_trace_setup {
            act_mask: params.act_mask,
            buf_size: params.buf_size,
            buf_nr: params.buf_nr,
            ..blk_user_trace_setup::default()
        };
        ioctl::setup(&dev, &mut buts).map_err(|e| explain("BLKTRACESETUP", dev_path, e))?;
        let tracer = Tracer {
            dev_path: dev_path.into(),
            dev,
            name: ioctl::name(&buts),
            state: State::SetUp,
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
