//! Reading and writing `.env` files for `config:pull` and `config:push`.
//!
//! The dialect is the common one (Heroku, foreman, docker compose): `KEY=value` lines, `#`
//! comments, an optional `export ` prefix, single quotes taken literally, double quotes with
//! backslash escapes (and possibly spanning lines). Values are never expanded: `$X` stays `$X`.

use anyhow::{Result, bail};

use crate::parse::validate_key;

/// Parses a `.env` file into its `(key, value)` pairs, in file order. A key given twice keeps
/// both entries; the caller decides (collecting into a map keeps the last, as shells do).
pub fn parse(text: &str) -> Result<Vec<(String, String)>> {
    Parser { chars: text.chars().collect(), pos: 0, line: 1 }.entries()
}

/// Renders pairs as a `.env` file, one `KEY=value` a line, quoting values that need it so that
/// [`parse`] gives back exactly the same pairs.
pub fn render<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs.into_iter().map(|(key, value)| format!("{key}={}\n", quote(value))).collect()
}

/// Quotes a value when it would not survive unquoted: white space (which would be trimmed or
/// end the value), quotes, `#` (a comment), `\`, `$` (expanded by other tools) or control
/// characters. Single quotes are preferred because they are literal everywhere; double quotes
/// with escapes are used when the value holds a single quote or a control character.
pub fn quote(value: &str) -> String {
    let special = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '#' | '\\' | '$');
    if !value.chars().any(special) {
        return value.to_owned();
    }
    if !value.chars().any(|c| c == '\'' || c.is_control()) {
        return format!("'{value}'");
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A hand-written scanner: quoted values may span lines, so the file is not split into lines
/// first. `line` is kept for error messages.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skips spaces and tabs (not newlines).
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
    }

    fn skip_to_line_end(&mut self) {
        while let Some(c) = self.bump() {
            if c == '\n' {
                break;
            }
        }
    }

    fn entries(mut self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            }
            match self.peek() {
                None => return Ok(out),
                Some('#') => self.skip_to_line_end(),
                Some(_) => out.push(self.entry()?),
            }
        }
    }

    fn entry(&mut self) -> Result<(String, String)> {
        let line = self.line;
        let mut key = self.word();
        if key == "export" && matches!(self.peek(), Some(' ' | '\t')) {
            self.skip_blanks();
            key = self.word();
        }
        self.skip_blanks();
        if self.bump() != Some('=') {
            bail!("line {line}: expected KEY=value");
        }
        validate_key(&key).map_err(|e| anyhow::anyhow!("line {line}: {e}"))?;
        self.skip_blanks();
        let value = match self.peek() {
            Some('\'' | '"') => self.quoted(line)?,
            _ => return Ok((key, self.unquoted())),
        };
        // After a closing quote only blanks and a comment may follow on that line.
        self.skip_blanks();
        match self.peek() {
            None | Some('\n') => {}
            Some('#') => self.skip_to_line_end(),
            Some(_) => bail!("line {}: unexpected text after the closing quote of {key}", self.line),
        }
        Ok((key, value))
    }

    /// Reads up to `=`, white space or the end of the line.
    fn word(&mut self) -> String {
        let mut word = String::new();
        while let Some(c) = self.peek().filter(|c| *c != '=' && !c.is_whitespace()) {
            word.push(c);
            self.bump();
        }
        word
    }

    /// An unquoted value runs to the end of the line; `#` after white space starts a comment.
    fn unquoted(&mut self) -> String {
        let mut value = String::new();
        while let Some(c) = self.peek().filter(|c| *c != '\n') {
            if c == '#' && value.ends_with([' ', '\t']) {
                self.skip_to_line_end();
                break;
            }
            value.push(c);
            self.bump();
        }
        value.trim_end().to_owned()
    }

    /// A value from its opening quote to the matching closing one, which may be lines later.
    /// Only double quotes know escapes; single quotes keep everything as written.
    fn quoted(&mut self, line: usize) -> Result<String> {
        let double = self.bump() == Some('"');
        let (quote, name) = if double { ('"', "double") } else { ('\'', "single") };
        let mut value = String::new();
        loop {
            match self.bump() {
                None => bail!("line {line}: unterminated {name} quote"),
                Some(c) if c == quote => return Ok(value),
                Some('\\') if double => match self.bump() {
                    None => bail!("line {line}: unterminated {name} quote"),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some(c @ ('"' | '\\' | '$' | '\'')) => value.push(c),
                    // Unknown escapes are kept as written, as most dotenv readers do.
                    Some(c) => {
                        value.push('\\');
                        value.push(c);
                    }
                },
                Some(c) => value.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn parses_the_common_dialect() {
        let text = "\
# a comment
FOO=bar
export EXPORTED=yes
  SPACED = around  
URL=postgres://u:p@h/db?a=b&c=d
EMPTY=
SINGLE='it has $HOME and \\n literally'
DOUBLE=\"line1\\nline2 \\\"quoted\\\"\"
HASH=a#b
INLINE=value # trailing comment
QUOTED_HASH='a # b' # comment
MULTI=\"first
second\"
CRLF=x\r
";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[
                ("FOO", "bar"),
                ("EXPORTED", "yes"),
                ("SPACED", "around"),
                ("URL", "postgres://u:p@h/db?a=b&c=d"),
                ("EMPTY", ""),
                ("SINGLE", "it has $HOME and \\n literally"),
                ("DOUBLE", "line1\nline2 \"quoted\""),
                ("HASH", "a#b"),
                ("INLINE", "value"),
                ("QUOTED_HASH", "a # b"),
                ("MULTI", "first\nsecond"),
                ("CRLF", "x"),
            ])
        );
    }

    #[test]
    fn export_as_a_key_name_still_works() {
        assert_eq!(parse("export=1\n").unwrap(), pairs(&[("export", "1")]));
    }

    #[test]
    fn refuses_malformed_files_with_line_numbers() {
        for (text, want) in [
            ("FOO=bar\nNOEQUALS\n", "line 2: expected KEY=value"),
            ("\n\n1BAD=x", "line 3: invalid config key '1BAD'"),
            ("A='open", "line 1: unterminated single quote"),
            ("A=\"open\\", "line 1: unterminated double quote"),
            ("A='x' y", "line 1: unexpected text"),
            ("BAD-KEY=1", "invalid config key"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn round_trips_awkward_values() {
        let values = [
            "plain",
            "",
            "with space",
            " leading and trailing ",
            "a=b=c",
            "it's",
            "say \"hi\"",
            "both ' and \"",
            "hash # here",
            "#start",
            "line1\nline2",
            "tab\there",
            "cr\rhere",
            "back\\slash",
            "dollar $HOME ${X}",
            "mixed 'single' \\ \"double\" \n $x # y",
            "ünïcödé ✓",
        ];
        let list: Vec<(String, String)> =
            values.iter().enumerate().map(|(i, v)| (format!("KEY_{i}"), (*v).to_owned())).collect();
        let text = render(list.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(parse(&text).unwrap(), list, "rendered:\n{text}");
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("simple"), "simple");
        assert_eq!(quote("a=b"), "a=b");
        assert_eq!(quote("two words"), "'two words'");
        assert_eq!(quote("it's"), "\"it's\"");
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        assert_eq!(render([("A", "1"), ("B", "x y")]), "A=1\nB='x y'\n");
    }
}
