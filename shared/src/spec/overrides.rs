//! Overrides: changes to a spec's resources made without editing the spec, in layers
//! merged at run time, later wins: the platform's spec (`provider-specs/`), the
//! environment's overlay (`TRIBUTARY_OVERRIDES_DIR/<provider>.yaml`, one per deployment)
//! and a connection's own (stored, set through the API).
//!
//! A layer is applied to the spec model (`apply`) and the result compiled by the spec
//! compiler (`compile_with`), so every later stage only ever sees a compiled spec, and
//! every problem is reported in the layer's own terms (resource, field, path).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compile::{compile, load_spec, CompiledSpec};
use super::load::{yaml_line, Problem, SpecError, SpecSource};
use super::model::{ProviderSpec, Resource};

/// One layer of overrides: per resource, what changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// By resource name (a resource of the provider's spec).
    #[serde(default)]
    pub resources: IndexMap<String, ResourceOverride>,
}

/// What a layer changes in one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceOverride {
    /// JSONata over the provider record per unified field (or `custom_fields.<name>`),
    /// merged into the result of the mapping: one field added or replaced.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, String>,
    /// A whole JSONata mapping replacing the one below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    /// Query parameters (templates, as in the spec) merged into the resource's request.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub query: IndexMap<String, String>,
    /// Which provider fields are custom fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<CustomFieldsOverride>,
}

/// Which provider fields are custom fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomFieldsOverride {
    /// Keep only these provider fields as custom fields (replaces a lower layer's list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Provider fields never reported as custom, added to the spec's exclusions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

/// One thing wrong with a layer, in the layer's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideProblem {
    /// Dotted path in the layer, e.g. `resources.contacts.fields.title`.
    pub path: String,
    /// The resource it is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The field (`fields` key), or `mapping`, `query.<name>`, `custom_fields`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    /// Line in the layer's file, when it came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl fmt::Display for OverrideProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.resource, &self.field) {
            (Some(r), Some(field)) => write!(f, "resource `{r}`, `{field}`")?,
            (Some(r), None) => write!(f, "resource `{r}`")?,
            _ => write!(f, "at `{}`", self.path)?,
        }
        write!(f, ": {}", self.message)
    }
}

/// Problems as one line each.
pub fn render_problems(problems: &[OverrideProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The spec model with one layer applied: `fields` merged, `mapping` replaced, `query`
/// merged into the request's, `custom_fields.include` replaced and `exclude` added to.
/// Fails only on resources the spec does not have; the rest is checked by compiling.
pub fn apply(base: &ProviderSpec, layer: &Overrides) -> Result<ProviderSpec, Vec<OverrideProblem>> {
    let mut spec = base.clone();
    let mut problems = Vec::new();
    for (name, change) in &layer.resources {
        match spec.resources.get_mut(name) {
            Some(resource) => merge(resource, change),
            None => {
                let known: Vec<&str> = base.resources.keys().map(String::as_str).collect();
                problems.push(OverrideProblem {
                    path: format!("resources.{name}"),
                    resource: Some(name.clone()),
                    field: None,
                    message: format!(
                        "the `{}` spec has no resource `{name}`; it has: {}",
                        base.name,
                        known.join(", ")
                    ),
                    line: None,
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems)
    }
}

fn merge(resource: &mut Resource, change: &ResourceOverride) {
    if let Some(mapping) = &change.mapping {
        resource.mapping = mapping.clone();
    }
    resource.fields.extend(change.fields.clone());
    resource.request.query.extend(change.query.clone());
    if let Some(custom) = &change.custom_fields {
        if let Some(include) = &custom.include {
            resource.custom_fields.include = Some(include.clone());
        }
        for name in &custom.exclude {
            if !resource.custom_fields.exclude.contains(name) {
                resource.custom_fields.exclude.push(name.clone());
            }
        }
    }
}

/// A compiled spec with one more layer on top, compiled again; problems in the layer's terms.
pub fn compile_with(
    base: &CompiledSpec,
    layer: &Overrides,
) -> Result<CompiledSpec, Vec<OverrideProblem>> {
    let spec = apply(&base.spec, layer)?;
    compile(SpecSource::unplaced(base.file.clone(), spec)).map_err(|e| {
        e.problems()
            .iter()
            .map(|p| in_layer_terms(layer, p))
            .collect()
    })
}

/// A compiler problem (a path in the spec) as a problem of the layer that caused it.
fn in_layer_terms(layer: &Overrides, problem: &Problem) -> OverrideProblem {
    let mut out = OverrideProblem {
        path: problem.path.clone(),
        resource: None,
        field: None,
        message: problem.message.clone(),
        line: None,
    };
    for name in layer.resources.keys() {
        let Some(rest) = problem.path.strip_prefix(&format!("resources.{name}.")) else {
            continue;
        };
        // The layer's `query` is the request's in the spec.
        let rest = rest.strip_prefix("request.").unwrap_or(rest);
        out.path = format!("resources.{name}.{rest}");
        out.resource = Some(name.clone());
        out.field = Some(rest.strip_prefix("fields.").unwrap_or(rest).to_string());
    }
    out
}

/// Why a provider's spec with its environment overlay could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{file}: cannot read the overrides file: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", located(.file, .problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<OverrideProblem>,
    },
    #[error("{file}: there is no provider spec `{provider}` ({spec} does not exist); name the file after a provider")]
    NoSpec {
        file: PathBuf,
        provider: String,
        spec: PathBuf,
    },
}

fn located(file: &Path, problems: &[OverrideProblem]) -> String {
    problems
        .iter()
        .map(|p| match p.line {
            Some(line) => format!("{}:{line}: at `{}`: {}", file.display(), p.path, p.message),
            None => format!("{}: at `{}`: {}", file.display(), p.path, p.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Read an overrides file (YAML, or JSON which is YAML too); errors name the path in it.
pub fn read_overrides_file(file: &Path) -> Result<(Overrides, String), OverlayError> {
    let text = std::fs::read_to_string(file).map_err(|source| OverlayError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    match serde_path_to_error::deserialize(de) {
        Ok(layer) => Ok((layer, text)),
        Err(err) => {
            let path = match err.path().to_string() {
                p if p == "." => String::new(),
                p => p,
            };
            let inner = err.into_inner();
            let message = inner.to_string();
            let message = message
                .find(" at line ")
                .map_or(message.clone(), |i| message[..i].to_string());
            Err(OverlayError::Invalid {
                file: file.to_path_buf(),
                problems: vec![OverrideProblem {
                    line: inner.location().map(|l| l.line()),
                    path,
                    resource: None,
                    field: None,
                    message,
                }],
            })
        }
    }
}

/// The environment's overlay file of a provider, when the deployment has one.
fn overlay_file(overrides_dir: Option<&Path>, provider: &str) -> Option<PathBuf> {
    let file = overrides_dir?.join(format!("{provider}.yaml"));
    file.exists().then_some(file)
}

/// A compiled spec with an overrides file applied; problems placed in that file.
pub fn compile_with_file(base: &CompiledSpec, file: &Path) -> Result<CompiledSpec, OverlayError> {
    let (layer, text) = read_overrides_file(file)?;
    compile_with(base, &layer).map_err(|problems| OverlayError::Invalid {
        file: file.to_path_buf(),
        problems: problems
            .into_iter()
            .map(|mut p| {
                p.line = yaml_line(&text, &p.path);
                p
            })
            .collect(),
    })
}

/// The one loader of a provider's spec: `specs_dir/<provider>.yaml` with the environment's
/// overlay (`overrides_dir/<provider>.yaml`) applied when there is one.
pub fn load_layered(
    specs_dir: &Path,
    overrides_dir: Option<&Path>,
    provider: &str,
) -> Result<Arc<CompiledSpec>, OverlayError> {
    let base = load_spec(&specs_dir.join(format!("{provider}.yaml")))?;
    match overlay_file(overrides_dir, provider) {
        None => Ok(base),
        Some(file) => Ok(Arc::new(compile_with_file(&base, &file)?)),
    }
}

/// Check every overlay file of `overrides_dir` at start: each names a provider spec of
/// `specs_dir` and applies to it cleanly. Returns the providers overlaid.
pub fn check_overlays(specs_dir: &Path, overrides_dir: &Path) -> Result<Vec<String>, OverlayError> {
    let entries = std::fs::read_dir(overrides_dir).map_err(|source| OverlayError::Io {
        file: overrides_dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut providers = Vec::new();
    for file in files {
        let provider = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let spec = specs_dir.join(format!("{provider}.yaml"));
        if !spec.exists() {
            return Err(OverlayError::NoSpec {
                file,
                provider,
                spec,
            });
        }
        load_layered(specs_dir, Some(overrides_dir), &provider)?;
        providers.push(provider);
    }
    Ok(providers)
}

#[cfg(test)]
mod tests;
