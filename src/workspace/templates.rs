//! The template engine of rules: every `when` and `with` of a workspace compiled once into one
//! minijinja environment, and rendered per event, with a bound on the work and on the output
//! of each render. Undefined values are errors, so a missing
//! payload field fails the delivery instead of sending an empty string; a template that is a
//! single `{{ expr }}` keeps the expression's type (a number stays a number).

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::model::records::EventEnvelope;

/// The compiled templates of one workspace.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

/// The shape of a rule's `with`: literals kept as they are, strings compiled as templates.
#[derive(Debug)]
pub enum Template {
    Literal(Value),
    /// A compiled template; `native` ones are a single `{{ expr }}` whose value keeps its type.
    Text {
        name: String,
        native: bool,
    },
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

/// A template or condition that failed at render time; the delivery fails with it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RenderError {
    pub field: String,
    pub message: String,
}

/// The template context of an event: its envelope's fields (`event`, `payload`, …).
pub fn render_context(envelope: &EventEnvelope) -> minijinja::Value {
    minijinja::Value::from_serialize(envelope)
}

/// Instructions one template may run per render: far beyond any rule's needs, short of a loop
/// that would hold the delivery's task for seconds.
const FUEL: u64 = 100_000;

/// The longest text one template may render, in bytes; rendered requests are written to retry
/// tasks and history, which must fit the broker's record size.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.add_filter(NATIVE_FILTER, native_json);
        Self { env }
    }
}

impl Templates {
    /// Compiles the condition `cond` under `name`; it renders `1` when it holds.
    pub fn add_condition(&mut self, name: String, cond: &str) -> Result<String, String> {
        self.env
            .add_template_owned(name.clone(), format!("{{% if ({cond}) %}}1{{% endif %}}"))
            .map(|()| name)
            .map_err(|e| describe(&e))
    }

    /// Compiles the strings of `value` as templates named below `name`. On error returns the
    /// path below the value and the message.
    pub fn add_value(&mut self, value: &Value, name: &str) -> Result<Template, (String, String)> {
        self.compile_value(value, name)
            .map_err(|(path, e)| (path, describe(&e)))
    }

    /// Whether the condition compiled as `name` holds.
    pub fn holds(&self, name: &str, ctx: &minijinja::Value) -> Result<bool, RenderError> {
        Ok(self.render_text(name, "when", ctx)? == "1")
    }

    /// Renders `t`; errors name `field` and the path below it.
    pub fn render(
        &self,
        t: &Template,
        field: &str,
        ctx: &minijinja::Value,
    ) -> Result<Value, RenderError> {
        Ok(match t {
            Template::Literal(v) => v.clone(),
            Template::Text { name, native } => {
                let text = self.render_text(name, field, ctx)?;
                if *native {
                    serde_json::from_str(&text).map_err(|e| RenderError {
                        field: field.to_owned(),
                        message: format!("value is not representable: {e}"),
                    })?
                } else {
                    Value::String(text)
                }
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| self.render(t, &format!("{field}[{i}]"), ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), self.render(t, &format!("{field}.{k}"), ctx)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }

    fn render_text(
        &self,
        name: &str,
        field: &str,
        ctx: &minijinja::Value,
    ) -> Result<String, RenderError> {
        let error = |e: minijinja::Error| RenderError {
            field: field.to_owned(),
            message: describe(&e),
        };
        let text = self
            .env
            .get_template(name)
            .map_err(error)?
            .render(ctx)
            .map_err(error)?;
        if text.len() > MAX_RENDERED_BYTES {
            return Err(RenderError {
                field: field.to_owned(),
                message: format!(
                    "renders {} bytes, over the limit of {MAX_RENDERED_BYTES}",
                    text.len()
                ),
            });
        }
        Ok(text)
    }

    fn compile_value(
        &mut self,
        value: &Value,
        name: &str,
    ) -> Result<Template, (String, minijinja::Error)> {
        Ok(match value {
            Value::String(s) if s.contains("{{") || s.contains("{%") => {
                let (source, native) = match single_expression(s) {
                    Some(expr) => (format!("{{{{ ({expr}) | {NATIVE_FILTER} }}}}"), true),
                    None => (s.clone(), false),
                };
                self.env
                    .add_template_owned(name.to_owned(), source)
                    .map_err(|e| (String::new(), e))?;
                Template::Text {
                    name: name.to_owned(),
                    native,
                }
            }
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        self.compile_value(v, &format!("{name}[{i}]"))
                            .map_err(|(p, e)| (format!("[{i}]{p}"), e))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => Template::Object(
                fields
                    .iter()
                    .map(|(k, v)| {
                        self.compile_value(v, &format!("{name}.{k}"))
                            .map(|t| (k.clone(), t))
                            .map_err(|(p, e)| (format!(".{k}{p}"), e))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }
}

/// The filter single-expression templates render through.
const NATIVE_FILTER: &str = "herald_native_json";

/// Renders a value as JSON so it keeps its type; unlike `tojson` it refuses undefined values, so
/// `{{ payload.missing }}` fails the delivery instead of sending `null`.
fn native_json(value: minijinja::Value) -> Result<String, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "the expression has no value for this event",
        ));
    }
    serde_json::to_string(&value)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()))
}

/// `{{ expr }}` and nothing else: such a template renders the expression's value with its type
/// (a number stays a number), any other template renders text.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let plain = !inner.contains("{{")
        && !inner.contains("}}")
        && !inner.contains("{%")
        && !inner.starts_with('-')
        && !inner.ends_with('-');
    plain.then_some(inner)
}

/// A minijinja error without the internal template name.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.kind().to_string();
    if let Some(detail) = e.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    text
}
