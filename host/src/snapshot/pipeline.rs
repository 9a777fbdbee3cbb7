//! Compiling plugins and route pipelines into ready policy instances. Every policy is
//! instantiated and `init`ed here, so a configuration whose policies reject their settings
//! is refused before it can serve.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, Method, StatusCode};
use wasmtime::component::Component;

use crate::config::{self, FailureMode, Issue, KeyPath, PolicyMode};
use crate::policy::{
    CallLimits, Capabilities, Capability, Grants, InstanceMode, Outbound, PolicyEnv, PolicyError,
    PolicyInstance,
};
use crate::routing::ValueCond;

/// A compiled plugin.
pub struct CompiledPlugin {
    /// The component.
    pub component: Component,
    /// SHA-256 of its bytes (hex).
    pub digest: String,
    grants: Vec<Capability>,
    outbound: Option<Arc<rustls::ClientConfig>>,
}

/// A condition deciding whether a step runs.
#[derive(Debug, Clone, Default)]
pub struct StepCondition {
    /// Methods (empty: any).
    pub methods: Vec<Method>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Header conditions.
    pub headers: Vec<(HeaderName, ValueCond)>,
}

impl StepCondition {
    /// Whether the request satisfies the condition.
    pub fn holds(&self, method: &Method, path: &str, headers: &http::HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self.headers.iter().all(|(n, c)| {
                headers
                    .get_all(n)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|s| c.holds(s)))
            })
    }
}

/// One policy of a route's pipeline.
pub struct Step {
    /// The policy.
    pub policy: Arc<PolicyInstance>,
    /// When it runs.
    pub when: Option<StepCondition>,
    /// What a failure does.
    pub on_failure: FailureMode,
    /// Status of a closed failure.
    pub failure_status: StatusCode,
}

pub(crate) fn parse_grants(
    names: &[String],
    at: &KeyPath,
    issues: &mut Vec<Issue>,
) -> Vec<Capability> {
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match Capability::ALL.into_iter().find(|c| c.interface().ends_with(&format!("/{n}"))) {
            Some(c) => out.push(c),
            None => issues.push(Issue::new(
                at.index(i),
                format!("unknown capability {n:?} (log, clock, kv, rate-limit, analytics, outbound-http)"),
            )),
        }
    }
    out
}

/// Reads and compiles every plugin.
pub fn compile_plugins(
    config: &config::Config,
    env: &PolicyEnv,
    issues: &mut Vec<Issue>,
) -> BTreeMap<String, CompiledPlugin> {
    let mut out = BTreeMap::new();
    if config.plugins.is_empty() {
        return out;
    }
    let runtime = match env.runtime() {
        Ok(r) => r,
        Err(e) => {
            issues.push(Issue::new(KeyPath::default().key("plugins"), e.to_string()));
            return out;
        }
    };
    for (name, p) in &config.plugins {
        let at = KeyPath::default().key("plugins").key(name.as_str());
        let grants = parse_grants(&p.grants, &at.key("grants"), issues);
        let outbound = match &p.outbound_ca {
            None => None,
            Some(ca) => match crate::tls::client_config(
                &config::UpstreamTls {
                    ca: ca.clone(),
                    sni: None,
                },
                false,
            ) {
                Ok(c) => Some(c),
                Err(es) => {
                    for (_, m) in es {
                        issues.push(Issue::new(at.key("outbound_ca"), m));
                    }
                    None
                }
            },
        };
        if p.max_memory_bytes > crate::policy::engine::MAX_PLUGIN_MEMORY as u64 {
            issues.push(Issue::new(
                at.key("max_memory_bytes"),
                format!("at most {} bytes", crate::policy::engine::MAX_PLUGIN_MEMORY),
            ));
        }
        let bytes = match std::fs::read(&p.path) {
            Ok(b) => b,
            Err(e) => {
                issues.push(Issue::new(
                    at.key("path"),
                    format!("cannot read {}: {e}", p.path.display()),
                ));
                continue;
            }
        };
        match runtime.compile(&bytes) {
            Ok((component, digest)) => {
                tracing::info!(plugin = %name, version = ?p.version, %digest, "plugin compiled");
                out.insert(
                    name.clone(),
                    CompiledPlugin {
                        component,
                        digest,
                        grants,
                        outbound,
                    },
                );
            }
            Err(e) => issues.push(Issue::new(
                at.key("path"),
                format!("{}: {e}", p.path.display()),
            )),
        }
    }
    out
}

fn condition(c: &config::PolicyCondition, at: &KeyPath, issues: &mut Vec<Issue>) -> StepCondition {
    let mut out = StepCondition {
        path_prefix: c.path_prefix.clone(),
        ..Default::default()
    };
    for (i, m) in c.methods.iter().enumerate() {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => out.methods.push(m),
            Err(_) => issues.push(Issue::new(
                at.key("methods").index(i),
                format!("invalid method {m:?}"),
            )),
        }
    }
    for (i, h) in c.headers.iter().enumerate() {
        let hat = at.key("headers").index(i);
        match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(n) => out.headers.push((n, super::value_cond(h, &hat, issues))),
            Err(_) => issues.push(Issue::new(
                hat.key("name"),
                format!("invalid header name {:?}", h.name),
            )),
        }
    }
    out
}

/// Builds, instantiates and `init`s the pipeline of route `r`.
pub async fn compile_pipeline(
    config: &config::Config,
    r: &config::Route,
    at: &KeyPath,
    plugins: &BTreeMap<String, CompiledPlugin>,
    env: &PolicyEnv,
    issues: &mut Vec<Issue>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (j, p) in r.policies.iter().enumerate() {
        let pat = at.key("policies").index(j);
        let Some(def) = config.plugins.get(&p.plugin) else {
            issues.push(Issue::new(
                pat.key("plugin"),
                format!("unknown plugin {:?}", p.plugin),
            ));
            continue;
        };
        let Some(compiled) = plugins.get(&p.plugin) else {
            continue; // its own error was reported under [plugins]
        };
        let grants = match &p.grants {
            None => compiled.grants.clone(),
            Some(names) => {
                let g = parse_grants(names, &pat.key("grants"), issues);
                for c in &g {
                    if !compiled.grants.contains(c) {
                        issues.push(Issue::new(
                            pat.key("grants"),
                            format!("{} is not granted to plugin {:?}", c.interface(), p.plugin),
                        ));
                    }
                }
                g
            }
        };
        let status = match StatusCode::from_u16(p.failure_status) {
            Ok(s) if s.as_u16() >= 400 => s,
            _ => {
                issues.push(Issue::new(
                    pat.key("failure_status"),
                    "must be a 4xx or 5xx status",
                ));
                continue;
            }
        };
        let when = p
            .when
            .as_ref()
            .map(|c| condition(c, &pat.key("when"), issues));
        let label = format!("{}/{}#{j}", r.name, p.plugin);
        let config_json = match serde_json::to_string(&p.config) {
            Ok(s) => s,
            Err(e) => {
                issues.push(Issue::new(pat.key("config"), e.to_string()));
                continue;
            }
        };
        let Ok(runtime) = env.runtime() else { continue };
        let (Some(kv), Some(limiter)) = (
            env.kv(crate::control::plugin_base(&p.plugin), p),
            env.limiter(&label, p),
        ) else {
            issues.push(Issue::new(
                pat.clone(),
                "kv_backend or rate_limit_backend uses Redis but there is no [redis] section \
                 (a [redis] section added to a running gateway applies at restart)",
            ));
            continue;
        };
        let caps = Arc::new(Capabilities {
            plugin: label.clone(),
            epoch: std::time::Instant::now(),
            kv,
            limiter,
            analytics: env.analytics.clone(),
            outbound: Outbound::new(def.outbound_allowlist.clone(), compiled.outbound.clone()),
        });
        let limits = CallLimits {
            max_memory: def.max_memory_bytes as usize,
            cpu: def.cpu_timeout.get(),
            wall: def.timeout.get(),
            recycle_after: def.recycle_after.max(1),
        };
        let mode = match p.mode {
            PolicyMode::Pooled => InstanceMode::Pooled,
            PolicyMode::Isolated => InstanceMode::Isolated,
        };
        match PolicyInstance::new(
            &runtime,
            label,
            p.plugin.clone(),
            &compiled.component,
            Grants::of(&grants),
            config_json,
            caps,
            mode,
            limits,
        )
        .await
        {
            Ok(inst) => steps.push(Step {
                policy: Arc::new(inst),
                when,
                on_failure: p.on_failure,
                failure_status: status,
            }),
            // A configuration the policy refused points at its `config`, when it has one.
            Err(e) => issues.push(Issue::new(
                if matches!(e, PolicyError::Init(_)) && !p.config.is_empty() {
                    pat.key("config")
                } else {
                    pat.clone()
                },
                format!("plugin {:?}: {e}", p.plugin),
            )),
        }
    }
    steps
}
