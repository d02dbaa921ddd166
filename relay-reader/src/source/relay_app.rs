//! The relay-apps 0.9x protocol, for channels without the ioctl ABI: mmap,
//! `cpuN.produced` (binary `size_t`, read), `cpuN.consumed` (binary `size_t`,
//! written as a delta), and the 4-byte padding word at the head of each
//! sub-buffer. Only the geometry comes from the `subbuf_size` and
//! `n_subbufs` files; flushing writes `0` to `enabled`, which stops the
//! writers: it is for the end of a recording.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use relay_sys::relay_app as conv;

use crate::kernel::Mapping;
use crate::mapped::{BufInfo, BufState, MappedBuffer, Released, SubbufLoc, SubbufLookup};
use crate::{Error, Result};

const WORD: usize = std::mem::size_of::<usize>();

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
    let subbuf_size = read_number(&sibling(path, conv::SUBBUF_SIZE_FILE))?;
    let n_subbufs = read_number(&sibling(path, conv::N_SUBBUFS_FILE))?;
    let word = |path: PathBuf| -> Result<u64> {
        let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        RelayAppBuffer::read_word(&file, &path)
    };
    let produced = word(control(conv::PRODUCED_SUFFIX))?;
    let consumed = word(control(conv::CONSUMED_SUFFIX))?;
    let info = BufInfo {
        subbuf_size,
        n_subbufs,
        mmap_len: subbuf_size
            .checked_mul(n_subbufs)
            .and_then(|len| len.checked_next_multiple_of(page_size()))
            .unwrap_or(u64::MAX),
        cpu,
        global: false,
        overwrite: false,
        meta_len: 0,
    };
    let state = BufState {
        produced,
        consumed,
        ..BufState::default()
    };
    Ok((info, state))
}

/// Where the data of sub-buffer `seq` lies in a relay-apps buffer `map`,
/// from the padding word at its head. Untrusted input: a padding word that
/// does not fit the sub-buffer is an error, never a panic or an
/// out-of-bounds slice.
pub fn locate(
    map: &[u8],
    seq: u64,
    subbuf_size: u64,
    n_subbufs: u64,
) -> std::result::Result<SubbufLoc, String> {
    let header = conv::PADDING_HEADER_SIZE as u64;
    if n_subbufs == 0 || subbuf_size <= header {
        return Err(format!("geometry {n_subbufs} x {subbuf_size} bytes"));
    }
    let start = (seq % n_subbufs)
        .checked_mul(subbuf_size)
        .filter(|start| start.saturating_add(subbuf_size) <= map.len() as u64)
        .ok_or_else(|| format!("sub-buffer {seq} outside the mapping"))?;
    let word: [u8; conv::PADDING_HEADER_SIZE] = map[start as usize..][..conv::PADDING_HEADER_SIZE]
        .try_into()
        .expect("slice of the header's length");
    let padding = u64::from(u32::from_ne_bytes(word));
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
    /// Opens the relay-apps buffer `path` (`<dir>/cpuN`), already open as `file`.
    pub fn open(path: &Path, file: File, cpu: u32) -> Result<Self> {
        let control = |suffix: &str| PathBuf::from(format!("{}{suffix}", path.display()));
        let produced_path = control(conv::PRODUCED_SUFFIX);
        let consumed_path = control(conv::CONSUMED_SUFFIX);
        let produced =
            File::open(&produced_path).map_err(|e| Error::io(&produced_path, "open", e))?;
        let consumed = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&consumed_path)
            .map_err(|e| Error::io(&consumed_path, "open", e))?;
        let subbuf_size = read_number(&sibling(path, conv::SUBBUF_SIZE_FILE))?;
        let n_subbufs = read_number(&sibling(path, conv::N_SUBBUFS_FILE))?;
        if subbuf_size <= conv::PADDING_HEADER_SIZE as u64 || n_subbufs < 2 {
            return Err(Error::Corrupt {
                path: path.into(),
                what: format!("geometry {n_subbufs} x {subbuf_size} bytes"),
            });
        }
        // relay_app's `overwrite` file (not part of relay-apps 0.9x): the
        // protocol has no way to detect a lap, so refuse rather than hand
        // out sub-buffers that may have been overwritten while read.
        let overwrite = sibling(path, "overwrite");
        if overwrite.exists() && read_number(&overwrite)? != 0 {
            return Err(Error::RelayAppOverwrite { path: path.into() });
        }
        let mmap_len = (subbuf_size * n_subbufs).next_multiple_of(page_size());
        let map = Mapping::new(&file, mmap_len, path)?;
        Ok(RelayAppBuffer {
            path: path.into(),
            file,
            produced,
            consumed,
            enabled: sibling(path, conv::ENABLED_FILE),
            map,
            info: BufInfo {
                subbuf_size,
                n_subbufs,
                mmap_len,
                cpu,
                global: false,
                overwrite: false,
                meta_len: 0,
            },
        })
    }

    /// The buffer file's path.
    pub fn path(&self) -> &Path {
        &self.path
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
        let map = self.map.bytes(0, self.map.len() as u64).unwrap_or_default();
        locate(map, seq, self.info.subbuf_size, self.info.n_subbufs)
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
    use super::*;

    fn buffer(paddings: &[u32], subbuf_size: usize) -> Vec<u8> {
        let mut map = vec![0u8; paddings.len() * subbuf_size];
        for (i, p) in paddings.iter().enumerate() {
            map[i * subbuf_size..][..4].copy_from_slice(&p.to_ne_bytes());
        }
        map
    }

    #[test]
    fn padding_word_gives_the_data_range() {
        let map = buffer(&[10, 0], 64);
        let loc = locate(&map, 0, 64, 2).unwrap();
        assert_eq!((loc.data_offset, loc.data_len, loc.padding), (4, 50, 10));
        let loc = locate(&map, 3, 64, 2).unwrap();
        assert_eq!((loc.data_offset, loc.data_len), (68, 60));
        // A sub-buffer holding only its header and padding.
        let map = buffer(&[60], 64);
        assert_eq!(locate(&map, 0, 64, 1).unwrap().data_len, 0);
    }

    #[test]
    fn corrupt_padding_word_is_an_error() {
        let map = buffer(&[61, u32::MAX], 64);
        assert!(locate(&map, 0, 64, 2)
            .unwrap_err()
            .contains("padding word 61"));
        assert!(locate(&map, 1, 64, 2).is_err());
        // Geometry larger than the mapping.
        let map = buffer(&[0, 0], 64);
        assert!(locate(&map, 1, 64, 4).is_ok());
        assert!(locate(&map, 2, 64, 4)
            .unwrap_err()
            .contains("outside the mapping"));
        assert!(locate(&map, 0, 4, 2).is_err());
        assert!(locate(&map, 0, 64, 0).is_err());
    }
}
