//! The ways to get sub-buffers out of a relay file. Only this module knows
//! which one is running; everything above sees [`SubBuf`]s and [`BufStats`].

mod mapped;
mod read;
mod relay_app;

pub use mapped::MappedSource;
pub use read::{ReadSource, READ_CHUNK};
pub use relay_app::SharedPadding;
pub use relay_app::{
    has_control_files, locate as relay_app_locate, relay_app_state, Misfit, PaddingEvidence,
    PaddingWord, RelayAppBuffer,
};

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::kernel::{query_info, KernelBuffer};
use crate::mapped::{BufInfo, BufState, MappedBuffer};
use crate::subbuf::{BufStats, Lender, SubBuf, Taken};
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

/// How to open a channel: the mode and, for a relay-apps channel, the size
/// of its padding words.
///
/// ```
/// use relay_reader::{Mode, OpenOptions, PaddingWord};
///
/// let options = OpenOptions::new(Mode::RelayApp).padding_word(PaddingWord::Eight);
/// assert_eq!(OpenOptions::from(Mode::Auto).padding_word, PaddingWord::Auto);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// How to read.
    pub mode: Mode,
    /// The padding word of relay-app mode (when chosen, or when
    /// [`Mode::Auto`] comes to it); ignored in the other modes.
    pub padding_word: PaddingWord,
}

impl OpenOptions {
    /// Options for `mode`, with the padding-word size detected.
    pub fn new(mode: Mode) -> Self {
        OpenOptions {
            mode,
            padding_word: PaddingWord::Auto,
        }
    }

    /// The padding-word size of relay-app mode.
    pub fn padding_word(mut self, word: PaddingWord) -> Self {
        self.padding_word = word;
        self
    }
}

impl From<Mode> for OpenOptions {
    fn from(mode: Mode) -> Self {
        OpenOptions::new(mode)
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
        Source::open_with(path, cpu, OpenOptions::new(mode))
    }

    /// Opens the relay file `path` (the buffer of `cpu`) as `options` say.
    pub fn open_with(path: &Path, cpu: u32, options: OpenOptions) -> Result<Source> {
        Source::open_in(path, cpu, options, &SharedPadding::default())
    }

    /// [`Source::open_with`] for a buffer of a channel whose readers
    /// share the padding-word size in `padding`.
    pub(crate) fn open_in(
        path: &Path,
        cpu: u32,
        options: OpenOptions,
        padding: &SharedPadding,
    ) -> Result<Source> {
        let mode = options.mode;
        let relay_app =
            |file| RelayAppBuffer::open_in(path, file, cpu, options.padding_word, padding);
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
                return Ok(Source::RelayApp(MappedSource::new(relay_app(file)?)?));
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
                Ok(Source::RelayApp(MappedSource::new(relay_app(file)?)?))
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

    /// In relay-app mode, the channel's padding-word size: chosen, or
    /// detected ([`PaddingWord::Auto`] until the sub-buffers tell); `None`
    /// in the other modes.
    pub fn padding_word(&self) -> Option<PaddingWord> {
        match self {
            Source::RelayApp(s) => Some(s.buffer().padding_word()),
            Source::Mmap(_) | Source::Read(_) => None,
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

    /// Makes the partly filled sub-buffer ready for the next drain or pulls
    /// (see [`MappedSource::flush`], [`ReadSource::flush`]).
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Source::Mmap(s) => s.flush(),
            Source::RelayApp(s) => s.flush(),
            Source::Read(s) => s.flush(),
        }
    }

    /// The pull API's next sub-buffer (see [`MappedSource::next`]); read
    /// mode reads a chunk only when asked to `look`.
    pub(crate) fn take(&mut self, look: bool) -> Result<Option<Taken>> {
        match self {
            Source::Mmap(s) => s.take(look),
            Source::RelayApp(s) => s.take(look),
            Source::Read(s) if look => s.take(),
            Source::Read(_) => Ok(None),
        }
    }

    /// Releases to the kernel what the pull API was given back and has not
    /// released yet (nothing to do in read mode).
    pub fn release_pending(&mut self) -> Result<()> {
        match self {
            Source::Mmap(s) => s.release_pending(),
            Source::RelayApp(s) => s.release_pending(),
            Source::Read(_) => Ok(()),
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

impl Lender for Source {
    fn lent(&self, taken: &Taken) -> &[u8] {
        match self {
            Source::Mmap(s) => s.lent(taken),
            Source::RelayApp(s) => s.lent(taken),
            Source::Read(s) => s.lent(taken),
        }
    }

    fn give_back(&mut self, taken: &Taken) {
        match self {
            Source::Mmap(s) => s.give_back(taken),
            Source::RelayApp(s) => s.give_back(taken),
            Source::Read(s) => s.give_back(taken),
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
