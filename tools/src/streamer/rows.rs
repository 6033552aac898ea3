//! The stream of rows a run publishes: one pass over the input, or (`--loop`) pass after
//! pass. The first pass over a file keeps its prepared records in memory (up to
//! [`CACHE_BYTES_MAX`]), so later passes cost no parsing; a larger file is read again.

use std::path::PathBuf;

use log::info;

use super::source::{CsvSource, Item, SourceError};
use super::{Shard, Source};

/// Most JSON bytes kept from the first pass for replaying.
pub const CACHE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Rows pass after pass. `next` says whether an item comes from the first pass (skips are
/// logged once, counted every time).
pub struct Rows {
    source: Box<dyn Source + Send>,
    file: Option<PathBuf>,
    replay: bool,
    shard: Shard,
    row_bytes_max: usize,
    cache: Option<Vec<Item>>,
    cache_bytes: usize,
    cursor: usize,
    pass: u64,
    items_this_pass: u64,
    rows_in_file: Option<u64>,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows").field("file", &self.file).field("pass", &self.pass).finish()
    }
}

/// Why the rows ended early.
#[derive(Debug)]
pub enum RowsError {
    /// The file has a header and no data rows.
    HeaderOnly,
    /// Reading failed.
    Source(SourceError),
}

impl Rows {
    /// Rows of `source`; `file` is where to read it again when replaying uncached.
    pub fn new(
        source: Box<dyn Source + Send>,
        file: Option<PathBuf>,
        replay: bool,
        shard: Shard,
        row_bytes_max: usize,
    ) -> Rows {
        let cache = (replay && file.is_some()).then(Vec::new);
        Rows {
            source,
            file,
            replay,
            shard,
            row_bytes_max,
            cache,
            cache_bytes: 0,
            cursor: 0,
            pass: 0,
            items_this_pass: 0,
            rows_in_file: None,
        }
    }

    /// Passes begun so far (1 during the first).
    pub fn passes(&self) -> u64 {
        self.pass + 1
    }

    /// The next item and whether it comes from the first pass; `None` when done.
    ///
    /// # Errors
    /// [`RowsError`] for a header-only file or a failed read.
    pub fn next_row(&mut self) -> Result<Option<(Item, bool)>, RowsError> {
        loop {
            if let Some(item) = self.next_of_pass()? {
                self.items_this_pass += 1;
                return Ok(Some((item, self.pass == 0)));
            }
            if self.pass == 0 {
                self.rows_in_file = self.source.rows_total();
                if self.rows_in_file == Some(0) {
                    return Err(RowsError::HeaderOnly);
                }
            }
            if !self.replay || self.items_this_pass == 0 {
                if self.replay {
                    info!("no rows in shard {}: nothing to replay", self.shard);
                }
                return Ok(None);
            }
            self.begin_pass().map_err(RowsError::Source)?;
        }
    }

    fn next_of_pass(&mut self) -> Result<Option<Item>, RowsError> {
        if self.pass > 0 {
            if let Some(cache) = &self.cache {
                let item = cache.get(self.cursor).cloned();
                self.cursor += 1;
                return Ok(item);
            }
        }
        let item = self.source.next_item().map_err(RowsError::Source)?;
        if self.pass == 0 {
            self.keep(&item);
        }
        Ok(item)
    }

    /// Keeps a first-pass item for replaying, unless the cache grew too large.
    fn keep(&mut self, item: &Option<Item>) {
        let (Some(cache), Some(item)) = (&mut self.cache, item) else { return };
        if let Item::Record { prepared, .. } = item {
            self.cache_bytes += prepared.len() + prepared.key.len() + 64;
        }
        if self.cache_bytes > CACHE_BYTES_MAX {
            info!("file larger than {CACHE_BYTES_MAX} bytes of records: each pass reads it again");
            self.cache = None;
            return;
        }
        cache.push(item.clone());
    }

    fn begin_pass(&mut self) -> Result<(), SourceError> {
        self.pass += 1;
        self.items_this_pass = 0;
        self.cursor = 0;
        if self.cache.is_none() {
            if let Some(path) = &self.file {
                self.source = Box::new(CsvSource::open(path, self.shard, self.row_bytes_max)?);
            }
        }
        Ok(())
    }
}
