//! String templates in specs (`{{ config.subdomain }}`, `{% if since %}...{% endif %}`),
//! compiled once per spec with minijinja.

use std::collections::HashSet;

use minijinja::{Environment, UndefinedBehavior, Value as Ctx};
use serde_json::Value;

/// Handle to one compiled template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateId(String);

/// A JSON body whose string leaves are templates.
#[derive(Debug, Clone)]
pub enum BodyTemplate {
    Literal(Value),
    /// A leaf with text around its placeholders: always a string.
    Text(TemplateId),
    /// A leaf that is exactly one `{{ expression }}`: keeps the value's JSON type.
    Expr(TemplateId),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

/// All templates of one spec.
pub struct Templates {
    env: Environment<'static>,
    count: usize,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Templates({})", self.count)
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

const XML_SUFFIX: &str = ".xml";
const XML_ESCAPE: &str = "xml";

/// Values printed by XML templates are escaped (none prints nothing); `| safe` values and
/// every other template go through minijinja's own formatter.
fn xml_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Ctx,
) -> Result<(), minijinja::Error> {
    match state.auto_escape() {
        minijinja::AutoEscape::Custom(name) if name == XML_ESCAPE && !value.is_safe() => {
            if value.is_none() || value.is_undefined() {
                return Ok(());
            }
            let text = crate::mapping::xml::escape(&value.to_string());
            out.write_str(&text).map_err(minijinja::Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        // Missing values may be tested (`{% if since %}`) but never printed silently.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        // XML body templates (named `*.xml`) escape every value they print; the rest
        // print values as they are.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(XML_SUFFIX) {
                minijinja::AutoEscape::Custom(XML_ESCAPE.into())
            } else {
                minijinja::AutoEscape::None
            }
        });
        env.set_formatter(xml_formatter);
        Templates { env, count: 0 }
    }

    /// Compile an XML body template: every value it prints is XML-escaped.
    pub fn add_xml(&mut self, source: &str) -> Result<TemplateId, String> {
        self.count += 1;
        let name = format!("t{}{XML_SUFFIX}", self.count);
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(describe)?;
        Ok(TemplateId(name))
    }

    /// Compile a text template.
    pub fn add(&mut self, source: &str) -> Result<TemplateId, String> {
        self.count += 1;
        let name = format!("t{}", self.count);
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(describe)?;
        Ok(TemplateId(name))
    }

    /// Compile a JSON body: each string leaf becomes a template.
    pub fn add_body(&mut self, body: &Value) -> Result<BodyTemplate, String> {
        Ok(match body {
            Value::String(s) if !s.contains("{{") && !s.contains("{%") => {
                BodyTemplate::Literal(body.clone())
            }
            Value::String(s) => match single_expression(s) {
                Some(expr) => {
                    BodyTemplate::Expr(self.add(&format!("{{{{ ({expr}) | tojson }}}}"))?)
                }
                None => BodyTemplate::Text(self.add(s)?),
            },
            Value::Array(items) => BodyTemplate::Array(
                items
                    .iter()
                    .map(|v| self.add_body(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => BodyTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.add_body(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => BodyTemplate::Literal(other.clone()),
        })
    }

    pub fn render(&self, id: &TemplateId, ctx: &Ctx) -> Result<String, String> {
        let template = self.env.get_template(&id.0).map_err(describe)?;
        template.render(ctx).map_err(describe)
    }

    /// Render a body; leaves that evaluate to none are left out.
    pub fn render_body(&self, body: &BodyTemplate, ctx: &Ctx) -> Result<Option<Value>, String> {
        Ok(match body {
            BodyTemplate::Literal(v) => Some(v.clone()),
            BodyTemplate::Text(id) => Some(Value::String(self.render(id, ctx)?)),
            BodyTemplate::Expr(id) => {
                let json = self.render(id, ctx)?;
                let value: Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
                (!value.is_null()).then_some(value)
            }
            BodyTemplate::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(v) = self.render_body(item, ctx)? {
                        out.push(v);
                    }
                }
                Some(Value::Array(out))
            }
            BodyTemplate::Object(fields) => {
                let mut out = serde_json::Map::new();
                for (k, v) in fields {
                    if let Some(v) = self.render_body(v, ctx)? {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Value::Object(out))
            }
        })
    }

    /// Variables a template reads, nested (`config.subdomain`) and top-level (`config`).
    pub fn variables(&self, id: &TemplateId) -> HashSet<String> {
        match self.env.get_template(&id.0) {
            Ok(t) => {
                let mut vars = t.undeclared_variables(true);
                vars.extend(t.undeclared_variables(false));
                vars
            }
            Err(_) => HashSet::new(),
        }
    }

    pub fn body_variables(&self, body: &BodyTemplate) -> HashSet<String> {
        match body {
            BodyTemplate::Literal(_) => HashSet::new(),
            BodyTemplate::Text(id) | BodyTemplate::Expr(id) => self.variables(id),
            BodyTemplate::Array(items) => {
                items.iter().flat_map(|b| self.body_variables(b)).collect()
            }
            BodyTemplate::Object(fields) => fields
                .iter()
                .flat_map(|(_, b)| self.body_variables(b))
                .collect(),
        }
    }
}

/// `"{{ expr }}"` with nothing around it.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then(|| inner.trim())
}

fn describe(err: minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {}", err.kind(), detail),
        None => err.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_conditionals_and_keeps_types_in_bodies() {
        let mut t = Templates::new();
        let q = t
            .add("SELECT Id FROM Contact{% if since %} WHERE SystemModstamp > {{ since }}{% endif %}")
            .unwrap();
        let body = t
            .add_body(&json!({"limit": "{{ page_size }}", "after": "{{ cursor }}", "label": "p{{ page_size }}"}))
            .unwrap();
        let ctx = minijinja::context! { since => "2024-01-01T00:00:00Z", page_size => 50, cursor => Ctx::from(()) };
        assert_eq!(
            t.render(&q, &ctx).unwrap(),
            "SELECT Id FROM Contact WHERE SystemModstamp > 2024-01-01T00:00:00Z"
        );
        assert_eq!(
            t.render_body(&body, &ctx).unwrap(),
            Some(json!({"limit": 50, "label": "p50"}))
        );
        assert!(t.variables(&q).contains("since"));
    }

    #[test]
    fn xml_templates_escape_every_value_and_others_do_not() {
        let mut t = Templates::new();
        let xml = t
            .add_xml("<q a=\"{{ name }}\"><n>{{ name }}</n><p>{{ page }}</p><c>{{ cursor }}</c>{{ raw | safe }}</q>")
            .unwrap();
        let text = t.add("{{ name }}").unwrap();
        let ctx = minijinja::context! {
            name => "R&D <\"x\"> 'y'", page => 3, cursor => Ctx::from(()), raw => "<k/>"
        };
        assert_eq!(
            t.render(&xml, &ctx).unwrap(),
            "<q a=\"R&amp;D &lt;&quot;x&quot;&gt; &apos;y&apos;\"><n>R&amp;D &lt;&quot;x&quot;&gt; &apos;y&apos;</n><p>3</p><c></c><k/></q>"
        );
        assert_eq!(t.render(&text, &ctx).unwrap(), "R&D <\"x\"> 'y'");
        assert!(t.variables(&xml).contains("page"));
    }

    #[test]
    fn printing_a_missing_value_is_an_error() {
        let mut t = Templates::new();
        let id = t.add("https://{{ config.subdomain }}.example.com").unwrap();
        let err = t
            .render(
                &id,
                &minijinja::context! { config => minijinja::context!{} },
            )
            .unwrap_err();
        assert!(err.contains("undefined"), "{err}");
    }
}
