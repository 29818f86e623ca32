//! Plain-text layout in Deis v1's style: `=== title` headers and space-aligned columns, with no
//! box drawing, so output stays easy to read and to grep.

/// Lays out rows in columns separated by two spaces, each as wide as its widest cell; the last
/// column is not padded, and every line ends with a newline.
pub fn columns<R: AsRef<[String]>>(rows: &[R]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells = row.as_ref();
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `=== title`, the header line of every listing.
pub fn header(title: &str) -> String {
    format!("=== {title}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["v10".to_owned(), "2026-11-27T10:00:00Z".to_owned(), "alice set FOO".to_owned()],
            vec!["v9".to_owned(), "2026-11-26T09:00:00Z".to_owned(), "".to_owned()],
        ];
        assert_eq!(columns(&rows), "v10  2026-11-27T10:00:00Z  alice set FOO\nv9   2026-11-26T09:00:00Z\n");
        assert_eq!(columns::<Vec<String>>(&[]), "");
    }
}
