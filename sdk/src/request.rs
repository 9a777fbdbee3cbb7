//! Read access to the request and response heads.
//!
//! The heads live in the gateway: every method asks the host for one value (one small
//! copy), so read what you need, once.

use std::net::IpAddr;

use crate::host::{RawRequest, RawResponse, RequestSource, ResponseSource};
use crate::query::Query;

/// The head of the request being processed. Reads reflect the edits applied by earlier
/// policies in the pipeline.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    raw: &'a RawRequest,
}

impl<'a> Request<'a> {
    pub(crate) fn new(raw: &'a RawRequest) -> Self {
        Self { raw }
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> String {
        RequestSource::method(self.raw)
    }

    /// `http` or `https`, as received by the gateway.
    pub fn scheme(&self) -> String {
        RequestSource::scheme(self.raw)
    }

    /// The host (and port, if sent) the client addressed.
    pub fn authority(&self) -> String {
        RequestSource::authority(self.raw)
    }

    /// The path, without the query.
    pub fn path(&self) -> String {
        RequestSource::path(self.raw)
    }

    /// The raw query string without `?`, if any.
    pub fn query(&self) -> Option<String> {
        RequestSource::query(self.raw)
    }

    /// The query string parsed for reading and editing (empty when there is none).
    pub fn query_params(&self) -> Query {
        Query::parse(self.query().as_deref().unwrap_or(""))
    }

    /// The first value of the query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params().get(name)
    }

    /// The first value of the header `name` (case-insensitive), as bytes.
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        RequestSource::header(self.raw, name)
    }

    /// The first value of the header `name` as a string; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).and_then(|v| String::from_utf8(v).ok())
    }

    /// Every value of the header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        RequestSource::header_all(self.raw, name)
    }

    /// The names of all headers present (lower-case, each once).
    pub fn header_names(&self) -> Vec<String> {
        RequestSource::header_names(self.raw)
    }

    /// True when the header `name` is present.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The `content-length` header, when present and a valid number.
    pub fn content_length(&self) -> Option<u64> {
        parse_content_length(self.header("content-length"))
    }

    /// The client's IP address as text (after trusted-proxy resolution).
    pub fn client_ip(&self) -> String {
        RequestSource::client_ip(self.raw)
    }

    /// The client's IP address, parsed. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// are returned as IPv4. `None` if the host's text is not an address.
    pub fn client_ip_addr(&self) -> Option<IpAddr> {
        let text = self.client_ip();
        let ip: IpAddr = text.trim().parse().ok()?;
        Some(ip.to_canonical())
    }

    /// The name of the route that matched.
    pub fn route(&self) -> String {
        RequestSource::route(self.raw)
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").finish_non_exhaustive()
    }
}

/// The head of the response on its way to the client.
#[derive(Clone, Copy)]
pub struct Response<'a> {
    raw: &'a RawResponse,
}

impl<'a> Response<'a> {
    pub(crate) fn new(raw: &'a RawResponse) -> Self {
        Self { raw }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        ResponseSource::status(self.raw)
    }

    /// The first value of the header `name` (case-insensitive), as bytes.
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        ResponseSource::header(self.raw, name)
    }

    /// The first value of the header `name` as a string; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).and_then(|v| String::from_utf8(v).ok())
    }

    /// Every value of the header `name` (case-insensitive), in order, e.g. each
    /// `set-cookie`.
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        ResponseSource::header_all(self.raw, name)
    }

    /// The names of all headers present (lower-case, each once).
    pub fn header_names(&self) -> Vec<String> {
        ResponseSource::header_names(self.raw)
    }

    /// The `content-length` header, when present and a valid number.
    pub fn content_length(&self) -> Option<u64> {
        parse_content_length(self.header("content-length"))
    }
}

impl std::fmt::Debug for Response<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response").finish_non_exhaustive()
    }
}

fn parse_content_length(value: Option<Vec<u8>>) -> Option<u64> {
    std::str::from_utf8(&value?).ok()?.trim().parse().ok()
}
