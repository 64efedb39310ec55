//! A workspace configuration, checked and compiled: connections built, every `when` and `with`
//! template compiled once (see [`super::templates`]), rules indexed by event name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::broken::BrokenConnections;
use super::templates::{RenderError, Template, Templates};
use crate::credentials::{CredentialTable, Stored};
use crate::destinations::{self, BoundAction, Connection, Destination, DestinationContext};
use crate::model::records::EventEnvelope;
use crate::model::{ConfigErrors, ConnectionSpec, FieldError, RuleSpec, Secret, WorkspaceConfig};
use crate::settings::interpolate::{Vars, check_no_references};

/// A workspace ready to route events.
#[derive(Debug)]
pub struct CompiledWorkspace {
    pub id: String,
    pub rules: Vec<CompiledRule>,
    /// Keys that may post this workspace's events over HTTP (redacted in `Debug`).
    pub publishable_keys: Vec<Secret>,
    /// Every connection as (id, type), in the config's order.
    pub connections: Vec<(String, String)>,
    by_event: HashMap<String, Vec<usize>>,
    /// Every connection by id, with or without rules (for "test connection" and health).
    handles: HashMap<String, Arc<dyn Connection>>,
    templates: Templates,
    /// Connections that answered "bad credentials"; they live as long as this compiled config.
    pub broken: BrokenConnections,
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
    /// The rule's action on its connection, parsed and checked; the router sends through it.
    pub action: BoundAction,
    pub connection: BoundConnection,
    when: Option<String>,
    with: Template,
}

impl CompiledWorkspace {
    /// Checks `config` and compiles it, as `herald workspace apply` does: the credential store
    /// is not read, so a connection without a `credentials` block has its settings checked
    /// and its rules' actions bound, but not called. All problems are reported, each naming
    /// its field.
    pub fn compile(
        config: &WorkspaceConfig,
        ctx: &DestinationContext,
        vars: &Vars,
    ) -> Result<Self, ConfigErrors> {
        Self::compile_with(config, ctx, vars, None)
    }

    /// Checks `config` and compiles it; a connection without a `credentials` block uses its
    /// credentials from `store` (the processor's live table), and is unusable, with the
    /// reason, when the store has none or cannot decrypt them.
    pub fn compile_with(
        config: &WorkspaceConfig,
        ctx: &DestinationContext,
        vars: &Vars,
        store: Option<&CredentialTable>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        check_name("workspace", &config.workspace, &mut errors);
        errors.extend(config.check_publishable_keys());

        let mut connections: HashMap<&str, BoundConnection> = HashMap::new();
        // Connections that exist but did not build; their errors are already reported.
        let mut broken: HashSet<&str> = HashSet::new();
        let unusable_connections = BrokenConnections::default();
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
            let built = if spec.credentials.is_empty() {
                stored_connection(&config.workspace, spec, destination, ctx, store).map(
                    |(connection, unusable)| {
                        if let Some(reason) = unusable {
                            unusable_connections.mark(&spec.id, &reason);
                        }
                        connection
                    },
                )
            } else {
                vars.resolve_connection(spec)
                    .and_then(|resolved| destination.connect(&resolved, ctx))
            };
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

        let mut templates = Templates::default();
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
                publishable_keys: config.publishable_keys.iter().map(Secret::new).collect(),
                connections: config
                    .connections
                    .iter()
                    .map(|c| (c.id.clone(), c.kind.clone()))
                    .collect(),
                rules,
                by_event,
                handles: connections
                    .into_values()
                    .map(|c| (c.id, c.connection))
                    .collect(),
                templates,
                broken: unusable_connections,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Marks `connection_id` broken: its deliveries are parked as dead without calling the
    /// API until the workspace config changes.
    pub fn mark_broken(&self, connection_id: &str, reason: &str) {
        if self.broken.mark(connection_id, reason) {
            tracing::error!(workspace = %self.id, connection = connection_id, reason,
                "connection broken; its deliveries are parked until the workspace is applied again");
        }
    }

    /// Why `connection_id` is broken, if it is.
    pub fn broken_reason(&self, connection_id: &str) -> Option<String> {
        self.broken.reason(connection_id)
    }

    /// The connection with id `connection_id`.
    pub fn connection(&self, connection_id: &str) -> Option<&Arc<dyn Connection>> {
        self.handles.get(connection_id)
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

    /// Whether `rule`'s `when` holds for the event (`ctx` from [`super::templates::render_context`]).
    pub fn condition_holds(
        &self,
        rule: &CompiledRule,
        ctx: &minijinja::Value,
    ) -> Result<bool, RenderError> {
        let Some(name) = &rule.when else {
            return Ok(true);
        };
        self.templates.holds(name, ctx)
    }

    /// Renders `rule`'s `with` for the event.
    pub fn render(
        &self,
        rule: &CompiledRule,
        ctx: &minijinja::Value,
    ) -> Result<serde_json::Value, RenderError> {
        self.templates.render(&rule.with, "with", ctx)
    }
}

/// The connection `spec` (which has no `credentials` block) makes with its stored credentials,
/// and why it is unusable when it is. Errors are problems of the workspace file itself.
fn stored_connection(
    workspace: &str,
    spec: &ConnectionSpec,
    destination: &dyn Destination,
    ctx: &DestinationContext,
    store: Option<&CredentialTable>,
) -> Result<(Arc<dyn Connection>, Option<String>), FieldError> {
    check_no_references(spec)?;
    let set_them = format!(
        "set them with `herald credentials set --workspace {workspace} --connection {}`",
        spec.id
    );
    let reason = match store.map(|s| s.get(workspace, &spec.id)) {
        None => {
            destination.check_settings(spec)?;
            return Ok((
                destinations::connector::unusable(
                    destination,
                    "its credentials are in the credential store".into(),
                ),
                None,
            ));
        }
        Some(None) => {
            destination.check_settings(spec)?;
            format!("no credentials in the workspace or the credential store; {set_them}")
        }
        Some(Some(Stored::Unusable(why))) => {
            destination.check_settings(spec)?;
            format!("stored credentials unusable: {why}")
        }
        Some(Some(Stored::Ready(fields))) => {
            let mut with_fields = spec.clone();
            with_fields.credentials = (*fields).clone();
            // Only stored credentials get a token source: rotated tokens are written back there.
            let ctx = ctx.for_connection(&spec.kind, workspace, &spec.id);
            match destination.connect(&with_fields, &ctx) {
                Ok(connection) => return Ok((connection, None)),
                // Settings are the file's problem; credentials the store's.
                Err(e) if !e.path.starts_with("credentials") => return Err(e),
                Err(e) => format!("stored credentials do not fit: {e}; {set_them}"),
            }
        }
    };
    tracing::error!(workspace, connection = %spec.id, %reason, "connection unusable");
    Ok((
        destinations::connector::unusable(destination, reason.clone()),
        Some(reason),
    ))
}

/// Compiles one rule. `Ok(None)` when its connection is one that failed to build: its templates
/// were still checked, the connection's own error is reported elsewhere.
fn compile_rule(
    spec: &RuleSpec,
    at: &str,
    connections: &HashMap<&str, BoundConnection>,
    broken: &HashSet<&str>,
    templates: &mut Templates,
) -> Result<Option<CompiledRule>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let when = match &spec.when {
        None => None,
        Some(cond) => {
            let name = format!("{}/when", spec.id);
            match templates.add_condition(name, cond) {
                Ok(name) => Some(name),
                Err(e) => {
                    errors.push(FieldError::new(format!("{at}.when"), e));
                    None
                }
            }
        }
    };
    let with = templates
        .add_value(&spec.with, &format!("{}/with", spec.id))
        .map_err(|(path, e)| errors.push(FieldError::new(format!("{at}.with{path}"), e)))
        .ok();
    let bound = match connections.get(spec.connection.as_str()) {
        Some(c) => {
            let action = c.connection.clone().bind(&spec.action);
            match action.and_then(|a| a.check(&spec.with).map(|()| a)) {
                Ok(action) => Some((c, action)),
                Err(e) => {
                    errors.push(e.under(at));
                    None
                }
            }
        }
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
    let (Some((connection, action)), Some(with)) = (bound, with) else {
        return Ok(None);
    };
    Ok(Some(CompiledRule {
        id: spec.id.clone(),
        event: spec.event.clone(),
        resource: spec.resource.clone(),
        resource_id: spec.resource_id.clone(),
        action,
        connection: connection.clone(),
        when,
        with,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::templates::render_context;

    fn workspace(rules: &str) -> Result<CompiledWorkspace, ConfigErrors> {
        let text = format!(
            "workspace: ws\nconnections:\n  - id: hook\n    type: webhook\n    url: http://127.0.0.1:9/h\n    credentials: {{ secret: whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA== }}\nrules:\n{rules}"
        );
        let config = WorkspaceConfig::parse(&text).expect("parses");
        let ctx = DestinationContext::for_local_tests();
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
    fn a_runaway_template_or_a_huge_output_fails_the_render_naming_the_field() {
        let ws = workspace(
            "  - id: r\n    event: lesson.completed\n    connection: hook\n    action: post\n    with:\n      loop: \"{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\"\n  - id: s\n    event: lesson.completed\n    connection: hook\n    action: post\n    with:\n      big: \"{{ payload.word * 300000 }}\"\n",
        )
        .unwrap();
        let env = envelope(serde_json::json!({"word": "ab"}));
        let err = ws.render(&ws.rules[0], &render_context(&env)).unwrap_err();
        assert_eq!(err.field, "with.loop");
        assert!(err.message.contains("fuel"), "{err}");
        let err = ws.render(&ws.rules[1], &render_context(&env)).unwrap_err();
        assert_eq!(err.field, "with.big");
        assert!(err.message.contains("over the limit"), "{err}");
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
