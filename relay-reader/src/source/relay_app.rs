//! The relay-apps 0.9x protocol, for channels without the ioctl ABI: mmap,
//! `cpuN.produced` (binary `size_t`, read), `cpuN.consumed` (binary `size_t`,
//! written as a delta), and the padding word at the head of each
//! sub-buffer. Only the geometry comes from the `subbuf_size` and
//! `n_subbufs` files; flushing writes `0` to `enabled`, which stops the
//! writers: it is for the end of a recording.
//!
//! # The padding word
//!
//! relay.rst's example writes it as an `unsigned int` (4 bytes); some copies
//! of relay-apps' klog module and program, and drivers derived from them,
//! write a `size_t` (8 bytes on 64-bit kernels). The protocol does not say
//! which, so [`PaddingWord`] chooses, or detects the size from the
//! sub-buffers ([`PaddingEvidence`]) before any data is delivered, once per
//! channel. A size is ruled out by a word that does not fit the sub-buffer
//! when read at that size. Only the 8-byte reading can fail for a channel
//! that writes 4-byte words: its second half holds the first data bytes,
//! which as the high half of a native 8-byte value exceed any sub-buffer
//! unless they are zero. The 4-byte reading of an 8-byte word is always a
//! fitting padding (its low half on little-endian machines, 0 on big-endian
//! ones), and a channel of 8-byte words looks byte for byte like a channel
//! of 4-byte words whose data starts with 4 zero bytes in every sub-buffer.
//! So detection finds 4-byte words where some sub-buffer's data starts with
//! a nonzero byte among its first four, and reports the size unknown
//! (an error naming the choice to make) where every sub-buffer seen so far
//! fits both: it never guesses.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use relay_sys::relay_app as conv;

use crate::kernel::Mapping;
use crate::mapped::{BufInfo, BufState, MappedBuffer, Released, SubbufLoc, SubbufLookup};
use crate::{Error, Result};

/// The control files' `size_t` words.
const WORD: usize = std::mem::size_of::<usize>();

/// The size of the padding word at the head of every sub-buffer of a
/// relay-apps channel (see [`RelayAppBuffer`](crate::source::RelayAppBuffer)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PaddingWord {
    /// Detected from the channel's sub-buffers before any data is
    /// delivered; an error where they fit both sizes.
    #[default]
    Auto,
    /// 4 bytes: the `unsigned int` of relay.rst's example and relay-apps.
    Four,
    /// 8 bytes: the `size_t` of some copies of relay-apps' klog module, on
    /// a 64-bit kernel.
    Eight,
}

impl PaddingWord {
    /// The word's size in bytes; `None` for [`PaddingWord::Auto`].
    pub fn bytes(self) -> Option<u64> {
        match self {
            PaddingWord::Auto => None,
            PaddingWord::Four => Some(4),
            PaddingWord::Eight => Some(8),
        }
    }

    /// The name the tools print and accept: `auto`, `4`, `8`.
    pub fn name(self) -> &'static str {
        match self {
            PaddingWord::Auto => "auto",
            PaddingWord::Four => "4",
            PaddingWord::Eight => "8",
        }
    }
}

impl std::fmt::Display for PaddingWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A padding word that does not fit its sub-buffer when read at one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Misfit {
    /// The buffer's CPU (its file's number).
    pub cpu: u32,
    /// The sub-buffer's index in the ring.
    pub subbuf: u64,
    /// The padding the word gives at that size.
    pub padding: u64,
}

/// What the padding words of the sub-buffers looked at say about their
/// size: each size is ruled out by the first word that does not fit at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PaddingEvidence {
    /// Sub-buffers looked at.
    pub subbufs: u64,
    /// The first word that does not fit as 4 bytes.
    pub four: Option<Misfit>,
    /// The first word that does not fit as 8 bytes.
    pub eight: Option<Misfit>,
}

impl PaddingEvidence {
    /// Looks at every sub-buffer of the ring of the buffer of `cpu`, mapped
    /// as `map`: finished ones, the one being filled and those not reached
    /// yet alike. relay zeroes a buffer's pages when it allocates them, and
    /// a writer of `n`-byte words stores nothing but fitting paddings into
    /// the first `n` bytes of a sub-buffer (its data starts after them), so
    /// a word that does not fit at `n` bytes, anywhere in the ring, rules
    /// `n` out. A word read as `n` bytes does not fit when it exceeds
    /// `subbuf_size - n` (or the sub-buffer has no room after it).
    /// Untrusted input: a mapping shorter than the geometry ends the look.
    pub fn scan(map: &[u8], subbuf_size: u64, n_subbufs: u64, cpu: u32) -> Self {
        let mut evidence = PaddingEvidence::default();
        for subbuf in 0..n_subbufs {
            let Some(sb) = subbuf
                .checked_mul(subbuf_size)
                .and_then(|start| map.get(usize::try_from(start).ok()?..))
                .and_then(|rest| rest.get(..usize::try_from(subbuf_size).ok()?))
            else {
                break;
            };
            evidence.subbufs += 1;
            for (bytes, misfit) in [(4, &mut evidence.four), (8, &mut evidence.eight)] {
                let padding = padding_at(sb, bytes).unwrap_or(u64::MAX);
                let fits = subbuf_size > bytes && padding <= subbuf_size - bytes;
                if misfit.is_none() && !fits {
                    *misfit = Some(Misfit {
                        cpu,
                        subbuf,
                        padding,
                    });
                }
            }
        }
        evidence
    }

    /// Adds what another buffer of the channel says.
    pub fn add(&mut self, other: &PaddingEvidence) {
        self.subbufs += other.subbufs;
        self.four = self.four.or(other.four);
        self.eight = self.eight.or(other.eight);
    }

    /// The size the evidence leaves: `Ok(Some(_))` when it rules one out,
    /// `Ok(None)` when every word fits both, an error naming the words
    /// when none fits either (the buffer is corrupt).
    pub fn verdict(&self, subbuf_size: u64) -> std::result::Result<Option<PaddingWord>, String> {
        match (self.four, self.eight) {
            (None, None) => Ok(None),
            (Some(_), None) => Ok(Some(PaddingWord::Eight)),
            (None, Some(_)) => Ok(Some(PaddingWord::Four)),
            (Some(four), Some(eight)) => Err(format!(
                "padding word {} of sub-buffer {} exceeds the sub-buffer size {subbuf_size} \
                 read as 4 bytes (cpu{}), and {} of sub-buffer {} read as 8 bytes (cpu{}): \
                 neither padding-word size fits",
                four.padding, four.subbuf, four.cpu, eight.padding, eight.subbuf, eight.cpu
            )),
        }
    }
}

/// The padding in the native `bytes`-byte word (4 or 8) at the start of
/// the sub-buffer `sb`.
fn padding_at(sb: &[u8], bytes: u64) -> Option<u64> {
    match bytes {
        4 => Some(u32::from_ne_bytes(sb.get(..4)?.try_into().ok()?).into()),
        8 => Some(u64::from_ne_bytes(sb.get(..8)?.try_into().ok()?)),
        _ => None,
    }
}

/// The padding-word size of one channel, decided once and shared by the
/// readers of its buffers (clones share it); `Auto` until decided. A
/// reader per buffer ([`crate::Reader::open_buffer_with`]) needs it so that
/// what one buffer shows decides for all: a buffer whose data starts with
/// zeros cannot tell 4-byte words from 8-byte ones by itself.
#[derive(Debug, Clone, Default)]
pub struct SharedPadding(Arc<Mutex<PaddingWord>>);

impl SharedPadding {
    /// The size decided so far.
    pub fn get(&self) -> PaddingWord {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A relay-apps channel buffer: mapped, with its control files open.
#[derive(Debug)]
pub struct RelayAppBuffer {
    path: PathBuf,
    file: File,
    produced: File,
    consumed: File,
    enabled: PathBuf,
    map: Mapping,
    info: BufInfo,
    /// The channel's padding-word size, shared with its other buffers.
    padding: SharedPadding,
    /// Its bytes once known here.
    word: Option<u64>,
}

fn sibling(path: &Path, name: &str) -> PathBuf {
    path.with_file_name(name)
}

fn read_number(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    text.trim().parse().map_err(|_| Error::NotRelayFile {
        path: path.into(),
        why: format!("{text:?} is not a number"),
    })
}

/// True when `path` (a buffer file `<dir>/cpuN`) has relay-apps control files.
pub fn has_control_files(path: &Path) -> bool {
    let produced = format!("{}{}", path.display(), conv::PRODUCED_SUFFIX);
    Path::new(&produced).exists()
}

/// The geometry and counters of the relay-apps buffer `path` (`<dir>/cpuN`,
/// the buffer of `cpu`) from its control files alone: the buffer file is
/// neither opened nor mapped and nothing is consumed. For tools that only
/// look, such as `relay-stat`.
pub fn relay_app_state(path: &Path, cpu: u32) -> Result<(BufInfo, BufState)> {
    let control = |suffix: &str| PathBuf::from(format!("{}{suffix}", path.display()));
    let info = geometry(path, cpu, conv::PADDING_HEADER_SIZE as u64)?;
    let word = |path: PathBuf| -> Result<u64> {
        let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        RelayAppBuffer::read_word(&file, &path)
    };
    let produced = word(control(conv::PRODUCED_SUFFIX))?;
    let consumed = word(control(conv::CONSUMED_SUFFIX))?;
    let state = BufState {
        produced,
        consumed,
        ..BufState::default()
    };
    Ok((info, state))
}

/// The geometry of the relay-apps buffer `path` (the buffer of `cpu`) from
/// its `subbuf_size` and `n_subbufs` files, checked: sub-buffers larger
/// than `least` bytes (the padding word), at least two of them, and a
/// mapping length that fits in 64 bits.
fn geometry(path: &Path, cpu: u32, least: u64) -> Result<BufInfo> {
    let subbuf_size = read_number(&sibling(path, conv::SUBBUF_SIZE_FILE))?;
    let n_subbufs = read_number(&sibling(path, conv::N_SUBBUFS_FILE))?;
    let corrupt = || Error::Corrupt {
        path: path.into(),
        what: format!("geometry {n_subbufs} x {subbuf_size} bytes"),
    };
    if subbuf_size <= least || n_subbufs < 2 {
        return Err(corrupt());
    }
    let mmap_len = subbuf_size
        .checked_mul(n_subbufs)
        .and_then(|len| len.checked_next_multiple_of(page_size()))
        .ok_or_else(corrupt)?;
    Ok(BufInfo {
        subbuf_size,
        n_subbufs,
        mmap_len,
        cpu,
        global: false,
        overwrite: false,
        meta_len: 0,
    })
}

/// Where the data of sub-buffer `seq` lies in a relay-apps buffer `map`,
/// from the `header`-byte padding word (4 or 8) at its head. Untrusted input:
/// a padding word that does not fit the sub-buffer is an error, never a
/// panic or an out-of-bounds slice.
pub fn locate(
    map: &[u8],
    seq: u64,
    subbuf_size: u64,
    n_subbufs: u64,
    header: u64,
) -> std::result::Result<SubbufLoc, String> {
    if header != 4 && header != 8 {
        return Err(format!("a padding word of {header} bytes"));
    }
    if n_subbufs == 0 || subbuf_size <= header {
        return Err(format!("geometry {n_subbufs} x {subbuf_size} bytes"));
    }
    let start = (seq % n_subbufs)
        .checked_mul(subbuf_size)
        .filter(|start| start.saturating_add(subbuf_size) <= map.len() as u64)
        .ok_or_else(|| format!("sub-buffer {seq} outside the mapping"))?;
    let padding = padding_at(&map[start as usize..], header).expect("a word inside the sub-buffer");
    if padding > subbuf_size - header {
        return Err(format!(
            "padding word {padding} of sub-buffer {seq} exceeds the sub-buffer size {subbuf_size}"
        ));
    }
    Ok(SubbufLoc {
        seq,
        data_offset: start + header,
        data_len: subbuf_size - header - padding,
        padding,
        lost_before: 0,
    })
}

impl RelayAppBuffer {
    /// Opens the relay-apps buffer `path` (`<dir>/cpuN`), already open as
    /// `file`, whose sub-buffers start with a `padding` word.
    pub fn open(path: &Path, file: File, cpu: u32, padding: PaddingWord) -> Result<Self> {
        Self::open_in(path, file, cpu, padding, &SharedPadding::default())
    }

    /// [`RelayAppBuffer::open`] for a buffer of a channel whose other
    /// buffers share `shared`, the size decided for all of them.
    pub(crate) fn open_in(
        path: &Path,
        file: File,
        cpu: u32,
        padding: PaddingWord,
        shared: &SharedPadding,
    ) -> Result<Self> {
        let control = |suffix: &str| PathBuf::from(format!("{}{suffix}", path.display()));
        let produced_path = control(conv::PRODUCED_SUFFIX);
        let consumed_path = control(conv::CONSUMED_SUFFIX);
        let produced =
            File::open(&produced_path).map_err(|e| Error::io(&produced_path, "open", e))?;
        let consumed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&consumed_path)
            .map_err(|e| Error::io(&consumed_path, "open", e))?;
        let least = padding.bytes().unwrap_or(conv::PADDING_HEADER_SIZE as u64);
        let info = geometry(path, cpu, least)?;
        // relay_app's `overwrite` file (not part of relay-apps 0.9x): the
        // protocol has no way to detect a lap, so refuse rather than hand
        // out sub-buffers that may have been overwritten while read.
        let overwrite = sibling(path, "overwrite");
        if overwrite.exists() && read_number(&overwrite)? != 0 {
            return Err(Error::RelayAppOverwrite { path: path.into() });
        }
        let map = Mapping::new(&file, info.mmap_len, path)?;
        let mut buffer = RelayAppBuffer {
            path: path.into(),
            file,
            produced,
            consumed,
            enabled: sibling(path, conv::ENABLED_FILE),
            map,
            info,
            padding: shared.clone(),
            word: padding.bytes(),
        };
        if padding == PaddingWord::Auto {
            // What is there already may tell; the first delivery must.
            buffer.word = buffer.decide(false)?;
        } else {
            *buffer.lock_padding() = padding;
        }
        Ok(buffer)
    }

    /// The buffer file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The padding-word size of the channel: the one chosen, or the one
    /// detected; [`PaddingWord::Auto`] while the sub-buffers have not told.
    pub fn padding_word(&self) -> PaddingWord {
        self.padding.get()
    }

    fn lock_padding(&self) -> std::sync::MutexGuard<'_, PaddingWord> {
        self.padding
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The padding word's bytes as the channel's readers decided them, or
    /// decides them from what every buffer of the channel holds now.
    /// Undecided: `Ok(None)`, or with `required` (data must be delivered)
    /// an error.
    fn decide(&self, required: bool) -> Result<Option<u64>> {
        let mut decided = self.lock_padding();
        if let Some(bytes) = decided.bytes() {
            return Ok(Some(bytes));
        }
        let evidence = self.channel_evidence();
        match evidence.verdict(self.info.subbuf_size) {
            Ok(Some(word)) => {
                *decided = word;
                Ok(word.bytes())
            }
            Ok(None) if required => Err(Error::PaddingWordUnknown {
                path: self.path.clone(),
                subbufs: evidence.subbufs,
            }),
            Err(what) if required => Err(Error::Corrupt {
                path: self.path.clone(),
                what,
            }),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    /// What the sub-buffers of every buffer of the channel say: this one's
    /// mapping, and the others' (`<dir>/<base>N` beside their
    /// `<base>N.produced`) mapped for the look. A buffer that cannot be
    /// looked at (its CPU went away) says nothing.
    fn channel_evidence(&self) -> PaddingEvidence {
        let scan = |map: &Mapping, cpu| {
            let bytes = map.bytes(0, map.len() as u64).unwrap_or_default();
            PaddingEvidence::scan(bytes, self.info.subbuf_size, self.info.n_subbufs, cpu)
        };
        let mut evidence = scan(&self.map, self.info.cpu);
        for (path, cpu) in channel_buffers(&self.path) {
            if path == self.path {
                continue;
            }
            let theirs = File::open(&path)
                .map_err(|e| Error::io(&path, "open", e))
                .and_then(|file| Mapping::new(&file, self.info.mmap_len, &path));
            if let Ok(map) = theirs {
                evidence.add(&scan(&map, cpu));
            }
        }
        evidence
    }

    fn read_word(file: &File, path: &Path) -> Result<u64> {
        let mut word = [0u8; WORD];
        let n = file
            .read_at(&mut word, 0)
            .map_err(|e| Error::io(path, "read", e))?;
        if n != WORD {
            return Err(Error::Corrupt {
                path: path.into(),
                what: format!("{n} bytes where a size_t was expected"),
            });
        }
        Ok(usize::from_ne_bytes(word) as u64)
    }

    fn control_path(&self, suffix: &str) -> PathBuf {
        PathBuf::from(format!("{}{suffix}", self.path.display()))
    }
}

/// The buffer files of the channel of the relay-apps buffer `path`
/// (`<dir>/<base>N`), with their numbers: every `<dir>/<base>M` that has a
/// `<base>M.produced` control file.
fn channel_buffers(path: &Path) -> Vec<(PathBuf, u32)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut buffers: Vec<(PathBuf, u32)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let control = entry.file_name();
            let buffer = control.to_str()?.strip_suffix(conv::PRODUCED_SUFFIX)?;
            let number = buffer.strip_prefix(base)?;
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((dir.join(buffer), number.parse().ok()?))
        })
        .filter(|(buffer, _)| buffer.exists())
        .collect();
    buffers.sort_by_key(|&(_, cpu)| cpu);
    buffers
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

impl AsFd for RelayAppBuffer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl MappedBuffer for RelayAppBuffer {
    fn info(&self) -> &BufInfo {
        &self.info
    }

    fn state(&mut self) -> Result<BufState> {
        let produced = Self::read_word(&self.produced, &self.control_path(conv::PRODUCED_SUFFIX))?;
        let consumed = Self::read_word(&self.consumed, &self.control_path(conv::CONSUMED_SUFFIX))?;
        if consumed > produced {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                what: format!("consumed {consumed} > produced {produced}"),
            });
        }
        Ok(BufState {
            produced,
            consumed,
            ..BufState::default()
        })
    }

    fn subbuf(&mut self, seq: u64) -> Result<SubbufLookup> {
        let word = match self.word {
            Some(word) => word,
            None => {
                let word = self.decide(true)?.expect("decide(true) decides or fails");
                self.word = Some(word);
                word
            }
        };
        let map = self.map.bytes(0, self.map.len() as u64).unwrap_or_default();
        locate(map, seq, self.info.subbuf_size, self.info.n_subbufs, word)
            .map(SubbufLookup::Ready)
            .map_err(|what| Error::Corrupt {
                path: self.path.clone(),
                what,
            })
    }

    fn release(&mut self, _seq: u64, count: u64) -> Result<Released> {
        let delta = (count as usize).to_ne_bytes();
        let path = self.control_path(conv::CONSUMED_SUFFIX);
        self.consumed
            .write_at(&delta, 0)
            .map_err(|e| Error::io(&path, "write", e))?;
        let consumed = Self::read_word(&self.consumed, &path)?;
        Ok(Released { lost: 0, consumed })
    }

    fn flush(&mut self) -> Result<()> {
        match std::fs::write(&self.enabled, "0") {
            // The channel's directory is gone: it was flushed and closed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| Error::io(&self.enabled, "write", e)),
        }
    }

    fn data(&self, loc: &SubbufLoc) -> &[u8] {
        self.map
            .bytes(loc.data_offset, loc.data_len)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn geometry_that_overflows_or_cannot_hold_a_padding_word_is_corrupt() {
        let dir = std::env::temp_dir().join(format!("relay-app-geometry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (size, n) in [(u64::MAX / 2, 4), (4, 8), (4096, 1)] {
            std::fs::write(dir.join(conv::SUBBUF_SIZE_FILE), format!("{size}\n")).unwrap();
            std::fs::write(dir.join(conv::N_SUBBUFS_FILE), format!("{n}\n")).unwrap();
            let err = relay_app_state(&dir.join("cpu0"), 0).unwrap_err();
            assert!(
                matches!(err, Error::Corrupt { .. }) && err.to_string().contains("geometry"),
                "{size} x {n}: {err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;
    use crate::source::MappedSource;

    fn buffer(paddings: &[u32], subbuf_size: usize) -> Vec<u8> {
        let mut map = vec![0u8; paddings.len() * subbuf_size];
        for (i, p) in paddings.iter().enumerate() {
            map[i * subbuf_size..][..4].copy_from_slice(&p.to_ne_bytes());
        }
        map
    }

    /// A ring of `subbuf_size`-byte sub-buffers holding `data`, each after
    /// a `word`-byte padding word as a writer of that size leaves it; the
    /// rest of the ring is zero, as relay allocates it.
    fn ring(word: usize, subbuf_size: usize, n_subbufs: usize, data: &[&[u8]]) -> Vec<u8> {
        let mut map = vec![0u8; n_subbufs * subbuf_size];
        for (i, d) in data.iter().enumerate() {
            let sb = &mut map[i * subbuf_size..][..subbuf_size];
            let padding = subbuf_size - word - d.len();
            match word {
                4 => sb[..4].copy_from_slice(&(padding as u32).to_ne_bytes()),
                _ => sb[..8].copy_from_slice(&(padding as u64).to_ne_bytes()),
            }
            sb[word..][..d.len()].copy_from_slice(d);
        }
        map
    }

    /// `map` with `data` written into sub-buffer `i` after a `word`-byte
    /// word that is not there yet: the sub-buffer being filled.
    fn filling(
        mut map: Vec<u8>,
        subbuf_size: usize,
        i: usize,
        word: usize,
        data: &[u8],
    ) -> Vec<u8> {
        map[i * subbuf_size + word..][..data.len()].copy_from_slice(data);
        map
    }

    #[test]
    fn padding_word_gives_the_data_range() {
        let map = buffer(&[10, 0], 64);
        let loc = locate(&map, 0, 64, 2, 4).unwrap();
        assert_eq!((loc.data_offset, loc.data_len, loc.padding), (4, 50, 10));
        let loc = locate(&map, 3, 64, 2, 4).unwrap();
        assert_eq!((loc.data_offset, loc.data_len), (68, 60));
        // A sub-buffer holding only its header and padding.
        let map = buffer(&[60], 64);
        assert_eq!(locate(&map, 0, 64, 1, 4).unwrap().data_len, 0);
        // 8-byte words.
        let map = ring(8, 64, 2, &[b"abc", b""]);
        let loc = locate(&map, 0, 64, 2, 8).unwrap();
        assert_eq!((loc.data_offset, loc.data_len, loc.padding), (8, 3, 53));
        let loc = locate(&map, 1, 64, 2, 8).unwrap();
        assert_eq!((loc.data_offset, loc.data_len, loc.padding), (72, 0, 56));
    }

    #[test]
    fn corrupt_padding_word_is_an_error() {
        let map = buffer(&[61, u32::MAX], 64);
        assert!(locate(&map, 0, 64, 2, 4)
            .unwrap_err()
            .contains("padding word 61"));
        assert!(locate(&map, 1, 64, 2, 4).is_err());
        // Geometry larger than the mapping.
        let map = buffer(&[0, 0], 64);
        assert!(locate(&map, 1, 64, 4, 4).is_ok());
        assert!(locate(&map, 2, 64, 4, 4)
            .unwrap_err()
            .contains("outside the mapping"));
        assert!(locate(&map, 0, 4, 2, 4).is_err());
        assert!(locate(&map, 0, 8, 2, 8).is_err());
        assert!(locate(&map, 0, 64, 0, 4).is_err());
        assert!(locate(&map, 0, 64, 2, 2).unwrap_err().contains("2 bytes"));
    }

    #[test]
    fn wrong_explicit_size_is_an_error_or_shows_in_the_data() {
        // 4-byte words read as 8: the first data bytes make the word too
        // large for the sub-buffer.
        let map = ring(4, 64, 2, &[b"klog_gen cpu=0 seq=0\n"]);
        assert!(locate(&map, 0, 64, 2, 8)
            .unwrap_err()
            .contains("exceeds the sub-buffer size"));
        // 8-byte words read as 4: the data gains the word's other half.
        let map = ring(8, 64, 2, &[b"klog"]);
        let loc = locate(&map, 0, 64, 2, 4).unwrap();
        let data = &map[loc.data_offset as usize..][..loc.data_len as usize];
        let other_half = if cfg!(target_endian = "little") {
            [0u8; 4]
        } else {
            (52u32).to_ne_bytes()
        };
        assert_eq!(data, [&other_half[..], b"klog"].concat());
    }

    #[test]
    fn four_byte_words_are_told_by_their_data() {
        let map = ring(
            4,
            64,
            4,
            &[b"klog_gen cpu=0 seq=0\n", b"\0\0\0\0zero first"],
        );
        let evidence = PaddingEvidence::scan(&map, 64, 4, 0);
        assert_eq!(evidence.subbufs, 4);
        assert_eq!(evidence.four, None);
        assert_eq!(evidence.eight.map(|m| (m.cpu, m.subbuf)), Some((0, 0)));
        assert_eq!(evidence.verdict(64), Ok(Some(PaddingWord::Four)));
        // Fewer than 4 data bytes: a padding 8-byte words cannot have.
        let map = ring(4, 64, 2, &[b"\0\0"]);
        let evidence = PaddingEvidence::scan(&map, 64, 2, 0);
        assert_eq!(evidence.verdict(64), Ok(Some(PaddingWord::Four)));
        // The sub-buffer being filled tells before any is finished.
        let map = filling(ring(4, 64, 2, &[]), 64, 0, 4, b"klog");
        let evidence = PaddingEvidence::scan(&map, 64, 2, 0);
        assert_eq!(evidence.verdict(64), Ok(Some(PaddingWord::Four)));
    }

    #[test]
    fn eight_byte_words_fit_both_sizes() {
        let map = ring(8, 64, 4, &[b"klog_gen cpu=0 seq=0\n", b"", b"x"]);
        let map = filling(map, 64, 3, 8, b"klog");
        let evidence = PaddingEvidence::scan(&map, 64, 4, 0);
        assert_eq!(
            (evidence.subbufs, evidence.four, evidence.eight),
            (4, None, None)
        );
        assert_eq!(evidence.verdict(64), Ok(None));
    }

    #[test]
    fn four_byte_words_whose_data_starts_with_zeros_are_ambiguous() {
        let map = ring(4, 64, 2, &[b"\0\0\0\0abcd", b"\0\0\0\0efgh"]);
        let evidence = PaddingEvidence::scan(&map, 64, 2, 0);
        assert_eq!(evidence.verdict(64), Ok(None));
        // Nothing written: nothing to tell.
        let evidence = PaddingEvidence::scan(&[0u8; 128], 64, 2, 0);
        assert_eq!((evidence.subbufs, evidence.verdict(64)), (2, Ok(None)));
    }

    #[test]
    fn corrupt_words_rule_out_both_sizes() {
        let map = buffer(&[0xffff_fff0, 0], 64);
        let evidence = PaddingEvidence::scan(&map, 64, 2, 3);
        let err = evidence.verdict(64).unwrap_err();
        assert!(
            err.contains("padding word 4294967280 of sub-buffer 0 exceeds the sub-buffer size 64"),
            "{err}"
        );
        assert!(
            err.contains("(cpu3)") && err.contains("neither padding-word size fits"),
            "{err}"
        );
        // A mapping shorter than the geometry ends the look.
        let evidence = PaddingEvidence::scan(&map[..100], 64, 2, 0);
        assert_eq!(evidence.subbufs, 1);
        // Too small a sub-buffer for a word and data.
        let evidence = PaddingEvidence::scan(&[0u8; 16], 8, 2, 0);
        assert_eq!(evidence.verdict(8), Ok(Some(PaddingWord::Four)));
        // Evidence adds up over the buffers of a channel.
        let mut all = PaddingEvidence::scan(&ring(8, 64, 2, &[b"a"]), 64, 2, 0);
        all.add(&PaddingEvidence::scan(
            &ring(4, 64, 2, &[b"abcd"]),
            64,
            2,
            1,
        ));
        assert_eq!(all.subbufs, 4);
        assert_eq!(all.eight.map(|m| m.cpu), Some(1));
        assert_eq!(all.verdict(64), Ok(Some(PaddingWord::Four)));
    }

    /// A relay-apps channel made of plain files: buffers `cpuN` with their
    /// `cpuN.produced` and `cpuN.consumed`, and the geometry files.
    struct FakeChannel {
        dir: PathBuf,
        subbuf_size: usize,
        n_subbufs: usize,
    }

    impl FakeChannel {
        fn new(name: &str, subbuf_size: usize, n_subbufs: usize) -> FakeChannel {
            let dir = std::env::temp_dir().join(format!("relay-app-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("subbuf_size"), format!("{subbuf_size}\n")).unwrap();
            std::fs::write(dir.join("n_subbufs"), format!("{n_subbufs}\n")).unwrap();
            FakeChannel {
                dir,
                subbuf_size,
                n_subbufs,
            }
        }

        /// Buffer `cpu` with `data` produced behind `word`-byte words.
        fn buffer(&self, cpu: u32, word: usize, data: &[&[u8]]) -> &Self {
            let mut map = ring(word, self.subbuf_size, self.n_subbufs, data);
            map.resize((map.len() as u64).next_multiple_of(page_size()) as usize, 0);
            let path = self.dir.join(format!("cpu{cpu}"));
            std::fs::write(&path, map).unwrap();
            let produced = data.len().to_ne_bytes();
            std::fs::write(self.dir.join(format!("cpu{cpu}.produced")), produced).unwrap();
            std::fs::write(
                self.dir.join(format!("cpu{cpu}.consumed")),
                0usize.to_ne_bytes(),
            )
            .unwrap();
            self
        }

        fn open(
            &self,
            cpu: u32,
            word: PaddingWord,
            shared: &SharedPadding,
        ) -> Result<RelayAppBuffer> {
            let path = self.dir.join(format!("cpu{cpu}"));
            let file = File::open(&path).unwrap();
            RelayAppBuffer::open_in(&path, file, cpu, word, shared)
        }

        /// Everything buffer `cpu` delivers, read with `word` from the
        /// start (a plain file keeps the last delta written as `consumed`).
        fn read(
            &self,
            cpu: u32,
            word: PaddingWord,
            shared: &SharedPadding,
        ) -> Result<Vec<Vec<u8>>> {
            let consumed = self.dir.join(format!("cpu{cpu}.consumed"));
            std::fs::write(consumed, 0usize.to_ne_bytes()).unwrap();
            let mut source = MappedSource::new(self.open(cpu, word, shared)?)?;
            let mut got = Vec::new();
            source.drain(&mut |sb| {
                got.push(sb.data.to_vec());
                Ok(())
            })?;
            Ok(got)
        }
    }

    impl Drop for FakeChannel {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const TEXT: [&[u8]; 2] = [b"klog_gen cpu=1 seq=0\n", b"klog_gen cpu=1 seq=1\n"];
    const ZERO_FIRST: [&[u8]; 2] = [b"\0\0\0\0cpu0 first", b"\0\0\0\0cpu0 second"];

    #[test]
    fn channel_of_four_byte_words_is_detected_from_any_buffer() {
        let chan = FakeChannel::new("four", 256, 4);
        chan.buffer(0, 4, &ZERO_FIRST).buffer(1, 4, &TEXT);
        // cpu0 alone fits both sizes; cpu1's data rules 8 out.
        let shared = SharedPadding::default();
        assert_eq!(
            chan.read(0, PaddingWord::Auto, &shared).unwrap(),
            ZERO_FIRST
        );
        assert_eq!(shared.get(), PaddingWord::Four);
        assert_eq!(chan.read(1, PaddingWord::Auto, &shared).unwrap(), TEXT);
        assert_eq!(
            chan.read(1, PaddingWord::Four, &SharedPadding::default())
                .unwrap(),
            TEXT
        );
        // The wrong choice: cpu1's first data bytes do not fit an 8-byte word.
        let err = chan
            .read(1, PaddingWord::Eight, &SharedPadding::default())
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn channel_of_eight_byte_words_needs_the_choice() {
        let chan = FakeChannel::new("eight", 256, 4);
        chan.buffer(0, 8, &TEXT).buffer(1, 8, &ZERO_FIRST);
        let shared = SharedPadding::default();
        let buffer = chan.open(0, PaddingWord::Auto, &shared).unwrap();
        assert_eq!(buffer.padding_word(), PaddingWord::Auto);
        let err = chan.read(0, PaddingWord::Auto, &shared).unwrap_err();
        assert!(
            matches!(err, Error::PaddingWordUnknown { subbufs: 8, .. }),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("cannot tell whether the padding words are 4 or 8 bytes"));
        let shared = SharedPadding::default();
        assert_eq!(chan.read(0, PaddingWord::Eight, &shared).unwrap(), TEXT);
        assert_eq!(shared.get(), PaddingWord::Eight);
        assert_eq!(
            chan.read(1, PaddingWord::Eight, &shared).unwrap(),
            ZERO_FIRST
        );
        // The wrong choice: every sub-buffer gains 4 bytes of the word.
        let got = chan
            .read(0, PaddingWord::Four, &SharedPadding::default())
            .unwrap();
        assert!(got
            .iter()
            .zip(TEXT)
            .all(|(got, want)| got.len() == want.len() + 4 && got.ends_with(want)));
    }

    #[test]
    fn channel_with_a_corrupt_word_is_an_error() {
        let chan = FakeChannel::new("corrupt", 256, 4);
        chan.buffer(0, 4, &ZERO_FIRST);
        let path = chan.dir.join("cpu0");
        let mut map = std::fs::read(&path).unwrap();
        map[..4].copy_from_slice(&0xffff_fff0u32.to_ne_bytes());
        std::fs::write(&path, map).unwrap();
        let err = chan
            .read(0, PaddingWord::Auto, &SharedPadding::default())
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("padding word 4294967280 of sub-buffer 0 exceeds the sub-buffer size"),
            "{err}"
        );
    }

    #[test]
    fn channel_buffers_are_found_by_their_control_files() {
        let chan = FakeChannel::new("list", 256, 4);
        chan.buffer(0, 4, &TEXT)
            .buffer(10, 4, &TEXT)
            .buffer(2, 4, &TEXT);
        std::fs::write(chan.dir.join("other0.produced"), [0u8; 8]).unwrap();
        let found: Vec<u32> = channel_buffers(&chan.dir.join("cpu2"))
            .into_iter()
            .map(|(path, cpu)| {
                assert_eq!(path, chan.dir.join(format!("cpu{cpu}")));
                cpu
            })
            .collect();
        assert_eq!(found, [0, 2, 10]);
    }
}
