//! The serving snapshot: a configuration compiled into routers, upstream groups and TLS
//! configurations. It is built completely (every check done) before it is swapped in, so a
//! bad configuration is rejected whole and never half-applied.

pub mod bounds;
pub mod pipeline;
mod routes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderMap;
use ipnet::IpNet;

use crate::config::{self, Config, Issue, KeyPath};
use crate::policy::PolicyEnv;
use crate::proxy::headers::HeaderEdits;
use crate::routing::{Router, ValueCond, anchored};
use crate::upstream::UpstreamGroup;

/// What a route does with a matched request.
pub enum Action {
    /// Proxy to an upstream group.
    Proxy(Arc<UpstreamGroup>),
    /// Answer with the request as JSON.
    Echo,
    /// Answer with the analytics aggregate.
    Analytics,
    /// Answer with a fixed response.
    Static {
        /// Status.
        status: StatusCode,
        /// Headers.
        headers: HeaderMap,
        /// Body.
        body: Bytes,
    },
}

/// A compiled route.
pub struct RouteRuntime {
    /// Route name (shared with each request's policy view and access-log record).
    pub name: Arc<str>,
    /// Target.
    pub action: Action,
    /// Prefix removed from the forwarded path.
    pub strip_prefix: Option<String>,
    /// Replacement path (with `{param}` placeholders).
    pub rewrite_path: Option<String>,
    /// Request header edits.
    pub request_headers: HeaderEdits,
    /// Response header edits.
    pub response_headers: HeaderEdits,
    /// Request body limit.
    pub max_body_bytes: u64,
    /// The slowest the request body may arrive; `None` when unchecked.
    pub min_body_rate: Option<crate::body::MinRate>,
    /// Time until the response head (overrides the upstream's).
    pub timeout: Option<Duration>,
    /// Whether WebSocket upgrades pass through.
    pub websocket: bool,
    /// Policies, in request order.
    pub pipeline: Vec<pipeline::Step>,
}

impl RouteRuntime {
    /// Time until the response head: the route's `timeout`, else its upstream's
    /// `request_timeout`, else (a responder route) the upstreams' default.
    pub fn head_timeout(&self) -> Duration {
        self.timeout.unwrap_or(match &self.action {
            Action::Proxy(group) => group.request_timeout,
            _ => Duration::from_secs(config::DEFAULT_REQUEST_TIMEOUT_SECS),
        })
    }
}

/// A compiled listener (its socket is bound once, outside the snapshot).
pub struct ListenerRuntime {
    /// Name.
    pub name: String,
    /// Configured address.
    pub bind: std::net::SocketAddr,
    /// Prior-knowledge h2c allowed.
    pub h2c: bool,
    /// TLS configuration, if any.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Route table.
    pub router: Router<Arc<RouteRuntime>>,
}

/// Everything one request needs, immutable once built.
pub struct Snapshot {
    /// Listeners in configuration order.
    pub listeners: Vec<ListenerRuntime>,
    /// Upstream groups by name.
    pub upstreams: BTreeMap<String, Arc<UpstreamGroup>>,
    /// Trusted proxy networks.
    pub trusted_proxies: Vec<IpNet>,
    /// The source configuration.
    pub config: Config,
    /// The shared policy environment.
    pub policy_env: Arc<PolicyEnv>,
    /// SHA-256 of each loaded plugin's component, by plugin name.
    pub plugin_digests: BTreeMap<String, String>,
    /// Every policy instance of every route (for their counters).
    pub policies: Vec<Arc<crate::policy::PolicyInstance>>,
    /// The bytes of request bodies that may be held whole at once. Each snapshot has its
    /// own: after a reload, bodies still held under the previous one are not counted in it.
    pub body_buffers: Arc<tokio::sync::Semaphore>,
}

impl Snapshot {
    /// Compiles a configuration, reporting every problem found. Every policy is
    /// instantiated and initialised.
    pub async fn build(config: &Config, env: Arc<PolicyEnv>) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let root = KeyPath::default();

        let mut trusted = Vec::new();
        for (i, c) in config.gateway.trusted_proxies.iter().enumerate() {
            match parse_cidr(c) {
                Some(n) => trusted.push(n),
                None => issues.push(Issue::new(
                    root.key("gateway").key("trusted_proxies").index(i),
                    format!("{c:?} is not a CIDR (e.g. 10.0.0.0/8) or IP address"),
                )),
            }
        }
        issues.extend(bounds::check(config));
        let limits = &config.limits;

        let mut upstreams = BTreeMap::new();
        for (name, u) in &config.upstreams {
            match UpstreamGroup::build(name, u) {
                Ok(g) => {
                    upstreams.insert(name.clone(), Arc::new(g));
                }
                Err(es) => {
                    let at = root.key("upstreams").key(name.as_str());
                    issues.extend(
                        es.into_iter()
                            .map(|(f, m)| Issue::new(field_path(&at, &f), m)),
                    );
                }
            }
        }

        if config.listeners.is_empty() {
            issues.push(Issue::new(
                root.key("listeners"),
                "at least one listener is required",
            ));
        }
        let mut listeners: Vec<ListenerRuntime> = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let at = root.key("listeners").index(i);
            if listeners.iter().any(|x| x.name == l.name) {
                issues.push(Issue::new(
                    at.key("name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            // Port 0 asks the OS for a free port, so any number of such listeners coexist.
            if l.bind.port() != 0 && listeners.iter().any(|x| x.bind == l.bind) {
                issues.push(Issue::new(
                    at.key("bind"),
                    format!("address {} is bound twice", l.bind),
                ));
            }
            let tls = match &l.tls {
                None => None,
                Some(t) => match crate::tls::server_config(t) {
                    Ok(c) => Some(c),
                    Err(es) => {
                        let at = at.key("tls");
                        issues.extend(
                            es.into_iter()
                                .map(|(f, m)| Issue::new(field_path(&at, &f), m)),
                        );
                        None
                    }
                },
            };
            listeners.push(ListenerRuntime {
                name: l.name.clone(),
                bind: l.bind,
                h2c: l.h2c,
                tls,
                router: Router::default(),
            });
        }

        let plugins = pipeline::compile_plugins(config, &env, &mut issues);
        let mut policies = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let at = root.key("routes").index(i);
            if names.contains(&r.name.as_str()) {
                issues.push(Issue::new(
                    at.key("name"),
                    format!("duplicate route name {:?}", r.name),
                ));
            }
            names.push(&r.name);
            let before = issues.len();
            let m = routes::compile_match(r, &at, &mut issues);
            let mut rt = routes::compile_route(r, &at, &upstreams, limits, &mut issues);
            if let Some(rt) = &mut rt {
                rt.pipeline =
                    pipeline::compile_pipeline(config, r, &at, &plugins, &env, &mut issues).await;
                policies.extend(rt.pipeline.iter().map(|s| s.policy.clone()));
            }
            for (j, l) in r.listeners.iter().enumerate() {
                if !config.listeners.iter().any(|x| &x.name == l) {
                    issues.push(Issue::new(
                        at.key("listeners").index(j),
                        format!("unknown listener {l:?}"),
                    ));
                }
            }
            if issues.len() > before {
                continue;
            }
            let (Some(m), Some(rt)) = (m, rt) else {
                continue;
            };
            let rt = Arc::new(rt);
            for l in &mut listeners {
                if r.listeners.is_empty() || r.listeners.contains(&l.name) {
                    l.router.add(i, &m, rt.clone());
                }
            }
        }
        for l in &mut listeners {
            l.router.finish();
        }
        if issues.is_empty() {
            Ok(Self {
                listeners,
                upstreams,
                trusted_proxies: trusted,
                config: config.clone(),
                policy_env: env,
                plugin_digests: plugins
                    .iter()
                    .map(|(n, c)| (n.clone(), c.digest.clone()))
                    .collect(),
                policies,
                body_buffers: Arc::new(tokio::sync::Semaphore::new(
                    usize::try_from(limits.max_buffered_body_bytes).unwrap_or(usize::MAX >> 3),
                )),
            })
        } else {
            Err(issues)
        }
    }

    /// Starts the background work (health checks) of a snapshot about to go live, taking
    /// over what `previous`, the snapshot it replaces, learned about upstream targets.
    pub fn activate(&self, previous: Option<&Snapshot>) {
        for (name, g) in &self.upstreams {
            let old = previous.and_then(|p| p.upstreams.get(name));
            if let Some(old) = old {
                g.inherit(old);
            }
            g.start_health_checks(old.is_some());
        }
        // Upstreams the new configuration dropped stop probing too.
        for (name, old) in previous.map(|p| &p.upstreams).into_iter().flatten() {
            if !self.upstreams.contains_key(name) {
                old.retire();
            }
        }
        // And the rate-limit state of policies it dropped is freed, as are the compiled
        // components no plugin of it uses.
        self.policy_env
            .retain_limiters(self.policies.iter().map(|p| p.label.as_str()));
        if let Some(runtime) = self.policy_env.runtime_if_started() {
            runtime.retain_compiled(|d| self.plugin_digests.values().any(|live| live == d));
        }
    }
}

/// A CIDR or an address. IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are taken as
/// the IPv4 networks they are, since peers arrive as IPv4 addresses (a dual-stack listener's
/// `::ffff:a.b.c.d` included).
fn parse_cidr(s: &str) -> Option<IpNet> {
    let net = s
        .parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))?;
    Some(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok()?),
            None => net,
        },
        net => net,
    })
}

/// Extends `at` by a dotted field path such as `targets[0].address`.
pub(crate) fn field_path(at: &KeyPath, field: &str) -> KeyPath {
    let mut p = at.clone();
    for part in field.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            p = p.key(key);
        }
        for idx in rest.split('[') {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                p = p.index(n);
            }
        }
    }
    p
}

pub(crate) fn value_cond(
    v: &config::ValueMatch,
    at: &KeyPath,
    issues: &mut Vec<Issue>,
) -> ValueCond {
    match (&v.value, &v.regex) {
        (Some(_), Some(_)) => {
            issues.push(Issue::new(
                at.clone(),
                "set either value or regex, not both",
            ));
            ValueCond::Present
        }
        (Some(x), None) => ValueCond::Exact(x.clone()),
        (None, Some(r)) => match anchored(r) {
            Ok(re) => ValueCond::Regex(re),
            Err(e) => {
                issues.push(Issue::new(at.key("regex"), e));
                ValueCond::Present
            }
        },
        (None, None) => ValueCond::Present,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(src: &str) -> Vec<String> {
        let c: Config = toml::from_str(src).unwrap();
        let store = crate::state::Store::in_memory(None, None, Default::default()).unwrap();
        let env = PolicyEnv::new(&c.policy, std::sync::Arc::new(store), None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match rt.block_on(Snapshot::build(&c, env)) {
            Ok(_) => vec![],
            Err(is) => is
                .into_iter()
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect(),
        }
    }

    const L: &str = "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n";

    #[test]
    fn refuses_framing_headers_in_route_edits_and_static_responses() {
        let src = format!(
            "{L}[[routes]]\nname = \"r\"\nrespond = {{ static = {{ body = \"x\", headers = {{ content-length = \"0\" }} }} }}\nresponse_headers = {{ set = {{ transfer-encoding = \"chunked\" }}, add = {{ x-ok = \"1\" }} }}\nrequest_headers = {{ remove = [\"connection\"] }}\n"
        );
        let all = issues(&src);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(
            all.iter()
                .any(|i| i.contains("content-length") && i.contains("the gateway's to set")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|i| i.starts_with("routes[0].response_headers.set.transfer-encoding")),
            "{all:?}"
        );
    }

    #[test]
    fn reports_unknown_upstream_and_bad_cidr() {
        let src = format!(
            "[gateway]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{L}[[routes]]\nname = \"r\"\nupstream = \"nope\"\n"
        );
        assert_eq!(
            issues(&src),
            vec![
                "gateway.trusted_proxies[0]: \"10.0.0.0/33\" is not a CIDR (e.g. 10.0.0.0/8) or IP address",
                "routes[0].upstream: unknown upstream \"nope\"",
            ]
        );
    }

    #[test]
    fn reports_a_missing_certificate_file() {
        let src = format!(
            "{L}[listeners.tls]\ncertificates = [{{ cert = \"/nonexistent/c.pem\", key = \"/nonexistent/k.pem\" }}]\n"
        );
        let is = issues(&src);
        assert!(
            is[0].starts_with(
                "listeners[0].tls.certificates[0].cert: cannot read /nonexistent/c.pem"
            ),
            "{is:?}"
        );
    }

    #[test]
    fn the_same_fixed_address_twice_is_a_conflict_but_port_zero_twice_is_not() {
        let two = |port: u16| {
            format!(
                "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:{port}\"\n[[listeners]]\nname = \"b\"\nbind = \"127.0.0.1:{port}\"\n"
            )
        };
        assert_eq!(
            issues(&two(8080)),
            vec!["listeners[1].bind: address 127.0.0.1:8080 is bound twice"]
        );
        assert_eq!(issues(&two(0)), Vec::<String>::new());
    }

    #[test]
    fn a_circuit_breaker_too_large_for_a_semaphore_is_an_issue_not_a_panic() {
        let up = "[upstreams.u]\ntargets = [{ address = \"127.0.0.1:1\" }]\n";
        assert_eq!(
            issues(&format!(
                "{L}{up}circuit_breaker = {{ max_concurrent = 4611686018427387904 }}\n"
            )),
            vec!["upstreams.u.circuit_breaker.max_concurrent: must be 1 to 1000000"]
        );
    }

    #[test]
    fn ipv4_mapped_trusted_networks_are_taken_as_ipv4() {
        assert_eq!(parse_cidr("::ffff:10.0.0.0/104"), "10.0.0.0/8".parse().ok());
        assert_eq!(parse_cidr("::ffff:10.0.0.5"), "10.0.0.5/32".parse().ok());
        assert_eq!(parse_cidr("2001:db8::/32"), "2001:db8::/32".parse().ok());
    }

    #[test]
    fn field_paths_split_indices() {
        let p = field_path(
            &KeyPath::default().key("upstreams").key("u"),
            "targets[1].address",
        );
        assert_eq!(p.to_string(), "upstreams.u.targets[1].address");
    }
}
