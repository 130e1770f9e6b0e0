//! Output writing, for every stage: each file goes to a hidden temporary sibling, is
//! synced, then renamed over the target, so a reader (or the next run) sees the old
//! file or the new one, never a mix, and a failed run leaves earlier outputs untouched.
//! Also the Parquet tables the stages pass to each other: written with their
//! key-value metadata, and read back.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Writes the temporary sibling of `path` and syncs it, keeping the permissions of the
/// file it will replace.
fn stage(path: &Path, bytes: &[u8]) -> Result<PathBuf, OutputError> {
    let tmp = tmp_sibling(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if let Ok(meta) = fs::metadata(path) {
            fs::set_permissions(&tmp, meta.permissions())?;
        }
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
    let mut staged: Vec<(PathBuf, &Path)> = Vec::new();
    for (path, bytes) in files {
        match stage(path, bytes) {
            Ok(tmp) => staged.push((tmp, path)),
            Err(e) => {
                for (tmp, _) in &staged {
                    let _ = fs::remove_file(tmp);
                }
                return Err(e);
            }
        }
    }
    let mut staged = staged.into_iter();
    while let Some((tmp, path)) = staged.next() {
        if let Err(e) = publish(&tmp, path) {
            for (tmp, _) in staged {
                let _ = fs::remove_file(tmp);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Writes a DataFrame as Parquet (zstd, statistics) atomically, with key-value metadata.
pub fn write_parquet_atomic(
    df: &mut polars::prelude::DataFrame,
    path: &Path,
    metadata: Vec<(String, String)>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use polars::io::parquet::write::KeyValueMetadata;
    use polars::prelude::*;
    let tmp = tmp_sibling(path);
    let result = (|| -> anyhow::Result<()> {
        let file = fs::File::create(&tmp)?;
        ParquetWriter::new(std::io::BufWriter::new(file))
            .with_compression(ParquetCompression::Zstd(None))
            .with_statistics(StatisticsOptions::default())
            .with_key_value_metadata(Some(KeyValueMetadata::from_static(metadata)))
            .finish(df)?;
        fs::File::open(&tmp)?.sync_all()?;
        publish(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
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
        .filter(|kv| kv.key.starts_with("breaker_advisor."))
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
}
