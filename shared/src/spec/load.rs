//! Reading a spec file: YAML to [`ProviderSpec`], with every error placed at a
//! file, line and path so the author can go straight to it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::model::ProviderSpec;

/// One thing wrong with a spec, placed as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path in the spec, e.g. `resources.contacts.mapping`.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// Why a spec could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: cannot read the spec: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(.file, .problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

impl SpecError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            SpecError::Io { .. } => &[],
            SpecError::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(file: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}", Located { file, problem: p }));
    }
    out
}

struct Located<'a> {
    file: &'a Path,
    problem: &'a Problem,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.problem;
        match p.line {
            Some(line) => write!(f, "{}:{}: ", self.file.display(), line)?,
            None => write!(f, "{}: ", self.file.display())?,
        }
        if p.path.is_empty() {
            write!(f, "{}", p.message)
        } else {
            write!(f, "at `{}`: {}", p.path, p.message)
        }
    }
}

/// A spec as written, with the index needed to place later (semantic) errors.
#[derive(Debug, Clone)]
pub struct SpecSource {
    pub file: PathBuf,
    pub spec: ProviderSpec,
    lines: LineIndex,
}

impl SpecSource {
    /// A spec built in memory (a spec with overrides applied): its problems carry paths
    /// but no lines.
    pub fn unplaced(file: PathBuf, spec: ProviderSpec) -> SpecSource {
        SpecSource {
            file,
            spec,
            lines: LineIndex::default(),
        }
    }

    /// Line of a dotted path, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        self.lines.line_of(path)
    }

    pub fn problem(&self, path: impl Into<String>, message: impl Into<String>) -> Problem {
        let path = path.into();
        Problem {
            line: self.line_of(&path),
            path,
            message: message.into(),
        }
    }
}

pub fn read_spec_file(file: &Path) -> Result<SpecSource, SpecError> {
    let text = std::fs::read_to_string(file).map_err(|source| SpecError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    parse_spec(file, &text)
}

pub fn parse_spec(file: &Path, text: &str) -> Result<SpecSource, SpecError> {
    let invalid = |problem: Problem| SpecError::Invalid {
        file: file.to_path_buf(),
        problems: vec![problem],
    };
    let lines = LineIndex::build(text).map_err(|(line, message)| {
        invalid(Problem {
            path: String::new(),
            line: Some(line),
            message: format!("not valid YAML: {message}"),
        })
    })?;
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let spec: ProviderSpec = serde_path_to_error::deserialize(de).map_err(|err| {
        let path = dotted(&err.path().to_string());
        let inner = err.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| lines.line_of(&path));
        invalid(Problem {
            path,
            line,
            message: clean_serde_message(&inner.to_string()),
        })
    })?;
    Ok(SpecSource {
        file: file.to_path_buf(),
        spec,
        lines,
    })
}

/// serde_path_to_error writes `.` for the root; we write nothing.
fn dotted(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        path.to_string()
    }
}

/// serde_yaml appends "at line X column Y", which we already show in front.
fn clean_serde_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The 1-based line where a dotted path (or its nearest ancestor) starts in a YAML text;
/// None when the text does not parse or has no such path.
pub fn yaml_line(text: &str, path: &str) -> Option<usize> {
    LineIndex::build(text).ok()?.line_of(path)
}

/// Dotted path (`a.b[2].c`) to the line where it starts in the YAML text.
#[derive(Debug, Clone, Default)]
struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    fn build(text: &str) -> Result<Self, (usize, String)> {
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut builder, false)
            .map_err(|e| (e.marker().line(), e.info().to_string()))?;
        Ok(LineIndex {
            lines: builder.lines,
        })
    }

    fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl IndexBuilder {
    /// The path of the value about to be read, or None when a key is expected.
    fn value_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                path,
                key: Some(key),
            }) => Some(join(path, key)),
            Some(Frame::Seq { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line().max(1);
        match ev {
            Event::Scalar(value, ..) => match self.value_path() {
                None => {
                    if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                        let full = join(path, &value);
                        self.lines.entry(full).or_insert(line);
                        *key = Some(value);
                    }
                }
                Some(path) => {
                    self.lines.entry(path).or_insert(line);
                    self.value_done();
                }
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.value_path().unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(line);
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            Event::Alias(_) => self.value_done(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_places_nested_keys_and_items() {
        let text = "name: x\nresources:\n  contacts:\n    mapping: |\n      { \"a\": b }\n    list:\n      - one\n      - two\n";
        let idx = LineIndex::build(text).unwrap();
        assert_eq!(idx.line_of("name"), Some(1));
        assert_eq!(idx.line_of("resources.contacts"), Some(3));
        assert_eq!(idx.line_of("resources.contacts.mapping"), Some(4));
        assert_eq!(idx.line_of("resources.contacts.list[1]"), Some(8));
        assert_eq!(idx.line_of("resources.contacts.unknown.deeper"), Some(3));
    }

    #[test]
    fn type_errors_name_the_path_and_line() {
        let text = "spec_version: 1\nname: x\nbase_url: https://a\nallowed_hosts: [a]\nauth:\n  type: nope\nresources: {}\n";
        let err = parse_spec(Path::new("x.yaml"), text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("x.yaml:6: at `auth"), "{shown}");
        assert!(shown.contains("unknown variant `nope`"), "{shown}");
    }

    #[test]
    fn yaml_syntax_errors_name_the_line() {
        let err = parse_spec(Path::new("x.yaml"), "a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.to_string().contains("not valid YAML"), "{err}");
    }
}
