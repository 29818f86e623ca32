//! Which images a Dockerfile builds from, read the way the engine reads it (continuation lines,
//! comments, the `escape` directive, global `ARG` defaults), so the builder can allow or refuse
//! each one before anything runs, and then rewrite the Dockerfile so the engine builds from
//! exactly the images the builder resolved (by full image id) and never looks a name up itself.
//!
//! An image the engine would resolve is named in `FROM`, `COPY --from=` / `ADD --from=` (an
//! image rather than an earlier stage), `RUN --mount=…from=` and an `ONBUILD` of those. A name
//! that cannot be known before the build (a build argument without a default, other shell
//! forms) is refused rather than guessed.

use std::collections::HashMap;

/// Where in the Dockerfile an image is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// `FROM <image>` of stage number `stage`.
    From { stage: usize },
    /// `COPY --from=<image>` or `ADD --from=<image>`.
    CopyFrom,
}

/// An image the Dockerfile builds from (not a stage, not `scratch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRef {
    /// The 1-based line the instruction starts on.
    pub line: usize,
    /// The instruction as written (continuations joined), for messages.
    pub instruction: String,
    /// The image name, build arguments substituted.
    pub image: String,
    pub site: Site,
}

/// A Dockerfile read for its images.
#[derive(Debug, Clone)]
pub struct Parsed {
    lines: Vec<String>,
    instructions: Vec<Instruction>,
    pub bases: Vec<BaseRef>,
    /// Remote sources of `ADD` (`http://…`, `https://…`, git URLs): the engine fetches them.
    pub add_urls: Vec<(usize, String)>,
}

#[derive(Debug, Clone)]
struct Instruction {
    /// 0-based index of its first and last physical line.
    first: usize,
    last: usize,
    text: String,
    /// Index into `bases` of the images it names, with the exact token to replace.
    refs: Vec<(usize, String)>,
}

fn refuse(line: usize, instruction: &str, why: &str) -> String {
    let shown: String = instruction.chars().take(120).collect();
    format!("Dockerfile line {line}: `{shown}`: {why}")
}

/// Reads the Dockerfile, refusing what cannot be known statically.
pub fn parse(dockerfile: &str) -> Result<Parsed, String> {
    let lines: Vec<String> = dockerfile.lines().map(str::to_owned).collect();
    let escape = escape_char(&lines);
    let mut instructions = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in lines.iter().enumerate() {
        let trimmed = raw.trim_start();
        // Comments are dropped, even between continuation lines (the engine does the same).
        if trimmed.starts_with('#') || (current.is_none() && trimmed.is_empty()) {
            continue;
        }
        let body = raw.trim_end();
        let (part, continues) = match body.strip_suffix(escape) {
            Some(p) => (p, true),
            None => (body, false),
        };
        let (first, mut text) = current.take().unwrap_or((i, String::new()));
        text.push_str(part);
        if continues {
            current = Some((first, text));
        } else {
            instructions.push(Instruction { first, last: i, text, refs: Vec::new() });
        }
    }
    if let Some((first, text)) = current {
        let last = lines.len().saturating_sub(1);
        instructions.push(Instruction { first, last, text, refs: Vec::new() });
    }

    let mut args: HashMap<String, Option<String>> = HashMap::new();
    let mut stages: Vec<Option<String>> = Vec::new();
    let mut bases = Vec::new();
    let mut add_urls = Vec::new();
    for ins in &mut instructions {
        let line = ins.first + 1;
        let text = ins.text.trim().to_owned();
        let mut words = text.split_whitespace();
        let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
        let rest: Vec<&str> = words.collect();
        let (keyword, rest) = if keyword == "ONBUILD" {
            let inner = rest.first().map(|w| w.to_ascii_uppercase()).unwrap_or_default();
            if rest.iter().any(|w| w.to_ascii_lowercase().starts_with("--from=") || w.contains("from="))
                || inner == "FROM"
            {
                return Err(refuse(line, &text, "an ONBUILD that names another image is not allowed"));
            }
            (inner, rest.get(1..).unwrap_or_default().to_vec())
        } else {
            (keyword, rest)
        };
        match keyword.as_str() {
            "ARG" if stages.is_empty() => {
                for word in &rest {
                    let (name, value) = match word.split_once('=') {
                        Some((n, v)) => (n, Some(unquote(v).to_owned())),
                        None => (*word, None),
                    };
                    args.insert(name.to_owned(), value);
                }
            }
            "FROM" => {
                let mut it = rest.iter().skip_while(|w| w.starts_with("--"));
                let Some(written) = it.next() else {
                    return Err(refuse(line, &text, "FROM names no image"));
                };
                let name = match (it.next(), it.next()) {
                    (Some(kw), Some(n)) if kw.eq_ignore_ascii_case("AS") => Some(n.to_ascii_lowercase()),
                    (None, None) => None,
                    _ => return Err(refuse(line, &text, "expected `FROM <image> [AS <name>]`")),
                };
                let image = substitute(written, &args).map_err(|why| refuse(line, &text, &why))?;
                let lower = image.to_ascii_lowercase();
                let is_stage = stages.iter().flatten().any(|s| *s == lower);
                if !is_stage && !lower.eq_ignore_ascii_case("scratch") {
                    check_name(&image).map_err(|why| refuse(line, &text, &why))?;
                    ins.refs.push((bases.len(), (*written).to_owned()));
                    bases.push(BaseRef {
                        line,
                        instruction: text.clone(),
                        image,
                        site: Site::From { stage: stages.len() },
                    });
                }
                stages.push(name);
            }
            "COPY" | "ADD" | "RUN" => {
                if stages.is_empty() {
                    return Err(refuse(line, &text, "instructions must come after a FROM"));
                }
                for word in rest.iter().take_while(|w| w.starts_with("--")) {
                    let lower = word.to_ascii_lowercase();
                    if lower.starts_with("--mount") && lower.contains("from=") {
                        return Err(refuse(line, &text, "RUN --mount from another image is not allowed"));
                    }
                    let Some(from) = word.get("--from=".len()..).filter(|_| lower.starts_with("--from="))
                    else {
                        continue;
                    };
                    if from.contains('$') {
                        return Err(refuse(
                            line,
                            &text,
                            "--from with a build argument cannot be checked before the build; write the stage or image out",
                        ));
                    }
                    let earlier_stage = from.parse::<usize>().is_ok_and(|n| n < stages.len())
                        || stages.iter().flatten().any(|s| s.eq_ignore_ascii_case(from));
                    if earlier_stage {
                        continue;
                    }
                    check_name(from).map_err(|why| refuse(line, &text, &why))?;
                    ins.refs.push((bases.len(), (*word).to_owned()));
                    bases.push(BaseRef {
                        line,
                        instruction: text.clone(),
                        image: from.to_owned(),
                        site: Site::CopyFrom,
                    });
                }
                if keyword == "ADD" {
                    let sources = rest.iter().skip_while(|w| w.starts_with("--"));
                    for src in sources {
                        let src = src.trim_matches(|c| c == '"' || c == '[' || c == ']' || c == ',');
                        let lower = src.to_ascii_lowercase();
                        if lower.contains("://") || lower.starts_with("git@") {
                            add_urls.push((line, src.to_owned()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Parsed { lines, instructions, bases, add_urls })
}

/// The escape character (`\`, or a backtick by the `# escape=` directive at the top).
fn escape_char(lines: &[String]) -> char {
    for line in lines {
        let Some(directive) = line.trim().strip_prefix('#') else { break };
        let Some((key, value)) = directive.split_once('=') else { break };
        if key.trim().eq_ignore_ascii_case("escape") && value.trim() == "`" {
            return '`';
        }
    }
    '\\'
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// Substitutes `$NAME` and `${NAME}` by their global `ARG` default (the builder passes no build
/// arguments, so the default is what the engine would use).
fn substitute(word: &str, args: &HashMap<String, Option<String>>) -> Result<String, String> {
    if !word.contains('$') {
        return Ok(word.to_owned());
    }
    let mut out = String::new();
    let mut rest = word;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, used) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or("an unclosed ${")?;
            (&inner[..end], end + 2)
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{word}` cannot be resolved before the build; write the image name out"));
        }
        match args.get(name) {
            Some(Some(value)) => out.push_str(value),
            _ => {
                return Err(format!(
                    "the image name uses ${name}, which has no default in an ARG before the first FROM; \
                     the builder resolves base images before building, so write the name out"
                ));
            }
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An image reference's characters: anything else is no image name.
fn check_name(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && !image.starts_with('-')
        && image.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    if ok { Ok(()) } else { Err(format!("`{image}` is not an image name")) }
}

impl Parsed {
    /// The Dockerfile with every image replaced by what `resolved` gives for it (an image id),
    /// line numbers kept so the engine's errors still point at the user's lines.
    pub fn rewrite(&self, resolved: &[String]) -> String {
        let mut lines = self.lines.clone();
        for ins in self.instructions.iter().filter(|i| !i.refs.is_empty()) {
            let mut text = ins.text.clone();
            for (index, token) in &ins.refs {
                let Some(id) = resolved.get(*index) else { continue };
                let replacement = if token.to_ascii_lowercase().starts_with("--from=") {
                    format!("--from={id}")
                } else {
                    id.clone()
                };
                text = replace_word(&text, token, &replacement);
            }
            for (n, line) in lines.iter_mut().enumerate().take(ins.last + 1).skip(ins.first) {
                *line = if n == ins.first { text.clone() } else { String::new() };
            }
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

/// Replaces the first whitespace-separated word equal to `word`.
fn replace_word(text: &str, word: &str, by: &str) -> String {
    let mut start = 0;
    for piece in text.split_inclusive(char::is_whitespace) {
        if piece.trim_end() == word {
            return format!("{}{by}{}", &text[..start], &text[start + word.len()..]);
        }
        start += piece.len();
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(df: &str) -> Vec<String> {
        parse(df).unwrap().bases.into_iter().map(|b| b.image).collect()
    }

    #[test]
    fn every_image_is_found_and_stages_are_not_images() {
        let df = "# escape=\\\nARG BASE=deis/stack\nFROM --platform=linux/amd64 ${BASE} AS build\nRUN make\nFROM scratch\nFROM build\nfrom registry:5000/base:1 as final\nCOPY --from=build /a /b\nCOPY --from=0 /a /b\nCOPY --from=registry:5000/other:git-1 /etc /x\nFROM $BASE\n";
        assert_eq!(
            images(df),
            vec!["deis/stack", "registry:5000/base:1", "registry:5000/other:git-1", "deis/stack"]
        );
    }

    #[test]
    fn continuations_and_comments_are_read_like_the_engine() {
        let df = "FROM \\\n  # a comment\n  ab\nRUN cat /x\n";
        let p = parse(df).unwrap();
        assert_eq!(p.bases[0].image, "ab");
        assert_eq!(p.bases[0].line, 1);
        let df = "# escape=`\nFROM `\n  cd AS x\n";
        assert_eq!(images(df), vec!["cd"]);
    }

    #[test]
    fn what_cannot_be_known_before_the_build_is_refused_naming_the_line() {
        for (df, line) in [
            ("FROM $BASE\n", 1),
            ("ARG BASE\nFROM ${BASE}\n", 2),
            ("FROM deis/stack\nCOPY --from=$X /a /b\n", 2),
            ("FROM deis/stack\nRUN --mount=type=bind,from=other,target=/x cat /x\n", 2),
            ("FROM deis/stack\nONBUILD COPY --from=other /a /b\n", 2),
            ("FROM ${BASE:-x}\n", 1),
            ("FROM\n", 1),
            ("FROM a b c\n", 1),
            ("RUN x\n", 1),
        ] {
            let e = parse(df).unwrap_err();
            assert!(e.starts_with(&format!("Dockerfile line {line}:")), "{df:?}: {e}");
        }
    }

    #[test]
    fn rewriting_puts_the_resolved_ids_in_place_and_keeps_line_numbers() {
        let df = "ARG B=deis/stack\nFROM $B AS one\nFROM \\\n  reg:5000/app:git-1\nCOPY --from=one /a /b\nCOPY --from=reg:5000/app:git-1 /c /d\nCMD x\n";
        let p = parse(df).unwrap();
        assert_eq!(p.bases.len(), 3);
        let out = p.rewrite(&["sha256:aa".into(), "sha256:bb".into(), "sha256:cc".into()]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], "FROM sha256:aa AS one");
        assert_eq!(lines[2], "FROM   sha256:bb");
        assert_eq!(lines[3], "");
        assert_eq!(lines[4], "COPY --from=one /a /b");
        assert_eq!(lines[5], "COPY --from=sha256:cc /c /d");
        assert_eq!(lines[6], "CMD x");
    }

    #[test]
    fn add_urls_are_found() {
        let p = parse("FROM deis/stack\nADD --chown=1 http://127.0.0.1:2379/v2/keys /k\nADD a b\n").unwrap();
        assert_eq!(p.add_urls, vec![(2, "http://127.0.0.1:2379/v2/keys".to_owned())]);
    }
}
