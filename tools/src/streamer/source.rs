//! Rows of a CSV file as [`Item`]s: a prepared record with its line number, or a skipped
//! row with its reason. Reading is schema-agnostic (the header decides, see
//! [`Schema`]), and only rows of this instance's [`Shard`] are converted. Every instance
//! reads every row; for a row of another shard only its identity cells are looked at (to
//! hash its GPU id).
//!
//! The `csv` crate does the quoting (quoted commas, `""`, CRLF, a UTF-8 BOM), reads bytes
//! (so one bad UTF-8 cell skips one row, not the file), and tolerates ragged rows, which
//! are skipped here with their line number. Lines starting with `#` are comments.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::convert::{convert, shard_key, Prepared, Skip, SkipReason};
use super::line_bound::{LineBound, HEADER_TOO_LONG};
use super::schema::Schema;
use super::{key_hash, Shard};

/// One data row of this shard.
#[derive(Debug, Clone)]
pub enum Item {
    /// A record ready to publish.
    Record {
        /// Line of the file where the row starts (1-based, the header is line 1).
        line: u64,
        /// The record.
        prepared: Arc<Prepared>,
        /// Whether its `labels_raw` was partly malformed (a warning).
        labels_malformed: bool,
    },
    /// A row that is not published.
    Skipped {
        /// Line of the file where the row starts.
        line: u64,
        /// Why.
        skip: Skip,
    },
}

/// Why a file cannot be read at all.
#[derive(Debug)]
pub enum SourceError {
    /// The file cannot be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has no header row.
    Empty,
    /// The header cannot be used (not UTF-8, or no column names).
    Header(String),
    /// Reading failed part way.
    Read {
        /// Line reached.
        line: u64,
        /// Why.
        source: csv::Error,
    },
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Open { path, source } => {
                write!(f, "cannot open {}: {source}", path.display())
            }
            SourceError::Empty => f.write_str("empty file: no header row"),
            SourceError::Header(why) => write!(f, "bad header row: {why}"),
            SourceError::Read { line, source } => {
                write!(f, "read failed near line {line}: {source}")
            }
        }
    }
}

impl std::error::Error for SourceError {}

/// A CSV file being read.
#[derive(Debug)]
pub struct CsvSource<R> {
    reader: csv::Reader<LineBound<R>>,
    schema: Schema,
    row: csv::ByteRecord,
    rows_total: u64,
    shard: Shard,
    row_bytes_max: usize,
}

impl CsvSource<std::fs::File> {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    /// [`SourceError`] if the file cannot be opened or its header is missing or unusable.
    pub fn open(path: &Path, shard: Shard, row_bytes_max: usize) -> Result<Self, SourceError> {
        let file = std::fs::File::open(path)
            .map_err(|source| SourceError::Open { path: path.to_path_buf(), source })?;
        CsvSource::new(file, shard, row_bytes_max)
    }
}

impl<R: Read> CsvSource<R> {
    /// Reads the header from `input`.
    ///
    /// # Errors
    /// As [`CsvSource::open`].
    pub fn new(input: R, shard: Shard, row_bytes_max: usize) -> Result<Self, SourceError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(LineBound::new(input, row_bytes_max));
        let header = reader.byte_headers().map_err(|source| match source.kind() {
            csv::ErrorKind::Io(e) if e.to_string() == HEADER_TOO_LONG => SourceError::Header(
                format!("longer than {row_bytes_max} bytes (--max-row-bytes); is this a CSV file?"),
            ),
            _ => SourceError::Read { line: 1, source },
        })?;
        if header.is_empty() {
            return Err(SourceError::Empty);
        }
        let mut names = Vec::with_capacity(header.len());
        for (i, cell) in header.iter().enumerate() {
            let name = std::str::from_utf8(cell)
                .map_err(|_| SourceError::Header(format!("column {} is not UTF-8", i + 1)))?;
            names.push(name.trim_start_matches('\u{feff}').to_string());
        }
        let schema = Schema::from_header(&names).map_err(|e| SourceError::Header(e.to_string()))?;
        Ok(CsvSource {
            reader,
            schema,
            row: csv::ByteRecord::new(),
            rows_total: 0,
            shard,
            row_bytes_max,
        })
    }

    /// What the header says.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Data rows read so far, of every shard.
    pub fn rows_total(&self) -> u64 {
        self.rows_total
    }

    /// The next row of this shard, or `None` at the end of the file.
    ///
    /// # Errors
    /// [`SourceError::Read`] if reading fails (an I/O error); the file should not be read
    /// further.
    pub fn next_item(&mut self) -> Result<Option<Item>, SourceError> {
        loop {
            if let Some(long) = self.reader.get_mut().take_skipped() {
                let index = self.rows_total;
                self.rows_total += 1;
                if self.shard.count > 1 && !self.shard.owns_row(None, index) {
                    continue;
                }
                let detail = format!("{} bytes, limit {}", long.bytes, self.row_bytes_max);
                let skip = Skip::new(SkipReason::RowTooLarge, detail);
                return Ok(Some(Item::Skipped { line: long.line, skip }));
            }
            let more = self.reader.read_byte_record(&mut self.row).map_err(|source| {
                let line = source.position().map_or(0, |p| p.line());
                SourceError::Read { line, source }
            })?;
            if !more {
                return Ok(None);
            }
            let index = self.rows_total;
            self.rows_total += 1;
            if self.shard.count > 1 && !self.shard.owns_row(self.row_key_hash(), index) {
                continue;
            }
            let line = self.row.position().map_or(0, |p| p.line());
            return Ok(Some(match self.convert_row() {
                Ok((prepared, labels_malformed)) => {
                    Item::Record { line, prepared: Arc::new(prepared), labels_malformed }
                }
                Err(skip) => Item::Skipped { line, skip },
            }));
        }
    }

    /// The hash of the current row's GPU id, which picks its shard; `None` for a ragged
    /// row or one without a valid id (it goes by row number).
    fn row_key_hash(&self) -> Option<u32> {
        if self.row.len() != self.schema.columns.len() {
            return None;
        }
        let cell =
            |i: usize| self.row.get(i).and_then(|c| std::str::from_utf8(c).ok()).map(str::trim);
        shard_key(&self.schema, cell).map(|key| key_hash(&key))
    }

    fn convert_row(&self) -> Result<(Prepared, bool), Skip> {
        let expected = self.schema.columns.len();
        if self.row.len() != expected {
            let detail = format!("expected {expected} cells, got {}", self.row.len());
            return Err(Skip::new(SkipReason::RaggedRow, detail));
        }
        let bytes = self.row.as_slice().len();
        if bytes > self.row_bytes_max {
            let detail = format!("{bytes} bytes, limit {}", self.row_bytes_max);
            return Err(Skip::new(SkipReason::RowTooLarge, detail));
        }
        let mut cells = Vec::with_capacity(expected);
        for (i, cell) in self.row.iter().enumerate() {
            let text = std::str::from_utf8(cell).map_err(|_| {
                let column = &self.schema.columns[i].header;
                Skip::new(SkipReason::BadUtf8, format!("column {column:?} is not UTF-8"))
            })?;
            cells.push(text.trim());
        }
        let converted = convert(&self.schema, &cells)?;
        Ok((Prepared::new(&converted.record), converted.labels_malformed))
    }
}
