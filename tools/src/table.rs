//! Plain-text tables for terminals: a header row, columns padded to their widest cell, the
//! first column left-aligned and the others right-aligned (they hold numbers).

use std::fmt;

/// A table built row by row, printed with [`fmt::Display`].
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
    left_columns: usize,
}

impl Table {
    /// A table with these column headers; the first `left_columns` columns are text
    /// (left-aligned), the rest numbers (right-aligned).
    pub fn new(headers: &[&str], left_columns: usize) -> Table {
        Table { rows: vec![headers.iter().map(|h| h.to_string()).collect()], left_columns }
    }

    /// Appends a row; missing cells print empty.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Rows below the header.
    pub fn len(&self) -> usize {
        self.rows.len() - 1
    }

    /// Whether there are no rows below the header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max())
            .map(Option::unwrap_or_default)
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, width) in widths.iter().enumerate() {
                let cell = row.get(c).map(String::as_str).unwrap_or("");
                if c > 0 {
                    line.push_str("  ");
                }
                if c < self.left_columns {
                    line.push_str(&format!("{cell:<width$}"));
                } else {
                    line.push_str(&format!("{cell:>width$}"));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&["NAME", "N"], 1);
        t.row(vec!["telemetry".into(), "7".into()]);
        t.row(vec!["x".into(), "1234".into()]);
        assert_eq!(t.to_string(), "NAME          N\ntelemetry     7\nx          1234\n");
        assert_eq!(t.len(), 2);
    }
}
