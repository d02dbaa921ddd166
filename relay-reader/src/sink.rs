//! Where recorded sub-buffers go: per-CPU files, one file, or stdout.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::subbuf::SubBuf;
use crate::{Error, Result};

/// A destination for sub-buffer data.
pub trait Sink {
    /// Stores one sub-buffer's data.
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()>;
    /// Flushes everything to its destination.
    fn finish(&mut self) -> Result<()>;
}

/// One file per CPU, `<dir>/<prefix><cpu>`, as relay-apps and blktrace name them.
#[derive(Debug)]
pub struct PerCpuFiles {
    dir: PathBuf,
    prefix: String,
    files: BTreeMap<u32, BufWriter<File>>,
}

impl PerCpuFiles {
    /// Writes `<dir>/<prefix><cpu>` files, creating `dir` if needed.
    pub fn create(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create directory", e))?;
        Ok(PerCpuFiles {
            dir,
            prefix: prefix.into(),
            files: BTreeMap::new(),
        })
    }

    /// Path of the file for `cpu`.
    pub fn path_of(&self, cpu: u32) -> PathBuf {
        self.dir.join(format!("{}{cpu}", self.prefix))
    }
}

impl Sink for PerCpuFiles {
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()> {
        let path = self.path_of(sb.cpu);
        let file = match self.files.entry(sb.cpu) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let f = File::create(&path).map_err(|e| Error::io(&path, "create", e))?;
                v.insert(BufWriter::with_capacity(1 << 20, f))
            }
        };
        file.write_all(sb.data).map_err(|source| Error::Sink {
            target: path.display().to_string(),
            source,
        })
    }

    fn finish(&mut self) -> Result<()> {
        for (cpu, file) in &mut self.files {
            let target = self.dir.join(format!("{}{cpu}", self.prefix));
            file.flush()
                .and_then(|()| file.get_ref().sync_data())
                .map_err(|source| Error::Sink {
                    target: target.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Everything into one stream (a file or stdout), sub-buffers in the order
/// they were read.
#[derive(Debug)]
pub struct OneStream<W: Write> {
    name: String,
    out: BufWriter<W>,
}

impl OneStream<File> {
    /// Writes to the file `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).map_err(|e| Error::io(path, "create", e))?;
        Ok(OneStream {
            name: path.display().to_string(),
            out: BufWriter::with_capacity(1 << 20, f),
        })
    }
}

impl OneStream<std::io::Stdout> {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        OneStream {
            name: "standard output".into(),
            out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
        }
    }
}

impl<W: Write> Sink for OneStream<W> {
    fn write(&mut self, sb: &SubBuf<'_>) -> Result<()> {
        self.out.write_all(sb.data).map_err(|source| Error::Sink {
            target: self.name.clone(),
            source,
        })
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| Error::Sink {
            target: self.name.clone(),
            source,
        })
    }
}
