//! The relay ioctl ABI and buffer mapping of a real relay file.
//!
//! # Safety
//!
//! This is one of the two modules allowed `unsafe`: the ioctls pass pointers
//! to `repr(C)` structures from `relay-sys` whose sizes are encoded in the
//! request numbers, and the mapping is a read-only shared view of the
//! kernel's buffer pages whose lifetime is tied to this struct. The kernel
//! writes to those pages concurrently; see [`MappedBuffer::data`] for when a
//! slice of them is stable. The meta area after the buffer is only ever
//! loaded from, as 32-bit atomic words ([`Mapping::atomic_words`]); what is
//! read from it is checked by the safe code of `crate::meta`.
#![allow(unsafe_code)]

use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;

use memmap2::{Mmap, MmapOptions};
use nix::errno::Errno;
use relay_sys as sys;

use crate::mapped::{BufInfo, BufState, MappedBuffer, Released, SubbufLoc, SubbufLookup};
use crate::meta::MetaLayout;
use crate::{Error, Result};

/// The raw ioctl calls, each with the request relay-sys ties to its
/// argument type.
mod ioc {
    use std::os::fd::RawFd;

    use nix::errno::Errno;
    use relay_sys as sys;

    /// ioctl(2) of `request` on `fd` with `arg`.
    ///
    /// # Safety
    ///
    /// `arg` must be valid for reads and writes of a `T` (null for `()`).
    unsafe fn ioctl<T>(fd: RawFd, request: sys::Request<T>, arg: *mut T) -> nix::Result<i32> {
        // SAFETY: the relay ioctls read and write at most the `T` that
        // `request` encodes the size of, which the caller vouches for.
        Errno::result(unsafe { libc::ioctl(fd, request.code() as libc::Ioctl, arg) })
    }

    /// `RELAY_IOC_GET_INFO`: the bytes the kernel filled.
    ///
    /// # Safety
    ///
    /// `fd` must be open (any file: others refuse the request).
    pub unsafe fn get_info(fd: RawFd, info: &mut sys::relay_buf_info) -> nix::Result<i32> {
        // SAFETY: `info` is a live, writable relay_buf_info.
        unsafe { ioctl(fd, sys::GET_INFO, info) }
    }

    /// `RELAY_IOC_CONSUME`: the bytes the kernel filled.
    ///
    /// # Safety
    ///
    /// As for [`get_info`].
    pub unsafe fn consume(fd: RawFd, consume: &mut sys::relay_consume) -> nix::Result<i32> {
        // SAFETY: `consume` is a live, writable relay_consume.
        unsafe { ioctl(fd, sys::CONSUME, consume) }
    }

    /// `RELAY_IOC_FLUSH`.
    ///
    /// # Safety
    ///
    /// As for [`get_info`].
    pub unsafe fn flush(fd: RawFd) -> nix::Result<i32> {
        // SAFETY: FLUSH takes no argument.
        unsafe { ioctl(fd, sys::FLUSH, std::ptr::null_mut()) }
    }
}

/// Asks the writer of the relay file `file` to finish its partly filled
/// sub-buffer (`RELAY_IOC_FLUSH`). `Ok(false)` when it cannot: the file has
/// no relay ABI (ENOTTY, EINVAL), or its client implements no flush
/// (EOPNOTSUPP), so that sub-buffer comes only with the client's own
/// flush or close.
pub fn request_flush(file: &File, path: &Path) -> Result<bool> {
    // SAFETY: RELAY_IOC_FLUSH takes no argument.
    match unsafe { ioc::flush(file.as_raw_fd()) } {
        Ok(_) => Ok(true),
        Err(Errno::ENOTTY | Errno::EINVAL | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(Error::io(path, "RELAY_IOC_FLUSH", e.into())),
    }
}

/// Bytes of `struct relay_buf_info` up to and including `meta_len`: a
/// kernel that fills fewer has no meta area.
const INFO_META_LEN_END: usize = offset_of!(sys::relay_buf_info, meta_len) + size_of::<u64>();

/// Asks the kernel for the geometry of the relay file `file`. `Ok(None)`
/// when the file does not implement the relay ABI (ENOTTY, EINVAL).
///
/// `meta_len` is 0 unless the kernel says it filled the field: `GET_INFO`
/// returns the bytes it filled (40 from every kernel and `relay_app` module
/// that implements it; an answer that does not cover `meta_len` is taken as
/// "no meta area" rather than trusted). Such a buffer cannot be read
/// through the mapping: see [`KernelBuffer::new`].
pub fn query_info(file: &File, path: &Path) -> Result<Option<BufInfo>> {
    let mut raw = sys::relay_buf_info::default();
    // SAFETY: `raw` is a live, writable relay_buf_info, the type whose size the
    // request number encodes; the kernel writes at most that many bytes.
    match unsafe { ioc::get_info(file.as_raw_fd(), &mut raw) } {
        Ok(filled) => Ok(Some(BufInfo {
            subbuf_size: raw.subbuf_size,
            n_subbufs: raw.n_subbufs,
            mmap_len: raw.mmap_len,
            cpu: raw.cpu,
            global: raw.flags & sys::RELAY_BUF_GLOBAL != 0,
            overwrite: raw.flags & sys::RELAY_BUF_OVERWRITE != 0,
            meta_len: if usize::try_from(filled).is_ok_and(|n| n >= INFO_META_LEN_END) {
                raw.meta_len
            } else {
                0
            },
        })),
        Err(Errno::ENOTTY | Errno::EINVAL) => Ok(None),
        Err(e) => Err(Error::io(path, "RELAY_IOC_GET_INFO", e.into())),
    }
}

/// The meta area of a relay file mapped alone (at offset `mmap_len`), for
/// readers that only want the counters: `relay-stat`, and read(2) mode.
#[derive(Debug)]
pub struct MetaView {
    path: PathBuf,
    map: Mapping,
    layout: MetaLayout,
}

impl MetaView {
    /// Maps the meta area of the relay file `file`. `Ok(None)` when the file
    /// does not implement the relay ABI, has no meta area, or cannot be
    /// mapped (a file behind debugfs' full proxy answers ioctls, but its
    /// mapping fails).
    pub fn open(file: &File, path: &Path) -> Result<Option<MetaView>> {
        let Some(info) = query_info(file, path)? else {
            return Ok(None);
        };
        if info.meta_len == 0 {
            return Ok(None);
        }
        let map = match Mapping::at(file, info.mmap_len, info.meta_len, path) {
            Ok(map) => map,
            Err(Error::Map { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let layout = map
            .atomic_words(0, info.meta_len)
            .ok_or_else(|| "meta area not 4-byte aligned".to_string())
            .and_then(|words| MetaLayout::parse(words, &info))
            .map_err(|what| Error::Corrupt {
                path: path.into(),
                what,
            })?;
        Ok(Some(MetaView {
            path: path.into(),
            map,
            layout,
        }))
    }

    /// The counters now.
    pub fn state(&self) -> Result<BufState> {
        let words = self
            .map
            .atomic_words(0, self.map.len() as u64)
            .expect("checked in MetaView::open");
        self.layout
            .read_state(words)
            .map(|(state, _retries)| state)
            .map_err(|what| Error::Corrupt {
                path: self.path.clone(),
                what,
            })
    }
}

/// The counters of the relay file `file`, read from its meta area mapped
/// alone (see [`MetaView`]); `Ok(None)` where there is none to map.
pub fn query_state(file: &File, path: &Path) -> Result<Option<BufState>> {
    MetaView::open(file, path)?
        .map(|view| view.state())
        .transpose()
}

/// A read-only shared mapping of a whole relay buffer (and of its meta area,
/// where it has one).
#[derive(Debug)]
pub struct Mapping {
    map: Mmap,
}

impl Mapping {
    /// Maps `len` bytes of the relay file `file` (relay accepts only the
    /// whole buffer, `PAGE_ALIGN(subbuf_size * n_subbufs)`, or the buffer
    /// and its meta area, `mmap_len + meta_len`).
    pub fn new(file: &File, len: u64, path: &Path) -> Result<Mapping> {
        Self::at(file, 0, len, path)
    }

    /// Maps `len` bytes of the relay file `file` from `offset`: the meta
    /// area alone is at `mmap_len`.
    pub fn at(file: &File, offset: u64, len: u64, path: &Path) -> Result<Mapping> {
        let len = usize::try_from(len).map_err(|_| Error::Map {
            path: path.into(),
            source: std::io::Error::from(std::io::ErrorKind::OutOfMemory),
        })?;
        // Populated (MAP_POPULATE): relay maps its buffer a page per fault
        // (`relay_buf_fault`, no fault-around), so without it the reader's
        // first pass over each page of every buffer takes a fault on the
        // data path (a thousand for 2 x 2 MiB, measured in the VM by
        // `relay-bench transports`); populated, the mapping costs them once
        // here, before anything is read.
        // SAFETY: a read-only shared mapping of the whole buffer. The kernel
        // keeps the pages alive while the mapping exists (relay_file_mmap
        // takes a buffer reference) and the map is dropped with `self`, so
        // no slice handed out by `bytes` or `atomic_words` outlives it.
        let map = unsafe {
            MmapOptions::new()
                .offset(offset)
                .len(len)
                .populate()
                .map(file)
        }
        .map_err(|source| Error::Map {
            path: path.into(),
            source,
        })?;
        Ok(Mapping { map })
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for an empty mapping (never, for a relay buffer).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The mapped bytes `offset..offset + len`; `None` when out of range.
    /// Stable only where the writer does not write (see [`MappedBuffer::data`]).
    #[inline]
    pub fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        self.map
            .get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
    }

    /// The mapped bytes `offset..offset + len` as 32-bit atomic words (the
    /// last `len % 4` bytes left out), for the meta area, which the kernel
    /// updates while it is read. `None` when out of range or unaligned.
    #[inline]
    pub fn atomic_words(&self, offset: u64, len: u64) -> Option<&[AtomicU32]> {
        let bytes = self.bytes(offset, len)?;
        if bytes.as_ptr().align_offset(align_of::<AtomicU32>()) != 0 {
            return None;
        }
        // SAFETY: the range lies in the mapping (`bytes` checked it), its
        // start is aligned for AtomicU32 (checked above) and `len / 4` words
        // fit in it; the slice borrows `self`, which keeps the pages mapped.
        // AtomicU32 has the size and alignment of u32 and allows the kernel's
        // concurrent stores. The memory is read-only: only relaxed loads are
        // made through the slice (crate::meta never stores, and orders with
        // fences), which std::sync::atomic ("Atomic accesses to read-only
        // memory") allows for 4 bytes on every target with such atomics.
        Some(unsafe {
            std::slice::from_raw_parts(bytes.as_ptr().cast::<AtomicU32>(), bytes.len() / 4)
        })
    }

    /// Copies `offset..offset + len` into `out` while the writer may be
    /// writing there (overwrite mode). Panics when out of range.
    pub fn copy_racy(&self, offset: u64, len: u64, out: &mut Vec<u8>) {
        let src = self
            .bytes(offset, len)
            .expect("copy within the mapping")
            .as_ptr();
        let len = len as usize;
        out.clear();
        out.reserve(len);
        // SAFETY: `src..src+len` lies in the mapping (checked above) and
        // `out` has room for `len` bytes. The kernel may write the same bytes
        // meanwhile: the copy is kept only when the sub-buffer's slot still
        // holds it afterwards (meta area) or CONSUME then reports that the
        // writer did not reach it.
        unsafe {
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), len);
            out.set_len(len);
        }
    }
}

/// A relay buffer file opened for the relay ABI, with its buffer and its meta
/// area mapped: counters and sub-buffer locations are read from memory, no
/// system call per sub-buffer.
#[derive(Debug)]
pub struct KernelBuffer {
    path: PathBuf,
    file: File,
    map: Mapping,
    info: BufInfo,
    /// The checked layout of the meta area at `info.mmap_len`.
    meta: MetaLayout,
}

impl KernelBuffer {
    /// Maps `file` (already known to answer `GET_INFO` with `info`): the
    /// buffer and its meta area in one mapping, whose header must agree
    /// with `info` ([`Error::Corrupt`] otherwise). A file without a meta
    /// area (`meta_len` 0: a kernel older than the interface) is
    /// [`Error::NoAbi`].
    pub fn new(path: PathBuf, file: File, info: BufInfo) -> Result<Self> {
        if info.meta_len == 0 {
            return Err(Error::NoAbi { path });
        }
        let expected = info.subbuf_size.checked_mul(info.n_subbufs);
        let map_len = info.mmap_len.checked_add(info.meta_len);
        if info.subbuf_size == 0
            || info.n_subbufs < 2
            || expected.is_none_or(|len| len > info.mmap_len)
            || map_len.is_none()
        {
            return Err(Error::Corrupt {
                path,
                what: format!("geometry {info:?}"),
            });
        }
        let map = Mapping::new(&file, map_len.unwrap_or_default(), &path)?;
        let layout = map
            .atomic_words(info.mmap_len, info.meta_len)
            .ok_or_else(|| {
                format!(
                    "meta area of {} bytes at offset {} is not 4-byte aligned",
                    info.meta_len, info.mmap_len
                )
            })
            .and_then(|words| MetaLayout::parse(words, &info));
        match layout {
            Ok(meta) => Ok(KernelBuffer {
                path,
                file,
                map,
                info,
                meta,
            }),
            Err(what) => Err(Error::Corrupt { path, what }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The meta area's words (the mapping after `mmap_len`).
    #[inline]
    fn meta_words(&self) -> &[AtomicU32] {
        self.map
            .atomic_words(self.info.mmap_len, self.info.meta_len)
            .expect("checked in KernelBuffer::new")
    }

    fn corrupt(&self, what: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            what,
        }
    }
}

impl AsFd for KernelBuffer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl MappedBuffer for KernelBuffer {
    #[inline]
    fn info(&self) -> &BufInfo {
        &self.info
    }

    #[inline(always)]
    fn state(&mut self) -> Result<BufState> {
        self.meta
            .read_state(self.meta_words())
            .map(|(state, _retries)| state)
            .map_err(|what| self.corrupt(what))
    }

    #[inline(always)]
    fn subbuf(&mut self, seq: u64) -> Result<SubbufLookup> {
        self.meta
            .lookup(self.meta_words(), seq)
            .map_err(|what| self.corrupt(what))
    }

    #[inline]
    fn release(&mut self, seq: u64, count: u64) -> Result<Released> {
        let mut raw = sys::relay_consume {
            seq,
            count,
            ..Default::default()
        };
        // SAFETY: `raw` is a live relay_consume matching the request size.
        unsafe { ioc::consume(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::io(&self.path, "RELAY_IOC_CONSUME", e.into()))?;
        Ok(Released {
            lost: raw.lost,
            consumed: raw.consumed,
        })
    }

    fn flush(&mut self) -> Result<()> {
        request_flush(&self.file, &self.path).map(|_| ())
    }

    fn flush_live(&mut self) -> Result<bool> {
        request_flush(&self.file, &self.path)
    }

    #[inline]
    fn data(&self, loc: &SubbufLoc) -> &[u8] {
        // Bounds were checked against the mapping in `subbuf`.
        self.map
            .bytes(loc.data_offset, loc.data_len)
            .unwrap_or_default()
    }

    fn copy_data(&self, loc: &SubbufLoc, out: &mut Vec<u8>) {
        self.map.copy_racy(loc.data_offset, loc.data_len, out);
    }

    #[inline]
    fn validates_in_place(&self) -> bool {
        true
    }

    #[inline]
    fn still_holds(&self, loc: &SubbufLoc) -> bool {
        self.meta.still_holds(self.meta_words(), loc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{image_len, MetaImage, VERSION};

    const SUBBUF: u64 = 256;
    const N: u64 = 4;

    fn info(overwrite: bool) -> BufInfo {
        BufInfo {
            subbuf_size: SUBBUF,
            n_subbufs: N,
            mmap_len: 4096,
            cpu: 0,
            global: false,
            overwrite,
            meta_len: image_len(N),
        }
    }

    /// A regular file laid out like a relay buffer file with its meta area:
    /// sub-buffer i filled with byte i, then `image`.
    fn file(name: &str, info: &BufInfo, image: &MetaImage) -> (PathBuf, File) {
        let path =
            std::env::temp_dir().join(format!("relay-reader-kernel-{}-{name}", std::process::id()));
        let mut bytes = vec![0u8; info.mmap_len as usize];
        for (i, sb) in bytes
            .chunks_mut(SUBBUF as usize)
            .take(N as usize)
            .enumerate()
        {
            sb.fill(i as u8);
        }
        bytes.extend(image.to_bytes());
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        (path, file)
    }

    #[test]
    fn the_meta_area_is_read_from_the_mapping() {
        let info = info(true);
        let image = MetaImage::new(&info);
        for seq in 0..6 {
            image.start_slot(seq, N, 4, seq % 2);
            image.finish_slot(seq, N, 10);
            image.publish(seq + 1, 1, 2, 3);
        }
        let (path, file) = file("ok", &info, &image);
        let mut buf = KernelBuffer::new(path.clone(), file, info).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(buf.validates_in_place());
        let state = buf.state().unwrap();
        assert_eq!(
            (state.produced, state.lost_full, state.lost_toobig),
            (6, 1, 2)
        );
        assert_eq!(buf.subbuf(1).unwrap(), SubbufLookup::Overwritten);
        assert_eq!(buf.subbuf(6).unwrap(), SubbufLookup::NotReady);
        let SubbufLookup::Ready(loc) = buf.subbuf(5).unwrap() else {
            panic!("sub-buffer 5 is ready");
        };
        assert_eq!((loc.data_len, loc.lost_before), (SUBBUF - 14, 1));
        let mut copy = Vec::new();
        buf.copy_data(&loc, &mut copy);
        assert!(copy.iter().all(|&b| b == 1), "slot 1's bytes");
        assert!(buf.still_holds(&loc));
    }

    #[test]
    fn a_corrupt_meta_header_is_refused() {
        let info = info(false);
        let image = MetaImage::new(&info);
        image.set32(VERSION, 7);
        let (path, file) = file("corrupt", &info, &image);
        let err = KernelBuffer::new(path.clone(), file, info).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        match err {
            Error::Corrupt { what, .. } => assert!(what.contains("version 7"), "{what}"),
            other => panic!("not Corrupt: {other}"),
        }
    }

    #[test]
    fn a_buffer_without_a_meta_area_has_no_abi() {
        let info = BufInfo {
            meta_len: 0,
            ..info(false)
        };
        let image = MetaImage::new(&info);
        let (path, file) = file("nometa", &info, &image);
        let err = KernelBuffer::new(path.clone(), file, info).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, Error::NoAbi { .. }), "{err}");
    }

    #[test]
    fn the_meta_area_alone_gives_the_counters() {
        let info = info(false);
        let image = MetaImage::new(&info);
        image.publish(3, 4, 5, 6);
        let (path, file) = file("metaview", &info, &image);
        let map = Mapping::at(&file, info.mmap_len, info.meta_len, &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let words = map.atomic_words(0, info.meta_len).unwrap();
        let layout = MetaLayout::parse(words, &info).unwrap();
        let (state, _) = layout.read_state(words).unwrap();
        assert_eq!(
            (
                state.produced,
                state.lost_full,
                state.lost_toobig,
                state.lost_overwritten
            ),
            (3, 4, 5, 6)
        );
    }

    #[test]
    fn a_mapping_is_populated_so_reading_it_takes_no_page_fault() {
        use nix::sys::resource::{getrusage, UsageWho};
        let info = BufInfo {
            mmap_len: 64 * 4096,
            ..info(false)
        };
        let (path, file) = file("populated", &info, &MetaImage::new(&info));
        let map = Mapping::new(&file, info.mmap_len, &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let faults = || {
            getrusage(UsageWho::RUSAGE_THREAD)
                .unwrap()
                .minor_page_faults()
        };
        let before = faults();
        let touched: u64 = (0..info.mmap_len)
            .step_by(4096)
            .map(|at| u64::from(map.bytes(at, 1).unwrap()[0]))
            .sum();
        assert_eq!(faults() - before, 0, "faults reading a populated mapping");
        // Sub-buffers 0..4 hold bytes 0..4 in the first page, zeros after.
        assert_eq!(touched, 0);
    }
}
