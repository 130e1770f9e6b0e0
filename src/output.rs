//! Output writing, for every stage: each file goes to a hidden temporary sibling, is
//! synced, then renamed over the target, so a reader (or the next run) sees the old
//! file or the new one, never a mix, and a failed run leaves earlier outputs untouched.
//! Also the Parquet tables the stages pass to each other: written with their
//! key-value metadata, and read back.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What every key of the tool's Parquet metadata starts with (the dataset's and the
/// metrics'); `parquet_metadata` reads only these.
pub const META_PREFIX: &str = "breaker_advisor.";

/// A file that could not be written, named.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct OutputError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A hidden temporary name beside `path`, unique to this process.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Gives the temporary sibling `tmp` the permissions of the file at `path` it will
/// replace, if there is one.
fn keep_permissions(tmp: &Path, path: &Path) -> std::io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) => fs::set_permissions(tmp, meta.permissions()),
        Err(_) => Ok(()),
    }
}

/// Writes the temporary sibling of `path` and syncs it, keeping the permissions of the
/// file it will replace.
fn stage(path: &Path, bytes: &[u8]) -> Result<PathBuf, OutputError> {
    let tmp = tmp_sibling(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        keep_permissions(&tmp, path)?;
        f.sync_all()
    })();
    result.map(|()| tmp.clone()).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        OutputError {
            path: path.to_owned(),
            source,
        }
    })
}

/// Renames a staged file over its target and persists the rename.
fn publish(tmp: &Path, path: &Path) -> Result<(), OutputError> {
    fs::rename(tmp, path).map_err(|source| {
        let _ = fs::remove_file(tmp);
        OutputError {
            path: path.to_owned(),
            source,
        }
    })?;
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        // Not every platform can sync a folder.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (see the module doc).
pub fn write_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), OutputError> {
    let tmp = stage(path, bytes.as_ref())?;
    publish(&tmp, path)
}

/// Writes several files: every one is staged and synced before the first rename, so a
/// failure while writing leaves all the targets as they were.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<(), OutputError> {
    let mut staged = Vec::new();
    for (path, bytes) in files {
        // An error drops the files staged so far, which removes them.
        staged.push(Staged {
            tmp: stage(path, bytes)?,
            path: path.to_path_buf(),
        });
    }
    publish_all(staged)
}

/// A file written and synced beside its target, not yet renamed over it. Dropped
/// unpublished, it is removed.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Published, the temporary name is gone and this fails quietly.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Renames staged files over their targets, in order (every one was written in full
/// before the first rename).
pub fn publish_all(staged: Vec<Staged>) -> Result<(), OutputError> {
    for s in &staged {
        // On an error the rest are dropped, which removes them.
        publish(&s.tmp, &s.path)?;
    }
    Ok(())
}

/// Rows per row group of every table the stages write: a fixed number, so a table's
/// bytes do not depend on how its rows came (a frame at once, or host group after host
/// group).
pub const TABLE_ROW_GROUP_ROWS: usize = 131_072;

/// A Parquet table (zstd, statistics, key-value metadata) written part after part into
/// its temporary sibling, in row groups of [`TABLE_ROW_GROUP_ROWS`]: it holds less
/// than one row group beside the part being written. [`TableWriter::finish`] stages it.
pub struct TableWriter {
    path: PathBuf,
    tmp: PathBuf,
    metadata: Vec<(String, String)>,
    writer: Option<polars::io::parquet::write::BatchedWriter<std::io::BufWriter<fs::File>>>,
    /// The rows after the last full row group.
    pending: Option<polars::prelude::DataFrame>,
    rows: usize,
}

impl TableWriter {
    pub fn new(path: &Path, metadata: Vec<(String, String)>) -> TableWriter {
        TableWriter {
            path: path.to_owned(),
            tmp: tmp_sibling(path),
            metadata,
            writer: None,
            pending: None,
            rows: 0,
        }
    }

    /// The rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends the rows of `part` (the schema of the first part).
    pub fn write(&mut self, part: &polars::prelude::DataFrame) -> anyhow::Result<()> {
        use anyhow::Context;
        self.write_rows(part)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn write_rows(&mut self, part: &polars::prelude::DataFrame) -> anyhow::Result<()> {
        use polars::io::parquet::write::KeyValueMetadata;
        use polars::prelude::*;
        if self.writer.is_none() {
            let file = fs::File::create(&self.tmp)?;
            keep_permissions(&self.tmp, &self.path)?;
            let writer = ParquetWriter::new(std::io::BufWriter::new(file))
                .with_compression(ParquetCompression::Zstd(None))
                .with_statistics(StatisticsOptions::default())
                .with_key_value_metadata(Some(KeyValueMetadata::from_static(self.metadata.clone())))
                .batched(part.schema())?;
            self.writer = Some(writer);
        }
        let writer = self.writer.as_mut().expect("created above");
        self.rows += part.height();
        let mut rows = match self.pending.take() {
            Some(mut pending) => {
                pending.vstack_mut(part)?;
                pending
            }
            None => part.clone(),
        };
        let mut start = 0;
        while rows.height() - start >= TABLE_ROW_GROUP_ROWS {
            // One chunk is one row group.
            let mut group = rows.slice(start as i64, TABLE_ROW_GROUP_ROWS);
            group.rechunk_mut_par();
            writer.write_batch(&group)?;
            start += TABLE_ROW_GROUP_ROWS;
        }
        // A copy of the rest, so the part's buffers go.
        rows = rows.slice(start as i64, rows.height() - start);
        rows.rechunk_mut_par();
        self.pending = Some(rows);
        Ok(())
    }

    /// Writes the last row group and the footer, and syncs the file beside its target.
    pub fn finish(mut self) -> anyhow::Result<Staged> {
        use anyhow::Context;
        let staged = Staged {
            tmp: self.tmp.clone(),
            path: self.path.clone(),
        };
        (|| -> anyhow::Result<()> {
            let Some(mut writer) = self.writer.take() else {
                anyhow::bail!("no rows, not even a schema, were given");
            };
            if let Some(rest) = self.pending.take().filter(|r| r.height() > 0) {
                writer.write_batch(&rest)?;
            }
            writer.finish()?;
            // Dropping the writer flushes its buffer.
            drop(writer);
            fs::File::open(&self.tmp)?.sync_all()?;
            Ok(())
        })()
        .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(staged)
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        // Unfinished (an error on the way), the partial file goes; finished, `Staged`
        // owns it.
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a DataFrame as a Parquet table ([`TableWriter`]) atomically.
pub fn write_parquet_atomic(
    df: &polars::prelude::DataFrame,
    path: &Path,
    metadata: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let mut table = TableWriter::new(path, metadata);
    table.write(df)?;
    publish_all(vec![table.finish()?])?;
    Ok(())
}

/// The `breaker_advisor.*` key-value metadata of a Parquet file an earlier stage wrote.
pub fn parquet_metadata(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    use anyhow::Context;
    use polars::prelude::*;
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = ParquetReader::new(file);
    let md = reader.get_metadata()?;
    Ok(md
        .key_value_metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|kv| kv.key.starts_with(META_PREFIX))
        .map(|kv| (kv.key, kv.value.unwrap_or_default()))
        .collect())
}

/// Reads a whole Parquet file an earlier stage wrote.
pub fn read_parquet(path: &Path) -> anyhow::Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let file =
        fs::File::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    anyhow::Context::with_context(ParquetReader::new(file).finish(), || {
        format!("reading {}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_of_several_files_leaves_them_all_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        fs::write(&a, "old").unwrap();
        let missing = dir.path().join("no-such-folder/b.yaml");
        let err = write_all_atomic(&[(&a, b"new"), (&missing, b"new")]).unwrap_err();
        assert_eq!(err.path, missing);
        assert_eq!(fs::read_to_string(&a).unwrap(), "old");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        write_all_atomic(&[(&a, b"new")]).unwrap();
        assert_eq!(fs::read_to_string(&a).unwrap(), "new");
    }

    #[test]
    fn a_table_written_in_parts_is_the_table_written_at_once() {
        use polars::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let n = 2 * TABLE_ROW_GROUP_ROWS + 12_345;
        let df = df!(
            "host" => (0..n).map(|i| format!("host-{:03}", i / 7_000)).collect::<Vec<_>>(),
            "n" => (0..n as i64).map(|i| i * 7 % 1_000).collect::<Vec<_>>(),
        )
        .unwrap();
        let meta = vec![("breaker_advisor.x".to_owned(), "1".to_owned())];
        let whole = dir.path().join("whole.parquet");
        write_parquet_atomic(&df, &whole, meta.clone()).unwrap();
        let parts = dir.path().join("parts.parquet");
        let mut table = TableWriter::new(&parts, meta);
        let mut start = 0;
        for len in [1, 70_000, TABLE_ROW_GROUP_ROWS, 0, 100_000, n] {
            let len = len.min(n - start);
            table.write(&df.slice(start as i64, len)).unwrap();
            start += len;
        }
        assert_eq!(table.rows(), n);
        publish_all(vec![table.finish().unwrap()]).unwrap();
        assert_eq!(fs::read(&parts).unwrap(), fs::read(&whole).unwrap());
        let md = ParquetReader::new(fs::File::open(&parts).unwrap())
            .get_metadata()
            .unwrap()
            .clone();
        let sizes: Vec<usize> = md.row_groups.iter().map(|rg| rg.num_rows()).collect();
        assert_eq!(sizes, [TABLE_ROW_GROUP_ROWS, TABLE_ROW_GROUP_ROWS, 12_345]);
        assert!(read_parquet(&parts).unwrap().equals(&df));
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
    }

    #[test]
    fn a_table_dropped_unfinished_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut table = TableWriter::new(&path, Vec::new());
        table
            .write(&polars::df!("a" => [1i64, 2]).unwrap())
            .unwrap();
        assert!(tmp_sibling(&path).exists());
        drop(table);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let staged = {
            let mut table = TableWriter::new(&path, Vec::new());
            table.write(&polars::df!("a" => [1i64]).unwrap()).unwrap();
            table.finish().unwrap()
        };
        drop(staged);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
