//! A workspace configuration, checked and compiled: connections built, every `when` and `with`
//! template compiled once into one minijinja environment, rules indexed by event name.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use super::interpolate::Vars;
use super::spec::{ConfigErrors, FieldError, RuleSpec, WorkspaceConfig};
use crate::destinations::{self, Connection, DestinationContext};
use crate::records::EventEnvelope;

/// Connections marked broken across all loaded workspaces (for the metric).
pub static BROKEN_CONNECTIONS: AtomicI64 = AtomicI64::new(0);

/// A workspace ready to route events.
#[derive(Debug)]
pub struct CompiledWorkspace {
    pub id: String,
    pub rules: Vec<CompiledRule>,
    by_event: HashMap<String, Vec<usize>>,
    templates: Environment<'static>,
    /// Connections that answered "bad credentials", with the reason. It lives as long as this
    /// compiled config: applying the workspace again (the fix) starts with none broken.
    broken: Mutex<HashMap<String, String>>,
}

impl Drop for CompiledWorkspace {
    fn drop(&mut self) {
        let n = self.broken.get_mut().map(|b| b.len()).unwrap_or(0);
        BROKEN_CONNECTIONS.fetch_sub(n as i64, Ordering::Relaxed);
    }
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
        // Connections that exist but did not build; their errors are already reported.
        let mut broken: HashSet<&str> = HashSet::new();
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
                Err(e) => {
                    broken.insert(&spec.id);
                    errors.push(e.under(&at));
                }
            }
        }

        let mut templates = Environment::new();
        templates.set_undefined_behavior(UndefinedBehavior::Strict);
        templates.add_filter(NATIVE_FILTER, native_json);
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
            match compile_rule(spec, &at, &connections, &broken, &mut templates) {
                Ok(Some(rule)) => {
                    by_event
                        .entry(rule.event.clone())
                        .or_default()
                        .push(rules.len());
                    rules.push(rule);
                }
                Ok(None) => {}
                Err(e) => errors.extend(e),
            }
        }

        if errors.is_empty() {
            Ok(Self {
                id: config.workspace.clone(),
                rules,
                by_event,
                templates,
                broken: Mutex::default(),
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Marks `connection_id` broken: its deliveries are parked as dead without calling the
    /// API until the workspace config changes.
    pub fn mark_broken(&self, connection_id: &str, reason: &str) {
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if broken
            .insert(connection_id.to_owned(), reason.to_owned())
            .is_none()
        {
            BROKEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            tracing::error!(workspace = %self.id, connection = connection_id, reason,
                "connection broken; its deliveries are parked until the workspace is applied again");
        }
    }

    /// Why `connection_id` is broken, if it is.
    pub fn broken_reason(&self, connection_id: &str) -> Option<String> {
        let broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        broken.get(connection_id).cloned()
    }

    /// The rule with id `rule_id`.
    pub fn rule(&self, rule_id: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.id == rule_id)
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

/// Compiles one rule. `Ok(None)` when its connection is one that failed to build: its templates
/// were still checked, the connection's own error is reported elsewhere.
fn compile_rule(
    spec: &RuleSpec,
    at: &str,
    connections: &HashMap<&str, BoundConnection>,
    broken: &HashSet<&str>,
    templates: &mut Environment<'static>,
) -> Result<Option<CompiledRule>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let when = match &spec.when {
        None => None,
        Some(cond) => {
            let name = format!("{}/when", spec.id);
            match templates
                .add_template_owned(name.clone(), format!("{{% if ({cond}) %}}1{{% endif %}}"))
            {
                Ok(()) => Some(name),
                Err(e) => {
                    errors.push(FieldError::new(format!("{at}.when"), describe(&e)));
                    None
                }
            }
        }
    };
    let with = compile_value(&spec.with, &format!("{}/with", spec.id), templates)
        .map_err(|(path, e)| errors.push(FieldError::new(format!("{at}.with{path}"), describe(&e))))
        .ok();
    let connection = match connections.get(spec.connection.as_str()) {
        Some(c) => match c.connection.check_rule(&spec.action, &spec.with) {
            Ok(()) => Some(c),
            Err(e) => {
                errors.push(e.under(at));
                None
            }
        },
        None if broken.contains(spec.connection.as_str()) => None,
        None => {
            errors.push(FieldError::new(
                format!("{at}.connection"),
                format!(
                    "`{}` is not a connection of this workspace",
                    spec.connection
                ),
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(connection), Some(with)) = (connection, with) else {
        return Ok(None);
    };
    Ok(Some(CompiledRule {
        id: spec.id.clone(),
        event: spec.event.clone(),
        resource: spec.resource.clone(),
        resource_id: spec.resource_id.clone(),
        action: spec.action.clone(),
        connection: connection.clone(),
        when,
        with,
    }))
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
                Some(expr) => (format!("{{{{ ({expr}) | {NATIVE_FILTER} }}}}"), true),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::spec::WorkspaceConfig;

    fn workspace(rules: &str) -> Result<CompiledWorkspace, ConfigErrors> {
        let text = format!(
            "workspace: ws\nconnections:\n  - id: hook\n    type: webhook\n    url: http://127.0.0.1:9/h\n    credentials: {{ secret: whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA== }}\nrules:\n{rules}"
        );
        let config = WorkspaceConfig::parse(&text).expect("parses");
        let ctx = DestinationContext {
            http: reqwest::Client::new(),
            default_timeout: std::time::Duration::from_secs(1),
            allow_private_networks: true,
            max_rate_wait: std::time::Duration::from_secs(1),
        };
        CompiledWorkspace::compile(&config, &ctx, &Vars::default())
    }

    fn envelope(payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            event_id: "e".into(),
            workspace_id: "ws".into(),
            event: "lesson.completed".into(),
            resource: Some("course".into()),
            resource_id: Some("c1".into()),
            payload: payload.as_object().unwrap().clone(),
            occurred_at: None,
            received_at: None,
        }
    }

    fn rule(when: &str) -> String {
        format!(
            "  - {{ id: r, event: lesson.completed, connection: hook, action: post, when: \"{when}\" }}\n"
        )
    }

    #[test]
    fn conditions_evaluate_against_the_event() {
        let payload =
            serde_json::json!({"completion_percentage": 62, "plan": "pro", "tags": ["a"]});
        let cases: &[(&str, Option<bool>)] = &[
            ("payload.completion_percentage >= 50", Some(true)),
            ("payload.completion_percentage >= 75", Some(false)),
            ("payload.plan == 'pro' and resource == 'course'", Some(true)),
            ("'a' in payload.tags", Some(true)),
            ("payload.missing is defined", Some(false)),
            ("payload.missing >= 50", None),
        ];
        for (when, expect) in cases {
            let ws = workspace(&rule(when)).unwrap();
            let env = envelope(payload.clone());
            let got = ws.condition_holds(&ws.rules[0], &render_context(&env)).ok();
            assert_eq!(got, *expect, "{when}");
        }
    }

    #[test]
    fn templates_render_text_and_single_expressions_keep_their_type() {
        let ws = workspace(
            "  - id: r\n    event: lesson.completed\n    connection: hook\n    action: post\n    with:\n      pct: \"{{ payload.completion_percentage }}\"\n      text: \"{{ payload.completion_percentage }}% of {{ resource_id }}\"\n      list: [\"{{ payload.tags[0] }}\", 7]\n      flag: true\n",
        )
        .unwrap();
        let env = envelope(serde_json::json!({"completion_percentage": 62, "tags": ["x<y"]}));
        let out = ws.render(&ws.rules[0], &render_context(&env)).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"pct": 62, "text": "62% of c1", "list": ["x<y", 7], "flag": true})
        );
        let missing = envelope(serde_json::json!({}));
        let err = ws
            .render(&ws.rules[0], &render_context(&missing))
            .unwrap_err();
        assert_eq!(err.field, "with.pct");
    }

    #[test]
    fn every_problem_is_reported_with_its_field_path() {
        let err = workspace(
            "  - { id: a, event: e, connection: nope, action: post }\n  - { id: b, event: e, connection: hook, action: launch }\n  - { id: c, event: e, connection: hook, action: post, when: \"payload.x >\" }\n  - { id: d, event: e, connection: hook, action: post, with: { x: \"{{ payload.\" } }\n  - { id: a, event: e, connection: hook, action: post }\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "rules[0].connection",
                "rules[1].action",
                "rules[2].when",
                "rules[3].with.x",
                "rules[4].id"
            ]
        );
    }

    #[test]
    fn filters_on_resource_and_resource_id() {
        let ws = workspace(
            "  - { id: any, event: lesson.completed, connection: hook, action: post }\n  - { id: course, event: lesson.completed, resource: course, connection: hook, action: post }\n  - { id: other, event: lesson.completed, resource_id: c2, connection: hook, action: post }\n  - { id: else, event: page.completed, connection: hook, action: post }\n",
        )
        .unwrap();
        let env = envelope(serde_json::json!({}));
        let ids: Vec<&str> = ws.candidate_rules(&env).map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["any", "course"]);
    }
}
