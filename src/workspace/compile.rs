//! A workspace configuration, checked and compiled: connections built, every `when` and `with`
//! template compiled once into one minijinja environment, rules indexed by event name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use super::interpolate::Vars;
use super::spec::{ConfigErrors, FieldError, RuleSpec, WorkspaceConfig};
use crate::destinations::{self, Connection, DestinationContext};
use crate::records::EventEnvelope;

/// A workspace ready to route events.
#[derive(Debug)]
pub struct CompiledWorkspace {
    pub id: String,
    pub rules: Vec<CompiledRule>,
    by_event: HashMap<String, Vec<usize>>,
    templates: Environment<'static>,
}

/// A connection of a workspace with its type.
#[derive(Debug, Clone)]
pub struct BoundConnection {
    pub id: String,
    pub kind: String,
    pub connection: Arc<dyn Connection>,
}

/// One rule, compiled.
#[derive(Debug)]
pub struct CompiledRule {
    pub id: String,
    pub event: String,
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    pub action: String,
    pub connection: BoundConnection,
    when: Option<String>,
    with: Template,
}

/// The shape of a rule's `with`: literals kept as they are, strings compiled as templates.
#[derive(Debug)]
enum Template {
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

impl CompiledWorkspace {
    /// Checks `config` and compiles it. All problems are reported, each naming its field.
    pub fn compile(
        config: &WorkspaceConfig,
        ctx: &DestinationContext,
        vars: &Vars,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        check_name("workspace", &config.workspace, &mut errors);

        let mut connections: HashMap<&str, BoundConnection> = HashMap::new();
        for (i, spec) in config.connections.iter().enumerate() {
            let at = format!("connections[{i}]");
            check_name(&format!("{at}.id"), &spec.id, &mut errors);
            if connections.contains_key(spec.id.as_str()) {
                errors.push(FieldError::new(
                    format!("{at}.id"),
                    format!("`{}` is used by an earlier connection", spec.id),
                ));
                continue;
            }
            let Some(destination) = destinations::lookup(&spec.kind) else {
                let known: Vec<_> = destinations::REGISTRY.iter().map(|d| d.kind()).collect();
                errors.push(FieldError::new(
                    format!("{at}.type"),
                    format!(
                        "`{}` is not a destination type (known: {})",
                        spec.kind,
                        known.join(", ")
                    ),
                ));
                continue;
            };
            let built = vars
                .resolve_connection(spec)
                .and_then(|resolved| destination.connect(&resolved, ctx));
            match built {
                Ok(connection) => {
                    connections.insert(
                        &spec.id,
                        BoundConnection {
                            id: spec.id.clone(),
                            kind: spec.kind.clone(),
                            connection,
                        },
                    );
                }
                Err(e) => errors.push(e.under(&at)),
            }
        }

        let mut templates = Environment::new();
        templates.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut rules = Vec::new();
        let mut by_event: HashMap<String, Vec<usize>> = HashMap::new();
        let mut seen = HashSet::new();
        for (i, spec) in config.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            check_name(&format!("{at}.id"), &spec.id, &mut errors);
            if !seen.insert(spec.id.as_str()) {
                errors.push(FieldError::new(
                    format!("{at}.id"),
                    format!("`{}` is used by an earlier rule", spec.id),
                ));
                continue;
            }
            if spec.event.trim().is_empty() {
                errors.push(FieldError::new(format!("{at}.event"), "must not be empty"));
            }
            match compile_rule(spec, &at, &connections, &mut templates) {
                Ok(rule) => {
                    by_event
                        .entry(rule.event.clone())
                        .or_default()
                        .push(rules.len());
                    rules.push(rule);
                }
                Err(e) => errors.push(e),
            }
        }

        if errors.is_empty() {
            Ok(Self {
                id: config.workspace.clone(),
                rules,
                by_event,
                templates,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The rules whose event, resource and resource id filters match `envelope`. Conditions
    /// (`when`) are evaluated separately by [`CompiledWorkspace::condition_holds`].
    pub fn candidate_rules<'a>(
        &'a self,
        envelope: &'a EventEnvelope,
    ) -> impl Iterator<Item = &'a CompiledRule> + 'a {
        self.by_event
            .get(&envelope.event)
            .into_iter()
            .flatten()
            .map(|&i| &self.rules[i])
            .filter(|r| {
                r.resource
                    .as_ref()
                    .is_none_or(|want| envelope.resource.as_ref() == Some(want))
                    && r.resource_id
                        .as_ref()
                        .is_none_or(|want| envelope.resource_id.as_ref() == Some(want))
            })
    }

    /// Whether `rule`'s `when` holds for the event (`ctx` from [`render_context`]).
    pub fn condition_holds(
        &self,
        rule: &CompiledRule,
        ctx: &minijinja::Value,
    ) -> Result<bool, RenderError> {
        let Some(name) = &rule.when else {
            return Ok(true);
        };
        Ok(self.render_text(name, "when", ctx)? == "1")
    }

    /// Renders `rule`'s `with` for the event.
    pub fn render(
        &self,
        rule: &CompiledRule,
        ctx: &minijinja::Value,
    ) -> Result<Value, RenderError> {
        self.render_template(&rule.with, "with", ctx)
    }

    fn render_template(
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
                    .map(|(i, t)| self.render_template(t, &format!("{field}[{i}]"), ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| {
                        Ok((
                            k.clone(),
                            self.render_template(t, &format!("{field}.{k}"), ctx)?,
                        ))
                    })
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
        self.templates
            .get_template(name)
            .map_err(error)?
            .render(ctx)
            .map_err(error)
    }
}

/// The template context of an event: its envelope's fields (`event`, `payload`, …).
pub fn render_context(envelope: &EventEnvelope) -> minijinja::Value {
    minijinja::Value::from_serialize(envelope)
}

fn compile_rule(
    spec: &RuleSpec,
    at: &str,
    connections: &HashMap<&str, BoundConnection>,
    templates: &mut Environment<'static>,
) -> Result<CompiledRule, FieldError> {
    let connection = connections.get(spec.connection.as_str()).ok_or_else(|| {
        FieldError::new(
            format!("{at}.connection"),
            format!(
                "`{}` is not a connection of this workspace",
                spec.connection
            ),
        )
    })?;
    connection
        .connection
        .check_rule(&spec.action, &spec.with)
        .map_err(|e| e.under(at))?;
    let when = match &spec.when {
        None => None,
        Some(cond) => {
            let name = format!("{}/when", spec.id);
            templates
                .add_template_owned(name.clone(), format!("{{% if ({cond}) %}}1{{% endif %}}"))
                .map_err(|e| FieldError::new(format!("{at}.when"), describe(&e)))?;
            Some(name)
        }
    };
    let with = compile_value(&spec.with, &format!("{}/with", spec.id), templates)
        .map_err(|(path, e)| FieldError::new(format!("{at}.with{path}"), describe(&e)))?;
    Ok(CompiledRule {
        id: spec.id.clone(),
        event: spec.event.clone(),
        resource: spec.resource.clone(),
        resource_id: spec.resource_id.clone(),
        action: spec.action.clone(),
        connection: connection.clone(),
        when,
        with,
    })
}

/// Compiles the strings of `value` as templates. On error returns the path below `with`.
fn compile_value(
    value: &Value,
    name: &str,
    templates: &mut Environment<'static>,
) -> Result<Template, (String, minijinja::Error)> {
    Ok(match value {
        Value::String(s) if s.contains("{{") || s.contains("{%") => {
            let (source, native) = match single_expression(s) {
                Some(expr) => (format!("{{{{ ({expr}) | tojson }}}}"), true),
                None => (s.clone(), false),
            };
            templates
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
                    compile_value(v, &format!("{name}[{i}]"), templates)
                        .map_err(|(p, e)| (format!("[{i}]{p}"), e))
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Template::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    compile_value(v, &format!("{name}.{k}"), templates)
                        .map(|t| (k.clone(), t))
                        .map_err(|(p, e)| (format!(".{k}{p}"), e))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => Template::Literal(other.clone()),
    })
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

fn check_name(path: &str, name: &str, errors: &mut Vec<FieldError>) {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        errors.push(FieldError::new(
            path,
            format!("`{name}` must be 1-200 characters of letters, digits, `_`, `-` or `.`"),
        ));
    }
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
