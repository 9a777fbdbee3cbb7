//! `ip-restriction`: allows or refuses requests by the client's IP address (after the
//! gateway's trusted-proxy resolution), with IPv4 and IPv6 CIDR ranges. A match in
//! `deny` always refuses; when `allow` is set, only addresses in it pass. Refused
//! requests get 403 with a JSON body.
//!
//! Capabilities: none.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::json;
use sluice_sdk::{Context, Policy, Request, RequestDecision};

/// The message of the 403 body by default.
pub const DEFAULT_MESSAGE: &str = "client IP not allowed";

/// `ip-restriction`'s configuration, as written in the route's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses or CIDR ranges allowed; when non-empty, every other address is refused.
    /// By default empty (every address not denied passes).
    pub allow: Vec<String>,
    /// Addresses or CIDR ranges refused, even when also allowed. By default empty.
    pub deny: Vec<String>,
    /// The `message` of the 403 JSON body. By default `client IP not allowed`.
    pub message: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            message: DEFAULT_MESSAGE.to_owned(),
        }
    }
}

/// The policy.
#[derive(Debug)]
pub struct IpRestriction {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    body: serde_json::Value,
}

impl Policy for IpRestriction {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err("set `allow`, `deny` or both".into());
        }
        Ok(Self {
            allow: parse_list("allow", &config.allow)?,
            deny: parse_list("deny", &config.deny)?,
            body: json!({ "error": "forbidden", "message": config.message }),
        })
    }

    fn on_request(&self, req: &Request, _ctx: &Context) -> RequestDecision {
        // An address the host could not give us is refused: fail closed.
        match req.client_ip_addr() {
            Some(ip) if self.permits(ip) => RequestDecision::Continue,
            _ => RequestDecision::respond_json(403, &self.body),
        }
    }
}

impl IpRestriction {
    /// Deny wins; then, when an allow list exists, the address must be in it.
    fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// Parses addresses (`192.0.2.1`, `2001:db8::1`) and ranges (`10.0.0.0/8`,
/// `2001:db8::/32`). IPv4-mapped IPv6 entries are stored as IPv4, as client addresses
/// are compared in that form.
fn parse_list(field: &str, entries: &[String]) -> Result<Vec<IpNet>, String> {
    let nets = entries
        .iter()
        .map(|e| {
            let e = e.trim();
            let net = match e.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => e
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("`{field}`: {e:?} is not an IP address or CIDR range"))?,
            };
            Ok(canonical(net))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(IpNet::aggregate(&nets))
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as `a.b.c.d/(n-96)`; everything else unchanged.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

// No response phase: the `request-policy` world (the gateway skips it on the way back).
sluice_sdk::export_request_policy!(IpRestriction);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{TestContext, TestHost, TestRequest, json};

    fn status(host: &TestHost, p: &IpRestriction, ip: &str) -> Option<u16> {
        let req = TestRequest::get("/").client_ip(ip);
        host.on_request(p, &req, &TestContext::new()).status()
    }

    #[test]
    fn allow_list_admits_only_its_ranges() {
        let host = TestHost::with_grants(&[]);
        let p: IpRestriction = host
            .init(json!({ "allow": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"] }))
            .unwrap();
        assert_eq!(status(&host, &p, "10.1.2.3"), None);
        assert_eq!(status(&host, &p, "192.0.2.7"), None);
        assert_eq!(status(&host, &p, "2001:db8:1::5"), None);
        assert_eq!(status(&host, &p, "::ffff:10.9.9.9"), None, "mapped IPv4");
        assert_eq!(status(&host, &p, "192.0.2.8"), Some(403));
        assert_eq!(status(&host, &p, "2001:db9::1"), Some(403));
    }

    #[test]
    fn deny_wins_over_allow() {
        let host = TestHost::with_grants(&[]);
        let p: IpRestriction = host
            .init(json!({ "allow": ["10.0.0.0/8"], "deny": ["10.6.0.0/16"] }))
            .unwrap();
        assert_eq!(status(&host, &p, "10.5.0.1"), None);
        assert_eq!(status(&host, &p, "10.6.0.1"), Some(403));
    }

    #[test]
    fn deny_only_admits_everything_else() {
        let host = TestHost::with_grants(&[]);
        let p: IpRestriction = host
            .init(json!({ "deny": ["203.0.113.0/24", "::ffff:198.51.100.0/120"] }))
            .unwrap();
        assert_eq!(status(&host, &p, "198.18.0.1"), None);
        assert_eq!(status(&host, &p, "203.0.113.9"), Some(403));
        assert_eq!(
            status(&host, &p, "198.51.100.20"),
            Some(403),
            "mapped entry"
        );
    }

    #[test]
    fn refusal_body_and_unparseable_client_ip() {
        let host = TestHost::with_grants(&[]);
        let p: IpRestriction = host
            .init(json!({ "deny": ["192.0.2.0/24"], "message": "go away" }))
            .unwrap();
        let req = TestRequest::get("/").client_ip("192.0.2.1");
        let d = host.on_request(&p, &req, &TestContext::new());
        let r = d.response().unwrap();
        assert_eq!(r.header_str("content-type"), Some("application/json"));
        assert_eq!(r.body_str(), r#"{"error":"forbidden","message":"go away"}"#);
        assert_eq!(status(&host, &p, "not-an-ip"), Some(403));
    }

    #[test]
    fn rejections() {
        let host = TestHost::with_grants(&[]);
        let cases = [
            (json!({}), "set `allow`, `deny` or both"),
            (
                json!({ "allow": ["10.0.0.0/33"] }),
                "not an IP address or CIDR range",
            ),
            (
                json!({ "deny": ["example.com"] }),
                "not an IP address or CIDR range",
            ),
            (json!({ "allowed": ["10.0.0.0/8"] }), "unknown field"),
        ];
        for (v, expected) in cases {
            let err = host.init::<IpRestriction>(v.clone()).unwrap_err();
            assert!(err.contains(expected), "{v}: {err}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert!(c.allow.is_empty() && c.deny.is_empty());
        assert_eq!(c.message, "client IP not allowed");
    }

    #[test]
    fn readme_examples_are_accepted() {
        let host = TestHost::new();
        let configs =
            sluice_sdk::testing::readme_configs(include_str!("../README.md"), "ip-restriction");
        assert!(!configs.is_empty());
        for config in configs {
            host.init::<IpRestriction>(config.clone())
                .unwrap_or_else(|e| panic!("{config}: {e}"));
        }
    }
}
