//! Recordings to read back (`parse`, `convert`): a trace name as blkparse
//! takes it (`NAME` for the files `NAME.blktrace.<cpu>`), one file, or
//! standard output of a recorder piped in; and whole records out of their
//! bytes, whatever their version.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::record::{Invalid, Record};

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `NAME.blktrace.<cpu>` files, as `blkparse -i NAME` reads them.
    Name {
        /// The name as given (a path prefix).
        name: PathBuf,
        /// Its files, in CPU order.
        files: Vec<PathBuf>,
    },
    /// One file of records (one CPU's, or a saved `-o -` stream).
    File(PathBuf),
    /// Standard input (`-`), read as it comes.
    Stdin,
}

impl Input {
    /// `-`, an existing file, or a trace name whose per-CPU files exist.
    pub fn resolve(arg: &str) -> Result<Input> {
        if arg == "-" {
            return Ok(Input::Stdin);
        }
        let path = PathBuf::from(arg);
        if path.is_file() {
            return Ok(Input::File(path));
        }
        let files = cpu_files(&path)?;
        if files.is_empty() {
            bail!(
                "{arg}: neither a file nor the name of a recording (no {arg}.blktrace.<cpu> files)"
            );
        }
        Ok(Input::Name { name: path, files })
    }

    /// The device name blkparse shows for a trace name (its file name),
    /// none for other inputs.
    pub fn device_name(&self) -> Option<String> {
        match self {
            Input::Name { name, .. } => name.file_name().map(|n| n.to_string_lossy().into_owned()),
            _ => None,
        }
    }

    /// The files to read (none for standard input).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Input::Name { files, .. } => files.clone(),
            Input::File(path) => vec![path.clone()],
            Input::Stdin => Vec::new(),
        }
    }
}

/// `<name>.blktrace.<cpu>` beside `name`, in CPU order.
fn cpu_files(name: &Path) -> Result<Vec<PathBuf>> {
    let dir = match name.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = name.file_name().map(|b| b.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{base}.blktrace.");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut files: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let cpu = file_name.strip_prefix(&prefix)?.parse().ok()?;
            Some((cpu, entry.path()))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// Reads `input` (called `what` in errors) to its end, a chunk at a time,
/// passing each chunk to `f` as it arrives (a pipe's data while its writer
/// goes on).
pub fn read_chunks(
    what: &str,
    input: &mut dyn Read,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => f(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading {what}")),
        }
    }
}

/// Whole records out of a byte stream that arrives in pieces; bytes that
/// are no record of either version are skipped and counted.
#[derive(Debug, Default)]
pub struct Records {
    carry: Vec<u8>,
    /// Bytes skipped because no record started there.
    pub skipped: u64,
    /// What the first skipped bytes were, and where (bytes into the stream).
    pub first_bad: Option<(u64, Invalid)>,
    offset: u64,
}

impl Records {
    /// Passes every whole record of `data` (after what earlier calls kept)
    /// to `f` and keeps an incomplete last one.
    pub fn feed(&mut self, data: &[u8], f: &mut dyn FnMut(Record<'_>) -> Result<()>) -> Result<()> {
        let mut joined;
        let bytes = if self.carry.is_empty() {
            data
        } else {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(data);
            &joined[..]
        };
        let at = self.scan(bytes, f)?;
        self.carry = bytes[at..].to_vec();
        Ok(())
    }

    /// Every whole record of `data`, all of it at hand (a file), and what
    /// was no record or was left over.
    pub fn whole(data: &[u8]) -> (Vec<Record<'_>>, Records) {
        let mut records = Records::default();
        let mut whole = Vec::new();
        let at = records
            .scan(data, &mut |r| {
                whole.push(r);
                Ok(())
            })
            .expect("collecting cannot fail");
        records.carry = data[at..].to_vec();
        (whole, records)
    }

    /// Passes the whole records of `bytes` to `f`, skipping bytes that are
    /// none; returns where an incomplete last record starts.
    fn scan<'a>(
        &mut self,
        bytes: &'a [u8],
        f: &mut dyn FnMut(Record<'a>) -> Result<()>,
    ) -> Result<usize> {
        let mut at = 0;
        while at < bytes.len() {
            match Record::parse(&bytes[at..]) {
                Ok(Some((record, len))) => {
                    f(record)?;
                    at += len;
                    self.offset += len as u64;
                }
                Ok(None) => break,
                Err(invalid) => {
                    self.first_bad.get_or_insert((self.offset, invalid));
                    self.skipped += 1;
                    self.offset += 1;
                    at += 1;
                }
            }
        }
        Ok(at)
    }

    /// Bytes of an incomplete record at the end.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }
}

/// A warning about bytes an input held that were no records, if any.
pub fn damage_warning(what: &str, records: &Records) -> Option<String> {
    let mut parts = Vec::new();
    if let Some((offset, invalid)) = records.first_bad {
        let found = match invalid {
            Invalid::Magic(magic) => format!("magic {magic:#010x}"),
            Invalid::Cpu(cpu) => format!("a record of CPU {cpu}"),
            Invalid::Torn => "a record cut short".into(),
        };
        parts.push(format!(
            "{} bytes were no blktrace record and were skipped (first at byte {offset}: {found})",
            records.skipped
        ));
    }
    if records.pending() > 0 {
        parts.push(format!(
            "it ends inside a record ({} bytes left over)",
            records.pending()
        ));
    }
    (!parts.is_empty()).then(|| format!("{what}: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record_on;
    use crate::record::Abi;

    #[test]
    fn records_of_both_versions_come_whole_from_any_chunking() {
        let mut s = record_on(Abi::V1, 1, 0, 0, b"ab");
        s.extend(record_on(Abi::V2, 2, 1, 0, b""));
        s.extend([0xee; 5]);
        s.extend(record_on(Abi::V2, 3, 0, 0, b"cdef"));
        for chunk in [1, 7, 48, 64, s.len()] {
            let mut records = Records::default();
            let mut seen = Vec::new();
            for piece in s.chunks(chunk) {
                records
                    .feed(piece, &mut |r| {
                        seen.push((r.abi(), r.sequence(), r.pdu().to_vec()));
                        Ok(())
                    })
                    .unwrap();
            }
            assert_eq!(
                seen,
                [
                    (Abi::V1, 1, b"ab".to_vec()),
                    (Abi::V2, 2, vec![]),
                    (Abi::V2, 3, b"cdef".to_vec())
                ],
                "chunk {chunk}"
            );
            assert_eq!(records.skipped, 5, "chunk {chunk}");
            assert_eq!(records.pending(), 0);
            let warning = damage_warning("x", &records).unwrap();
            assert!(
                warning.contains("5 bytes") && warning.contains("byte 114"),
                "{warning}"
            );
        }
    }

    #[test]
    fn a_name_finds_its_cpu_files_in_cpu_order() {
        let dir = std::env::temp_dir().join(format!("relay-blktrace-input-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for cpu in [10, 2, 0] {
            std::fs::write(dir.join(format!("sda.blktrace.{cpu}")), b"").unwrap();
        }
        std::fs::write(dir.join("sda.blktrace.x"), b"").unwrap();
        std::fs::write(dir.join("sdab.blktrace.1"), b"").unwrap();
        let name = dir.join("sda");
        let input = Input::resolve(name.to_str().unwrap()).unwrap();
        let files: Vec<String> = input
            .files()
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            files,
            ["sda.blktrace.0", "sda.blktrace.2", "sda.blktrace.10"]
        );
        assert_eq!(input.device_name().as_deref(), Some("sda"));
        let file = dir.join("sda.blktrace.2");
        assert_eq!(
            Input::resolve(file.to_str().unwrap()).unwrap(),
            Input::File(file)
        );
        assert_eq!(Input::resolve("-").unwrap(), Input::Stdin);
        assert!(Input::resolve(dir.join("none").to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
