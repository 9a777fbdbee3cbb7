//! The `sluice` CLI's client commands: they talk to a running gateway's admin API.
//!
//! Exit codes scripts can trust: 0 done; 1 the API refused (its problem detail is printed);
//! 2 bad usage or input file; 3 the admin API could not be reached.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::upstream::Connector;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// Bearer token.
    pub token: Option<String>,
    /// PEM CA bundle for https.
    pub ca: Option<PathBuf>,
    /// Print JSON instead of tables.
    pub json: bool,
}

/// A failed command.
#[derive(Debug)]
pub enum CliError {
    /// The API answered with an error.
    Refused(StatusCode, Value),
    /// Bad usage or input.
    Usage(String),
    /// The admin API could not be reached.
    Unreachable(String),
}

impl CliError {
    /// Prints the error and returns the exit code.
    pub fn report(self) -> ExitCode {
        match self {
            Self::Refused(status, body) => {
                let detail = body["detail"].as_str().unwrap_or("");
                eprintln!("error: {status}: {detail}");
                if let Some(errors) = body["errors"].as_array() {
                    for e in errors {
                        eprintln!(
                            "  {}: {}",
                            e["path"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        );
                    }
                }
                ExitCode::from(1)
            }
            Self::Usage(m) => {
                eprintln!("error: {m}");
                ExitCode::from(2)
            }
            Self::Unreachable(m) => {
                eprintln!("error: cannot reach the admin API: {m}");
                ExitCode::from(3)
            }
        }
    }
}

type Result<T> = std::result::Result<T, CliError>;

/// One call to the admin API: `(status, JSON body)`; 4xx/5xx become [`CliError::Refused`].
pub async fn call(
    t: &Target,
    method: Method,
    path: &str,
    body: Option<(Bytes, &str)>,
    headers: &[(&str, String)],
) -> Result<Value> {
    let uri: http::Uri = format!("{}{path}", t.url.trim_end_matches('/'))
        .parse()
        .map_err(|e| CliError::Usage(format!("admin URL: {e}")))?;
    let tls = match (uri.scheme_str(), &t.ca) {
        (Some("https"), Some(ca)) => Some(
            crate::tls::client_config(
                &crate::config::UpstreamTls {
                    ca: ca.clone(),
                    sni: None,
                },
                false,
            )
            .map_err(|e| CliError::Usage(format!("--ca: {e:?}")))?,
        ),
        (Some("https"), None) => {
            return Err(CliError::Usage(
                "an https admin URL needs --ca (or SLUICE_ADMIN_CA)".into(),
            ));
        }
        _ => None,
    };
    let connector = Connector::new(Duration::from_secs(5), tls.map(|c| (c, None)));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = &t.token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let (bytes, ctype) = body.unwrap_or((Bytes::new(), "application/json"));
    let req = req
        .header(http::header::CONTENT_TYPE, ctype)
        .body(Full::new(bytes))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let resp = tokio::time::timeout(Duration::from_secs(120), client.request(req))
        .await
        .map_err(|_| CliError::Unreachable("no answer within 120 s".into()))?
        .map_err(|e| CliError::Unreachable(format!("{e:?}")))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?
        .to_bytes();
    let value: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| json!({ "detail": String::from_utf8_lossy(&body) }))
    };
    if status.is_client_error() || status.is_server_error() {
        return Err(CliError::Refused(status, value));
    }
    Ok(value)
}

fn json_body(v: &Value) -> Option<(Bytes, &'static str)> {
    Some((Bytes::from(v.to_string()), "application/json"))
}

/// Prints `rows` as an aligned table under `header`, or `raw` as JSON with `--json`.
fn table(t: &Target, raw: &Value, header: &[&str], rows: Vec<Vec<String>>) {
    if t.json {
        println!("{}", serde_json::to_string_pretty(raw).unwrap_or_default());
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// `sluice status`.
pub async fn status(t: &Target) -> Result<()> {
    let v = call(t, Method::GET, "/v1/status", None, &[]).await?;
    if t.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("version          {}", s(&v["version"]));
    println!("config revision  {}", s(&v["config_revision"]));
    println!("routes           {}", s(&v["routes"]));
    let redis = &v["redis"];
    let redis_state = match (redis["configured"].as_bool(), redis["connected"].as_bool()) {
        (Some(false), _) => "not configured".to_string(),
        (_, Some(true)) => "connected".to_string(),
        _ => "DISCONNECTED".to_string(),
    };
    println!(
        "redis            {redis_state} (fallbacks {})",
        redis["fallbacks"]
    );
    let rows = v["plugins"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                s(&p["name"]),
                s(&p["source"]),
                s(&p["version"]),
                s(&p["digest"]),
            ]
        })
        .collect();
    println!();
    table(
        t,
        &Value::Null,
        &["plugin", "source", "version", "digest"],
        rows,
    );
    Ok(())
}

/// `sluice apply -f FILE`: applies the routes, upstreams, consumers and plugin settings of
/// a TOML file declaratively and prints what changed.
pub async fn apply(t: &Target, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let body = serde_json::to_value(doc).map_err(|e| CliError::Usage(e.to_string()))?;
    let v = call(t, Method::PUT, "/v1/config", json_body(&body), &[]).await?;
    let changes = v["changes"].as_array().cloned().unwrap_or_default();
    if t.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if changes.is_empty() {
        println!("no changes (revision {})", s(&v["revision"]));
    } else {
        for c in &changes {
            let sign = match c["action"].as_str() {
                Some("added") => '+',
                Some("removed") => '-',
                _ => '~',
            };
            println!("{sign} {} {}", s(&c["kind"]), s(&c["name"]));
        }
        println!("applied: revision {}", s(&v["revision"]));
    }
    Ok(())
}

/// Drops JSON nulls (TOML has none).
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        v => v,
    }
}

/// `sluice export`: the API-managed configuration as TOML (re-appliable with `apply -f`).
pub async fn export(t: &Target) -> Result<()> {
    let v = call(t, Method::GET, "/v1/config", None, &[]).await?;
    if t.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let toml_value: toml::Value = toml::Value::try_from(strip_nulls(v))
        .map_err(|e| CliError::Usage(format!("cannot express as TOML: {e}")))?;
    print!(
        "{}",
        toml::to_string_pretty(&toml_value).map_err(|e| CliError::Usage(e.to_string()))?
    );
    Ok(())
}

/// `sluice plugin push NAME FILE`.
pub async fn plugin_push(
    t: &Target,
    name: &str,
    file: &Path,
    grants: &[String],
    signature: Option<String>,
) -> Result<()> {
    let bytes =
        std::fs::read(file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let mut path = format!("/v1/plugins/{name}/versions");
    if !grants.is_empty() {
        path.push_str(&format!("?grants={}", grants.join(",")));
    }
    let headers: Vec<(&str, String)> = signature
        .map(|s| vec![("x-sluice-signature", s)])
        .unwrap_or_default();
    let v = call(
        t,
        Method::POST,
        &path,
        Some((Bytes::from(bytes), "application/wasm")),
        &headers,
    )
    .await?;
    if t.json {
        println!("{v}");
    } else {
        println!(
            "{} version {} is live (sha256 {})",
            s(&v["name"]),
            s(&v["version"]),
            s(&v["digest"])
        );
    }
    Ok(())
}

/// `sluice plugin list`.
pub async fn plugin_list(t: &Target) -> Result<()> {
    let v = call(t, Method::GET, "/v1/plugins", None, &[]).await?;
    let rows = items(&v)
        .iter()
        .map(|p| {
            let versions = p["versions"].as_array().map_or(0, Vec::len);
            vec![
                s(&p["name"]),
                s(&p["source"]),
                s(&p["active"]),
                versions.to_string(),
            ]
        })
        .collect();
    table(t, &v, &["name", "source", "active", "versions"], rows);
    Ok(())
}

/// `sluice plugin rollback NAME [--to N]`.
pub async fn plugin_rollback(t: &Target, name: &str, to: Option<u32>) -> Result<()> {
    let body = json!({ "version": to });
    let v = call(
        t,
        Method::POST,
        &format!("/v1/plugins/{name}/rollback"),
        json_body(&strip_nulls(body)),
        &[],
    )
    .await?;
    if t.json {
        println!("{v}");
    } else {
        println!("{name}: version {} is live", s(&v["active"]));
    }
    Ok(())
}

/// `DELETE` of one resource, printing what was removed.
pub async fn remove(t: &Target, path: &str, what: &str) -> Result<()> {
    call(t, Method::DELETE, path, None, &[]).await?;
    if !t.json {
        println!("removed {what}");
    }
    Ok(())
}

/// `sluice route list`.
pub async fn route_list(t: &Target) -> Result<()> {
    let v = call(t, Method::GET, "/v1/routes", None, &[]).await?;
    let rows = items(&v)
        .iter()
        .map(|r| {
            let spec = &r["spec"];
            let target = if spec["upstream"].is_string() {
                format!("upstream {}", s(&spec["upstream"]))
            } else if spec.is_null() {
                "-".into()
            } else {
                "responder".into()
            };
            let path = ["path", "path_prefix", "path_regex"]
                .iter()
                .find_map(|k| spec[*k].as_str().map(String::from))
                .unwrap_or_else(|| "-".into());
            vec![s(&r["name"]), s(&r["source"]), path, target]
        })
        .collect();
    table(t, &v, &["name", "source", "path", "target"], rows);
    Ok(())
}

/// `sluice route get NAME`: the route as TOML (or JSON).
pub async fn route_get(t: &Target, name: &str) -> Result<()> {
    let v = call(t, Method::GET, &format!("/v1/routes/{name}"), None, &[]).await?;
    if t.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let wrapped = json!({ "routes": [strip_nulls(v)] });
    let toml_value: toml::Value =
        toml::Value::try_from(wrapped).map_err(|e| CliError::Usage(e.to_string()))?;
    print!(
        "{}",
        toml::to_string_pretty(&toml_value).map_err(|e| CliError::Usage(e.to_string()))?
    );
    Ok(())
}

/// `sluice consumer add NAME [--tag T…] [--key]`: creates the consumer, and an API key when
/// asked (printed once).
pub async fn consumer_add(t: &Target, name: &str, tags: &[String], key: bool) -> Result<()> {
    let v = call(
        t,
        Method::PUT,
        &format!("/v1/consumers/{name}"),
        json_body(&json!({ "tags": tags })),
        &[],
    )
    .await?;
    let cred = if key {
        Some(
            call(
                t,
                Method::POST,
                &format!("/v1/consumers/{name}/credentials"),
                None,
                &[],
            )
            .await?,
        )
    } else {
        None
    };
    if t.json {
        println!("{}", json!({ "consumer": v, "credential": cred }));
    } else {
        println!("consumer {name} saved");
        if let Some(c) = cred {
            println!("api key (shown once): {}", s(&c["key"]));
        }
    }
    Ok(())
}

/// `sluice consumer list`.
pub async fn consumer_list(t: &Target) -> Result<()> {
    let v = call(t, Method::GET, "/v1/consumers", None, &[]).await?;
    let rows = items(&v)
        .iter()
        .map(|c| {
            let creds = c["credentials"].as_array().map_or(0, Vec::len);
            let tags = c["tags"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![s(&c["name"]), tags, creds.to_string()]
        })
        .collect();
    table(t, &v, &["name", "tags", "credentials"], rows);
    Ok(())
}

/// `sluice token create NAME [--role R]`: prints the secret once.
pub async fn token_create(t: &Target, name: &str, role: &str) -> Result<()> {
    let v = call(
        t,
        Method::POST,
        "/v1/tokens",
        json_body(&json!({ "name": name, "role": role })),
        &[],
    )
    .await?;
    if t.json {
        println!("{v}");
    } else {
        println!("token {name} ({role}), shown once: {}", s(&v["token"]));
    }
    Ok(())
}

/// `sluice token list`.
pub async fn token_list(t: &Target) -> Result<()> {
    let v = call(t, Method::GET, "/v1/tokens", None, &[]).await?;
    let rows = items(&v)
        .iter()
        .map(|k| vec![s(&k["name"]), s(&k["role"])])
        .collect();
    table(t, &v, &["name", "role"], rows);
    Ok(())
}
