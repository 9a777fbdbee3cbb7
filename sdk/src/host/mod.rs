//! The seam between the SDK and whatever provides the host: the gateway's imports inside
//! a component (`wasm32`), or the in-memory fake of [`crate::testing`] everywhere else.
//!
//! Both backends implement [`Host`]; the capability modules call [`Active`], so a
//! policy's code is the same in both worlds and only the backend changes.

use crate::decision::Header;
use crate::http::{HttpError, HttpResponse};
use crate::kv::KvError;
use crate::log::Level;
use crate::rate_limit::{Limit, Verdict};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod fake;
#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use fake::{FakeHost as Active, RawContext, RawRequest, RawResponse};
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::{RawContext, RawRequest, RawResponse, WasmHost as Active};

/// The capabilities a policy may call. Each method maps one-to-one to a WIT import.
pub(crate) trait Host {
    fn log(level: Level, message: &str);
    fn now_millis() -> u64;
    fn monotonic_nanos() -> u64;
    fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError>;
    fn kv_delete(key: &str) -> Result<bool, KvError>;
    fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError>;
    fn kv_compare_and_set(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError>;
    fn rate_limit_check(key: &str, limit: Limit, cost: u32) -> Result<Verdict, String>;
    fn analytics_emit(fields: &[(String, String)]);
    fn http_get(url: &str, headers: &[Header]) -> Result<HttpResponse, HttpError>;
}

/// Read access to a request head, implemented by the WIT resource and by
/// [`crate::testing::TestRequest`].
pub(crate) trait RequestSource {
    fn method(&self) -> String;
    fn scheme(&self) -> String;
    fn authority(&self) -> String;
    fn path(&self) -> String;
    fn query(&self) -> Option<String>;
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    fn header_all(&self, name: &str) -> Vec<Vec<u8>>;
    fn header_names(&self) -> Vec<String>;
    fn client_ip(&self) -> String;
    fn route(&self) -> String;
}

/// Read access to a response head.
pub(crate) trait ResponseSource {
    fn status(&self) -> u16;
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    fn header_all(&self, name: &str) -> Vec<Vec<u8>>;
    fn header_names(&self) -> Vec<String>;
}

/// Read and write access to the per-request context attributes.
pub(crate) trait ContextSource {
    fn get(&self, key: &str) -> Option<String>;
    fn set(&self, key: &str, value: &str);
}
