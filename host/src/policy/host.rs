//! What a policy's store holds, and the host side of every WIT interface: the request and
//! response heads and the context (resources whose data lives in the store only for the
//! duration of one call), and the capabilities (`log`, `clock`, `kv`, `rate-limit`,
//! `analytics`, `outbound-http`). The WASI side of stores that need it is in [`super::wasi`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use wasmtime::component::{Resource, WasmList, WasmStr};
use wasmtime::{AsContext, StoreContextMut};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::bindings::sluice::policy::{clock, kv, log, outbound_http, rate_limit, types};
use super::capabilities::Capabilities;
use super::cpu::CpuClock;
use super::wasi::WasiState;

/// Marker type of the `request-head` resource (its data is [`RequestView`] in the store).
pub struct RequestHeadRes;
/// Marker type of the `response-head` resource.
pub struct ResponseHeadRes;
/// Marker type of the `context` resource.
pub struct ContextRes;

/// The request as policies see it; edits are applied to it between policies.
#[derive(Debug, Clone)]
pub struct RequestView {
    /// Method.
    pub method: Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Authority (Host).
    pub authority: String,
    /// Path without query.
    pub path: String,
    /// Query without `?`.
    pub query: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Client IP.
    pub client_ip: IpAddr,
    /// Route name.
    pub route: Arc<str>,
}

impl Default for RequestView {
    fn default() -> Self {
        Self {
            method: Method::GET,
            scheme: "http",
            authority: String::new(),
            path: "/".into(),
            query: None,
            headers: HeaderMap::new(),
            client_ip: IpAddr::from([0, 0, 0, 0]),
            route: Arc::from(""),
        }
    }
}

/// The response head as policies see it.
#[derive(Debug, Clone, Default)]
pub struct ResponseView {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
}

/// Attributes shared by the policies of one request (a fast, per-process seeded hasher:
/// the keys come from policies, bounded in size and number).
pub type Attributes = HashMap<String, String, foldhash::fast::RandomState>;

/// The per-call data moved into a store for one call and out again afterwards.
#[derive(Default)]
pub struct CallData {
    /// The request.
    pub req: RequestView,
    /// The response, in response phases.
    pub resp: ResponseView,
    /// The shared attributes.
    pub attrs: Attributes,
}

/// The data of one policy instance's store.
pub struct HostState {
    pub(super) limits: GuestLimits,
    pub(super) caps: Arc<Capabilities>,
    pub(super) call: CallData,
    /// WASI context and resource table, only for components that import `wasi:*`
    /// (boxed, so that the stores of other components stay small).
    pub(super) wasi: Option<Box<WasiState>>,
    /// The CPU time of the current call (its deadline gives back host I/O waits).
    pub(super) cpu: CpuClock,
    /// The current call's wall-clock deadline (calls on a fiber, the only ones that can
    /// wait): host I/O is bounded within it, so that the guest hears of a timeout instead
    /// of being cancelled with its call.
    pub(super) wall_deadline: Option<tokio::time::Instant>,
}

/// A store's resource limits: wasmtime's [`StoreLimits`], plus the memory cap applied to
/// the sum of the instance's linear memories (a component of several core modules may have
/// several; `StoreLimits` caps each one alone).
pub(super) struct GuestLimits {
    inner: StoreLimits,
    max_memory: usize,
    memory_total: usize,
}

impl GuestLimits {
    /// Limits with `max_memory` bytes for all linear memories together.
    fn new(max_memory: usize) -> Self {
        Self {
            // No per-memory size here: the sum checked in `memory_growing` bounds each one.
            inner: StoreLimitsBuilder::new()
                .instances(16)
                .tables(16)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            max_memory,
            memory_total: 0,
        }
    }
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_total
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_memory {
            wasmtime::bail!(
                "forcing trap when growing memory: the linear memories would total {total} bytes, over the {} byte cap",
                self.max_memory
            );
        }
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_total = total;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl HostState {
    /// A store state capped at `max_memory` bytes of linear memory.
    pub fn new(caps: Arc<Capabilities>, max_memory: usize) -> Self {
        Self {
            limits: GuestLimits::new(max_memory),
            caps,
            call: CallData::default(),
            wasi: None,
            cpu: CpuClock::default(),
            wall_deadline: None,
        }
    }

    /// The same state with a WASI context (for components that import `wasi:*`).
    pub(super) fn with_wasi(mut self, wasi: Box<WasiState>) -> Self {
        self.wasi = Some(wasi);
        self
    }
}

// Lookups by `&str` (case-insensitive; an invalid name finds nothing) parse the name on
// the stack: no `HeaderName` is allocated per host call.
fn first(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    headers.get(name).map(|v| v.as_bytes().to_vec())
}

fn all(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect()
}

fn names(headers: &HeaderMap) -> Vec<String> {
    headers.keys().map(|k| k.as_str().to_string()).collect()
}

impl types::Host for HostState {}

impl types::HostRequestHead for HostState {
    fn method(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<String> {
        Ok(self.call.req.method.as_str().to_string())
    }
    fn scheme(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<String> {
        Ok(self.call.req.scheme.to_string())
    }
    fn authority(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<String> {
        Ok(self.call.req.authority.clone())
    }
    fn path(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<String> {
        Ok(self.call.req.path.clone())
    }
    fn query(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<Option<String>> {
        Ok(self.call.req.query.clone())
    }
    fn header(
        &mut self,
        _: Resource<RequestHeadRes>,
        name: String,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(first(&self.call.req.headers, &name))
    }
    fn header_all(
        &mut self,
        _: Resource<RequestHeadRes>,
        name: String,
    ) -> wasmtime::Result<Vec<Vec<u8>>> {
        Ok(all(&self.call.req.headers, &name))
    }
    fn header_names(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<Vec<String>> {
        Ok(names(&self.call.req.headers))
    }
    fn client_ip(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<String> {
        Ok(self.call.req.client_ip.to_string())
    }
    fn route(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<String> {
        Ok(self.call.req.route.to_string())
    }
    fn drop(&mut self, _: Resource<RequestHeadRes>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostResponseHead for HostState {
    fn status(&mut self, _: Resource<ResponseHeadRes>) -> wasmtime::Result<u16> {
        Ok(self.call.resp.status)
    }
    fn header(
        &mut self,
        _: Resource<ResponseHeadRes>,
        name: String,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(first(&self.call.resp.headers, &name))
    }
    fn header_all(
        &mut self,
        _: Resource<ResponseHeadRes>,
        name: String,
    ) -> wasmtime::Result<Vec<Vec<u8>>> {
        Ok(all(&self.call.resp.headers, &name))
    }
    fn header_names(&mut self, _: Resource<ResponseHeadRes>) -> wasmtime::Result<Vec<String>> {
        Ok(names(&self.call.resp.headers))
    }
    fn drop(&mut self, _: Resource<ResponseHeadRes>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// Largest attribute key or value a policy may set (the contract's documented limit; the
/// SDK's `context::MAX_ATTRIBUTE_BYTES`).
const MAX_ATTR_BYTES: usize = 4096;
/// Most attributes per request (the SDK's `context::MAX_ATTRIBUTES`).
const MAX_ATTRS: usize = 64;

impl types::HostContext for HostState {
    fn get(&mut self, _: Resource<ContextRes>, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.call.attrs.get(&key).cloned())
    }
    fn set(&mut self, _: Resource<ContextRes>, key: String, value: String) -> wasmtime::Result<()> {
        if key.len() > MAX_ATTR_BYTES || value.len() > MAX_ATTR_BYTES {
            wasmtime::bail!("context attribute over {MAX_ATTR_BYTES} bytes");
        }
        if self.call.attrs.len() >= MAX_ATTRS && !self.call.attrs.contains_key(&key) {
            wasmtime::bail!("more than {MAX_ATTRS} context attributes");
        }
        self.call.attrs.insert(key, value);
        Ok(())
    }
    fn drop(&mut self, _: Resource<ContextRes>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let plugin = &self.caps.plugin;
        let message: String = message.chars().take(4096).collect();
        match level {
            log::Level::Trace => tracing::trace!(%plugin, "{message}"),
            log::Level::Debug => tracing::debug!(%plugin, "{message}"),
            log::Level::Info => tracing::info!(%plugin, "{message}"),
            log::Level::Warn => tracing::warn!(%plugin, "{message}"),
            log::Level::Error => tracing::error!(%plugin, "{message}"),
        }
        Ok(())
    }
}

impl clock::Host for HostState {
    fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }
    fn monotonic_nanos(&mut self) -> wasmtime::Result<u64> {
        Ok(self.caps.epoch.elapsed().as_nanos() as u64)
    }
}

fn kv_err(e: crate::state::KvError) -> kv::KvError {
    use crate::state::KvError as E;
    match e {
        E::KeyTooLarge => kv::KvError::KeyTooLarge,
        E::ValueTooLarge => kv::KvError::ValueTooLarge,
        E::QuotaExceeded => kv::KvError::QuotaExceeded,
        E::NotANumber => kv::KvError::NotANumber,
        E::Unavailable(why) => kv::KvError::Unavailable(why),
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl HostState {
    /// Runs a state call, counting its time as an I/O wait (not guest CPU).
    async fn io<T>(&mut self, fut: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = fut.await;
        self.cpu.add_io_wait(started.elapsed());
        out
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        let caps = self.caps.clone();
        Ok(self.io(caps.kv.get(&key)).await.map_err(kv_err))
    }
    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        let caps = self.caps.clone();
        let r = self.io(caps.kv.set(&key, value, ttl(ttl_ms))).await;
        Ok(r.map_err(kv_err))
    }
    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, kv::KvError>> {
        let caps = self.caps.clone();
        Ok(self.io(caps.kv.delete(&key)).await.map_err(kv_err))
    }
    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, kv::KvError>> {
        let caps = self.caps.clone();
        let r = self.io(caps.kv.increment(&key, delta, ttl(ttl_ms))).await;
        Ok(r.map_err(kv_err))
    }
    async fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, kv::KvError>> {
        let caps = self.caps.clone();
        let r = self
            .io(caps.kv.compare_and_set(&key, expected, value, ttl(ttl_ms)))
            .await;
        Ok(r.map_err(kv_err))
    }
}

/// Checks the arguments of `rate-limit.check` and converts the limit.
fn host_limit(key: &str, limit: rate_limit::Limit) -> Result<crate::state::Limit, String> {
    if key.len() > 1024 {
        return Err("rate-limit key over 1024 bytes".into());
    }
    let limit = crate::state::Limit {
        requests: limit.requests,
        window_ms: limit.window_ms,
        burst: limit.burst,
    };
    limit.check_valid()?;
    Ok(limit)
}

fn wit_verdict(v: crate::state::Verdict) -> rate_limit::Verdict {
    rate_limit::Verdict {
        allowed: v.allowed,
        limit: v.limit,
        remaining: v.remaining,
        reset_ms: v.reset_ms,
        retry_after_ms: v.retry_after_ms,
    }
}

impl rate_limit::Host for HostState {
    async fn check(
        &mut self,
        key: String,
        limit: rate_limit::Limit,
        cost: u32,
    ) -> wasmtime::Result<Result<rate_limit::Verdict, String>> {
        let limit = match host_limit(&key, limit) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let caps = self.caps.clone();
        let v = self.io(caps.limiter.check(&key, limit, cost)).await;
        Ok(v.map(wit_verdict))
    }
}

/// Host functions defined without `async` for policies whose backend answers without
/// waiting on I/O (see `instance::linker`): a policy that imports only these (and other
/// synchronous capabilities) is called without a fiber.
impl HostState {
    /// `kv.get` on the embedded store. Only linked when [`crate::state::Kv::get_now`]
    /// answers.
    pub(super) fn kv_get_now(
        &mut self,
        key: &str,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        match self.caps.kv.get_now(key) {
            Some(r) => Ok(r.map_err(kv_err)),
            None => wasmtime::bail!("kv.get linked synchronously for a Redis namespace"),
        }
    }

    /// `rate-limit.check` on an in-memory limiter. Only linked when
    /// [`crate::state::RateLimiter::check_now`] answers.
    pub(super) fn rate_limit_check_now(
        &mut self,
        key: &str,
        limit: rate_limit::Limit,
        cost: u32,
    ) -> wasmtime::Result<Result<rate_limit::Verdict, String>> {
        let limit = match host_limit(key, limit) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        match self.caps.limiter.check_now(key, limit, cost) {
            Some(v) => Ok(v.map(wit_verdict)),
            None => wasmtime::bail!("rate-limit.check linked synchronously for Redis"),
        }
    }
}

/// `analytics.emit`, linked by hand (`instance::linker`) rather than through the generated
/// trait: the fields are read in place from the guest's memory (no `String` per name and
/// value), and only the first [`MAX_FIELDS`](crate::telemetry::analytics::MAX_FIELDS) of a
/// list are read at all.
pub(super) fn analytics_emit(
    mut cx: StoreContextMut<'_, HostState>,
    fields: WasmList<(WasmStr, WasmStr)>,
) -> wasmtime::Result<()> {
    use crate::telemetry::analytics::MAX_FIELDS;
    let raw = fields
        .iter(&mut cx)?
        .take(MAX_FIELDS)
        .collect::<wasmtime::Result<Vec<_>>>()?;
    let store = cx.as_context();
    let pairs = raw
        .iter()
        .map(|(k, v)| Ok((k.to_str(&store)?, v.to_str(&store)?)))
        .collect::<wasmtime::Result<Vec<_>>>()?;
    let caps = &store.data().caps;
    caps.analytics.record(&caps.plugin, &pairs);
    Ok(())
}

impl outbound_http::Host for HostState {
    async fn get(
        &mut self,
        url: String,
        headers: Vec<types::Header>,
    ) -> wasmtime::Result<Result<outbound_http::Response, outbound_http::HttpError>> {
        let caps = self.caps.clone();
        // The call's remaining time less a tenth of it, and at least 100 ms, left to the
        // policy to act on a timeout.
        let budget = self.wall_deadline.map(|d| {
            let left = d.saturating_duration_since(tokio::time::Instant::now());
            left.saturating_sub((left / 10).max(Duration::from_millis(100)))
        });
        Ok(self.io(caps.outbound.get(&url, headers, budget)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_applies_to_the_sum_of_an_instances_memories() {
        const MIB: usize = 1 << 20;
        let mut l = GuestLimits::new(10 * MIB);
        // Two memories of 4 MiB each fit; a third of 4 MiB would make 12.
        assert!(l.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(l.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(l.memory_growing(0, 4 * MIB, None).is_err());
        // Growing one of them by 2 MiB reaches the cap exactly; 1 byte more does not fit.
        assert!(l.memory_growing(4 * MIB, 6 * MIB, None).unwrap());
        assert!(l.memory_growing(6 * MIB, 6 * MIB + 1, None).is_err());
    }

    #[test]
    fn header_lookups_ignore_case_and_find_nothing_for_invalid_names() {
        let mut h = HeaderMap::new();
        h.append("x-api-key", "k1".parse().unwrap());
        h.append("x-api-key", "k2".parse().unwrap());
        assert_eq!(first(&h, "X-Api-KEY"), Some(b"k1".to_vec()));
        assert_eq!(all(&h, "x-API-key"), vec![b"k1".to_vec(), b"k2".to_vec()]);
        assert_eq!(first(&h, "x-other"), None);
        for invalid in ["", "bad name", "x-api-key\n", "é"] {
            assert_eq!(first(&h, invalid), None);
            assert!(all(&h, invalid).is_empty());
        }
    }
}
