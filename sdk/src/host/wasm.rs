//! The guest backend: the WIT bindings of `sluice:policy@0.1.0` and conversions between
//! them and the SDK's types.
//!
//! Every capability is a plain import call. Imports a policy never calls are dropped by
//! the linker, so the component imports only the capabilities the policy uses.

#![allow(unsafe_code)] // generated bindings

use super::{ContextSource, Host, RequestSource, ResponseSource};
use crate::decision::{self, Header};
use crate::http::{HttpError, HttpResponse};
use crate::kv::KvError;
use crate::log::Level;
use crate::rate_limit::{Limit, Verdict};

/// The generated bindings of the header-only `policy` world: every interface (the shared
/// types and the capability imports) and the world's exports. The export glue is emitted by
/// [`crate::export_policy!`] in the policy's own crate, together with the component-type
/// section, so a crate's component exports only the world its macro names.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/policy.wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "__sluice_export_bindings",
        default_bindings_module: "sluice_sdk::__private::bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
    });
}

/// The generated bindings of the `body-policy` world: only its exports (which add
/// `on-request-body`). Every interface is mapped onto [`bindings`], so both worlds share one
/// set of types and imports. The export glue is emitted by [`crate::export_body_policy!`].
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod body_bindings {
    wit_bindgen::generate!({
        path: "../wit/policy.wit",
        world: "body-policy",
        pub_export_macro: true,
        export_macro_name: "__sluice_export_body_bindings",
        default_bindings_module: "sluice_sdk::__private::body_bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
        with: {
            "sluice:policy/types@0.1.0": crate::host::wasm::bindings::sluice::policy::types,
            "sluice:policy/log@0.1.0": crate::host::wasm::bindings::sluice::policy::log,
            "sluice:policy/clock@0.1.0": crate::host::wasm::bindings::sluice::policy::clock,
            "sluice:policy/kv@0.1.0": crate::host::wasm::bindings::sluice::policy::kv,
            "sluice:policy/rate-limit@0.1.0": crate::host::wasm::bindings::sluice::policy::rate_limit,
            "sluice:policy/analytics@0.1.0": crate::host::wasm::bindings::sluice::policy::analytics,
            "sluice:policy/outbound-http@0.1.0": crate::host::wasm::bindings::sluice::policy::outbound_http,
        },
    });
}

/// The generated bindings of the `request-policy` world: only its exports (`init` and
/// `on-request`; no response phase). Every interface is mapped onto [`bindings`]. The export
/// glue is emitted by [`crate::export_request_policy!`].
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod request_bindings {
    wit_bindgen::generate!({
        path: "../wit/policy.wit",
        world: "request-policy",
        pub_export_macro: true,
        export_macro_name: "__sluice_export_request_bindings",
        default_bindings_module: "sluice_sdk::__private::request_bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
        with: {
            "sluice:policy/types@0.1.0": crate::host::wasm::bindings::sluice::policy::types,
            "sluice:policy/log@0.1.0": crate::host::wasm::bindings::sluice::policy::log,
            "sluice:policy/clock@0.1.0": crate::host::wasm::bindings::sluice::policy::clock,
            "sluice:policy/kv@0.1.0": crate::host::wasm::bindings::sluice::policy::kv,
            "sluice:policy/rate-limit@0.1.0": crate::host::wasm::bindings::sluice::policy::rate_limit,
            "sluice:policy/analytics@0.1.0": crate::host::wasm::bindings::sluice::policy::analytics,
            "sluice:policy/outbound-http@0.1.0": crate::host::wasm::bindings::sluice::policy::outbound_http,
        },
    });
}

use bindings::sluice::policy as wit;

pub(crate) type RawRequest = wit::types::RequestHead;
pub(crate) type RawResponse = wit::types::ResponseHead;
pub(crate) type RawContext = wit::types::Context;

/// The component's imports.
pub(crate) struct WasmHost;

impl Host for WasmHost {
    fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::log::Level::Trace,
            Level::Debug => wit::log::Level::Debug,
            Level::Info => wit::log::Level::Info,
            Level::Warn => wit::log::Level::Warn,
            Level::Error => wit::log::Level::Error,
        };
        wit::log::log(level, message);
    }

    fn now_millis() -> u64 {
        wit::clock::now_millis()
    }

    fn monotonic_nanos() -> u64 {
        wit::clock::monotonic_nanos()
    }

    fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        wit::kv::get(key).map_err(kv_error)
    }

    fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        wit::kv::set(key, value, ttl_ms).map_err(kv_error)
    }

    fn kv_delete(key: &str) -> Result<bool, KvError> {
        wit::kv::delete(key).map_err(kv_error)
    }

    fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        wit::kv::increment(key, delta, ttl_ms).map_err(kv_error)
    }

    fn kv_compare_and_set(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        wit::kv::compare_and_set(key, expected, value, ttl_ms).map_err(kv_error)
    }

    fn rate_limit_check(key: &str, limit: Limit, cost: u32) -> Result<Verdict, String> {
        let limit = wit::rate_limit::Limit {
            requests: limit.requests,
            window_ms: limit.window_ms,
            burst: limit.burst,
        };
        wit::rate_limit::check(key, limit, cost).map(|v| Verdict {
            allowed: v.allowed,
            limit: v.limit,
            remaining: v.remaining,
            reset_ms: v.reset_ms,
            retry_after_ms: v.retry_after_ms,
        })
    }

    fn analytics_emit(fields: &[(String, String)]) {
        wit::analytics::emit(fields);
    }

    fn http_get(url: &str, headers: &[Header]) -> Result<HttpResponse, HttpError> {
        let headers: Vec<wit::types::Header> = headers.iter().cloned().map(to_wit_header).collect();
        match wit::outbound_http::get(url, &headers) {
            Ok(r) => Ok(HttpResponse {
                status: r.status,
                headers: r.headers.into_iter().map(from_wit_header).collect(),
                body: r.body,
            }),
            Err(e) => Err(match e {
                wit::outbound_http::HttpError::Denied => HttpError::Denied,
                wit::outbound_http::HttpError::InvalidUrl => HttpError::InvalidUrl,
                wit::outbound_http::HttpError::Timeout => HttpError::Timeout,
                wit::outbound_http::HttpError::TooLarge => HttpError::TooLarge,
                wit::outbound_http::HttpError::Failed(why) => HttpError::Failed(why),
            }),
        }
    }
}

fn kv_error(e: wit::kv::KvError) -> KvError {
    match e {
        wit::kv::KvError::KeyTooLarge => KvError::KeyTooLarge,
        wit::kv::KvError::ValueTooLarge => KvError::ValueTooLarge,
        wit::kv::KvError::QuotaExceeded => KvError::QuotaExceeded,
        wit::kv::KvError::NotANumber => KvError::NotANumber,
        wit::kv::KvError::Unavailable(why) => KvError::Unavailable(why),
    }
}

fn to_wit_header(h: Header) -> wit::types::Header {
    wit::types::Header {
        name: h.name,
        value: h.value,
    }
}

fn from_wit_header(h: wit::types::Header) -> Header {
    Header {
        name: h.name,
        value: h.value,
    }
}

impl RequestSource for RawRequest {
    fn method(&self) -> String {
        RawRequest::method(self)
    }
    fn scheme(&self) -> String {
        RawRequest::scheme(self)
    }
    fn authority(&self) -> String {
        RawRequest::authority(self)
    }
    fn path(&self) -> String {
        RawRequest::path(self)
    }
    fn query(&self) -> Option<String> {
        RawRequest::query(self)
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        RawRequest::header(self, name)
    }
    fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        RawRequest::header_all(self, name)
    }
    fn header_names(&self) -> Vec<String> {
        RawRequest::header_names(self)
    }
    fn client_ip(&self) -> String {
        RawRequest::client_ip(self)
    }
    fn route(&self) -> String {
        RawRequest::route(self)
    }
}

impl ResponseSource for RawResponse {
    fn status(&self) -> u16 {
        RawResponse::status(self)
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        RawResponse::header(self, name)
    }
    fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        RawResponse::header_all(self, name)
    }
    fn header_names(&self) -> Vec<String> {
        RawResponse::header_names(self)
    }
}

impl ContextSource for RawContext {
    fn get(&self, key: &str) -> Option<String> {
        RawContext::get(self, key)
    }
    fn set(&self, key: &str, value: &str) {
        RawContext::set(self, key, value)
    }
}

/// The WIT form of a request decision.
pub(crate) fn request_decision(d: decision::RequestDecision) -> wit::types::RequestDecision {
    use wit::types::RequestDecision as W;
    match d {
        decision::RequestDecision::Continue => W::Continue,
        decision::RequestDecision::Edit(e) => W::Edit(wit::types::RequestEdits {
            set_headers: e.set_headers.into_iter().map(to_wit_header).collect(),
            append_headers: e.append_headers.into_iter().map(to_wit_header).collect(),
            remove_headers: e.remove_headers,
            path: e.path,
            query: e.query,
        }),
        decision::RequestDecision::Respond(r) => W::Respond(wit::types::LocalResponse {
            status: r.status,
            headers: r.headers.into_iter().map(to_wit_header).collect(),
            body: r.body,
        }),
    }
}

/// The WIT form of a response decision.
pub(crate) fn response_decision(d: decision::ResponseDecision) -> wit::types::ResponseDecision {
    use wit::types::ResponseDecision as W;
    match d {
        decision::ResponseDecision::Continue => W::Continue,
        decision::ResponseDecision::Edit(e) => W::Edit(wit::types::ResponseEdits {
            set_headers: e.set_headers.into_iter().map(to_wit_header).collect(),
            append_headers: e.append_headers.into_iter().map(to_wit_header).collect(),
            remove_headers: e.remove_headers,
        }),
    }
}
