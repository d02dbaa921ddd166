//! The ways to get sub-buffers out of a relay file. Only this module knows
//! which one is running; everything above sees [`SubBuf`]s and [`BufStats`].

mod mapped;
mod read;
mod relay_app;

pub use mapped::MappedSource;
pub use read::{ReadSource, READ_CHUNK};
pub use relay_app::{
    has_control_files, locate as relay_app_locate, relay_app_state, RelayAppBuffer,
};

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::kernel::{query_info, KernelBuffer};
use crate::mapped::{BufInfo, BufState, MappedBuffer};
use crate::subbuf::{BufStats, SubBuf};
use crate::{Error, Result};

/// `DEBUGFS_MAGIC` and `TRACEFS_MAGIC` of `include/uapi/linux/magic.h`: the
/// file systems relay buffer files are created in.
const RELAY_FILESYSTEMS: [(i64, &str); 2] = [(0x6462_6720, "debugfs"), (0x7472_6163, "tracefs")];

/// Refuses files on other file systems: a regular file given by mistake
/// would otherwise be "recorded" with read(2) as if it were a channel.
fn check_filesystem(file: &File, path: &Path) -> Result<()> {
    let fs = nix::sys::statfs::fstatfs(file).map_err(|e| Error::io(path, "statfs", e.into()))?;
    let magic = fs.filesystem_type().0 as i64;
    if RELAY_FILESYSTEMS.iter().any(|&(m, _)| m == magic) {
        return Ok(());
    }
    Err(Error::NotRelayFile {
        path: path.into(),
        why: format!(
            "it is on a file system with magic {magic:#x}; relay buffer files live in debugfs"
        ),
    })
}

/// How to read a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Mode {
    /// mmap with the meta area when the file offers it, read(2) otherwise.
    #[default]
    Auto,
    /// mmap with the meta area; an error if the file lacks it.
    Mmap,
    /// mmap with the relay-apps 0.9x control files and padding words.
    RelayApp,
    /// read(2).
    Read,
}

impl Mode {
    /// The mode's name as the tools print and accept it: `auto`, `mmap`,
    /// `relay-app`, `read`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Mmap => "mmap",
            Mode::RelayApp => "relay-app",
            Mode::Read => "read",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One buffer of a channel, read one way or another.
#[derive(Debug)]
pub enum Source {
    /// mmap + ioctl ABI.
    Mmap(MappedSource<KernelBuffer>),
    /// mmap + relay-apps control files.
    RelayApp(MappedSource<RelayAppBuffer>),
    /// read(2).
    Read(ReadSource),
}

impl Source {
    /// Opens the relay file `path` (the buffer of `cpu`) in `mode`.
    pub fn open(path: &Path, cpu: u32, mode: Mode) -> Result<Source> {
        let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
        if !meta.is_file() {
            return Err(Error::NotRelayFile {
                path: path.into(),
                why: "not a regular file".into(),
            });
        }
        check_filesystem(&file, path)?;
        match mode {
            Mode::Read => return Ok(Source::Read(ReadSource::new(path.into(), file, cpu))),
            Mode::RelayApp => {
                let buffer = RelayAppBuffer::open(path, file, cpu)?;
                return Ok(Source::RelayApp(MappedSource::new(buffer)?));
            }
            Mode::Auto | Mode::Mmap => {}
        }
        // A file without a meta area (a kernel from before it) is read like
        // one without the ABI.
        match query_info(&file, path)?.filter(|info| info.meta_len > 0) {
            Some(info) => match KernelBuffer::new(path.into(), file, info) {
                Ok(buffer) => Ok(Source::Mmap(MappedSource::new(buffer)?)),
                // The file answers the ABI but cannot be mapped (created
                // with debugfs_create_file(), whose proxy does not forward
                // mmap): in Auto mode, read(2) still works.
                Err(Error::Map { .. }) if mode == Mode::Auto => {
                    let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
                    Ok(Source::Read(ReadSource::new(path.into(), file, cpu)))
                }
                Err(e) => Err(e),
            },
            None if mode == Mode::Mmap => Err(Error::NoAbi { path: path.into() }),
            None if has_control_files(path) => {
                let buffer = RelayAppBuffer::open(path, file, cpu)?;
                Ok(Source::RelayApp(MappedSource::new(buffer)?))
            }
            None => Ok(Source::Read(ReadSource::new(path.into(), file, cpu))),
        }
    }

    /// The mode this buffer is read in (never [`Mode::Auto`]).
    pub fn mode(&self) -> Mode {
        match self {
            Source::Mmap(_) => Mode::Mmap,
            Source::RelayApp(_) => Mode::RelayApp,
            Source::Read(_) => Mode::Read,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            Source::Mmap(s) => s.buffer().path(),
            Source::RelayApp(s) => s.buffer().path(),
            Source::Read(s) => s.path(),
        }
    }

    /// Delivers what is ready.
    pub fn drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        match self {
            Source::Mmap(s) => s.drain(f),
            Source::RelayApp(s) => s.drain(f),
            Source::Read(s) => s.drain(f),
        }
    }

    /// Takes the partly filled sub-buffer too, then delivers everything.
    /// In read mode the flush is asked for where the channel supports it
    /// (see [`ReadSource::flush_and_drain`]).
    pub fn flush_and_drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        match self {
            Source::Mmap(s) => s.flush_and_drain(f),
            Source::RelayApp(s) => s.flush_and_drain(f),
            Source::Read(s) => s.flush_and_drain(f),
        }
    }

    /// For a live reader while the writer goes on: the records waiting in
    /// the partly filled sub-buffer, through `RELAY_IOC_FLUSH` where the
    /// channel has it, else in read mode by reading that sub-buffer when
    /// `on_writer_cpu` says it is safe (see [`ReadSource::take_partial`]).
    /// `None` (nothing read) when this buffer cannot hand them over now:
    /// they come with the next full sub-buffer, or at the end.
    pub fn take_partial(
        &mut self,
        on_writer_cpu: bool,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<Option<u64>> {
        match self {
            Source::Mmap(s) => s.take_partial(f),
            Source::RelayApp(s) => s.take_partial(f),
            Source::Read(s) => s.take_partial(on_writer_cpu, f),
        }
    }

    /// Read mode: see [`ReadSource::set_finished_only`]; the mmap modes
    /// deliver finished sub-buffers only anyway.
    pub fn set_read_finished_only(&mut self, on: bool) {
        if let Source::Read(s) = self {
            s.set_finished_only(on);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &BufStats {
        match self {
            Source::Mmap(s) => s.stats(),
            Source::RelayApp(s) => s.stats(),
            Source::Read(s) => s.stats(),
        }
    }

    /// Geometry and counters from the meta area; `None` in the other
    /// modes, where the kernel offers neither.
    pub fn kernel_state(&mut self) -> Result<Option<(BufInfo, BufState)>> {
        match self {
            Source::Mmap(s) => {
                let info = *s.buffer().info();
                Ok(Some((info, s.buffer_mut().state()?)))
            }
            Source::RelayApp(_) | Source::Read(_) => Ok(None),
        }
    }

    /// The channel was closed and everything was read.
    pub fn finished(&self) -> bool {
        match self {
            Source::Mmap(s) => s.finished(),
            Source::RelayApp(s) => s.finished(),
            Source::Read(s) => s.finished(),
        }
    }

    /// Poll reported the buffer closed (POLLERR after relay_close) and it was
    /// drained: the kernel finalized it, nothing more will come.
    pub fn mark_finalized(&mut self) {
        match self {
            Source::Mmap(s) => s.mark_finalized(),
            Source::RelayApp(s) => s.mark_finalized(),
            Source::Read(s) => s.mark_finalized(),
        }
    }
}

impl AsFd for Source {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Source::Mmap(s) => s.buffer().as_fd(),
            Source::RelayApp(s) => s.buffer().as_fd(),
            Source::Read(s) => s.file().as_fd(),
        }
    }
}
