//! Built-in responders: `echo` (the request as JSON) and `static` (a fixed response).

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use super::{ConnInfo, ProxyError, WholeBody};
use crate::body::{self, BoxBody};
use crate::snapshot::RouteRuntime;

/// Answers with the request as JSON: method, path, query, version, headers, client and body.
pub(super) async fn echo(
    req: Request<BoxBody>,
    conn: &ConnInfo,
    route: &RouteRuntime,
    client: IpAddr,
    whole: WholeBody<'_>,
) -> Result<Response<BoxBody>, ProxyError> {
    let (parts, incoming) = req.into_parts();
    let held = whole.read(incoming).await?;
    let bytes = &held.bytes;
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => *prev = Value::Array(vec![prev.take(), v]),
            None => {
                headers.insert(name.as_str().to_string(), v);
            }
        }
    }
    let doc = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": super::version_str(parts.version),
        "scheme": conn.scheme,
        "headers": headers,
        "client": client.to_string(),
        "route": &*route.name,
        "body": String::from_utf8_lossy(bytes),
    });
    let mut resp = Response::new(body::full(doc.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A fixed response.
pub(super) fn fixed(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response<BoxBody> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers.clone();
    resp
}

/// Answers with the analytics aggregate.
pub(super) fn analytics(env: &crate::policy::PolicyEnv) -> Response<BoxBody> {
    let mut resp = Response::new(body::full(env.analytics.snapshot().to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
