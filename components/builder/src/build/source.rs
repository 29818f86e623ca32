//! What a pushed tree says about itself, read without running anything: its Procfile, whether it
//! has a Dockerfile, and what a buildpack's `bin/release`
//! printed. Everything here parses user input, so every function refuses bad input with a
//! message and never panics.

use std::collections::BTreeMap;
use std::io::Read;

use bus_schema::ProcessType;

/// The largest Procfile or Dockerfile read (they are a few lines; more is a mistake).
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// What the builder needs to know of a pushed tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The Procfile's text, if the tree has one at its root.
    pub procfile: Option<String>,
    /// The Dockerfile's text, if the tree has one at its root.
    pub dockerfile: Option<String>,
}

impl Source {
    /// Reads the root Procfile and Dockerfile from a tar of the tree (`git archive`).
    pub fn from_tar(tar: &[u8]) -> Result<Self, String> {
        let mut archive = tar::Archive::new(tar);
        let mut source = Source::default();
        let entries = archive.entries().map_err(|e| format!("reading the pushed tree: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("reading the pushed tree: {e}"))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(|e| format!("reading the pushed tree: {e}"))?.into_owned();
            let slot = match path.to_str() {
                Some("Procfile") => &mut source.procfile,
                Some("Dockerfile") => &mut source.dockerfile,
                _ => continue,
            };
            let name = path.display().to_string();
            if entry.size() > MAX_SMALL_FILE {
                return Err(format!("{name} is larger than {MAX_SMALL_FILE} bytes"));
            }
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(|_| format!("{name} is not UTF-8 text"))?;
            *slot = Some(text);
        }
        Ok(source)
    }
}

/// Parses a Procfile: `type: command` lines; blank lines and `#` comments are skipped.
pub fn parse_procfile(text: &str) -> Result<BTreeMap<ProcessType, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, command) = line
            .split_once(':')
            .ok_or_else(|| format!("Procfile line {}: expected `type: command`, got `{line}`", n + 1))?;
        let ptype = ProcessType::parse(name.trim()).map_err(|e| format!("Procfile line {}: {e}", n + 1))?;
        let command = command.trim();
        if command.is_empty() {
            return Err(format!("Procfile line {}: {ptype} has no command", n + 1));
        }
        if out.insert(ptype.clone(), command.to_owned()).is_some() {
            return Err(format!("Procfile line {}: {ptype} is declared twice", n + 1));
        }
    }
    Ok(out)
}

/// The process types of a buildpack's `bin/release` output (YAML). Only the part the platform
/// uses is read: the `default_process_types` mapping of names to one-line commands.
pub fn parse_release(yaml: &str) -> Result<BTreeMap<ProcessType, String>, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in yaml.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') || line.trim() == "---" {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if !indented {
            inside = false;
            if let Some(rest) = line.strip_prefix("default_process_types:") {
                let rest = rest.trim();
                if rest.is_empty() {
                    inside = true;
                } else if rest != "{}" && rest != "~" && rest != "null" {
                    return Err(format!(
                        "bin/release: default_process_types must be a mapping, got `{rest}`"
                    ));
                }
            }
            continue;
        }
        if !inside {
            continue;
        }
        let (name, command) = line
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("bin/release: expected `type: command`, got `{}`", line.trim()))?;
        let ptype = ProcessType::parse(unquote(name.trim())).map_err(|e| format!("bin/release: {e}"))?;
        out.insert(ptype, unquote(command.trim()).to_owned());
    }
    Ok(out)
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(s: &str) -> ProcessType {
        ProcessType::parse(s).unwrap()
    }

    #[test]
    fn procfiles_parse_like_heroku() {
        let p =
            parse_procfile("# a comment\nweb: python app.py --port $PORT\n\nworker:  ./work  \n").unwrap();
        assert_eq!(p.get(&pt("web")).unwrap(), "python app.py --port $PORT");
        assert_eq!(p.get(&pt("worker")).unwrap(), "./work");
        assert!(parse_procfile("web python").unwrap_err().contains("line 1"));
        assert!(parse_procfile("Web_1: x").unwrap_err().contains("Procfile line 1"));
        assert!(parse_procfile("web:").unwrap_err().contains("no command"));
        assert!(parse_procfile("web: a\nweb: b").unwrap_err().contains("twice"));
        assert!(parse_procfile("").unwrap().is_empty());
    }

    #[test]
    fn release_output_gives_default_process_types() {
        let yaml = "---\naddons: []\nconfig_vars:\n  A: b\ndefault_process_types:\n  web: python app.py\n  worker: \"./w --x\"\n";
        let p = parse_release(yaml).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.get(&pt("web")).unwrap(), "python app.py");
        assert_eq!(p.get(&pt("worker")).unwrap(), "./w --x");
        assert!(parse_release("---\ndefault_process_types: {}\n").unwrap().is_empty());
        assert!(parse_release("--- {}\n").unwrap().is_empty());
        assert!(parse_release("").unwrap().is_empty());
        assert!(parse_release("default_process_types: [a]").is_err());
        assert!(parse_release("default_process_types:\n  Bad Name: x\n").is_err());
    }

    #[test]
    fn tars_give_their_procfile_and_dockerfile() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        };
        add("Procfile", b"web: ./run\n");
        add("sub/Dockerfile", b"FROM x\n");
        add("app.py", b"print(1)\n");
        let tar = b.into_inner().unwrap();
        let s = Source::from_tar(&tar).unwrap();
        assert_eq!(s.procfile.as_deref(), Some("web: ./run\n"));
        assert_eq!(s.dockerfile, None);
        // Garbage is an error or an empty tree, never a panic.
        let _ = Source::from_tar(&[0xff; 1024]);
    }
}
