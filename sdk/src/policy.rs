//! The [`Policy`] trait: what a policy implements.

use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::decision::{RequestDecision, ResponseDecision};
use crate::request::{Request, Response};

/// A Sluice policy. Implement it, then export it with [`crate::export_policy!`] (or, for a
/// policy that must see request bodies, also implement [`BodyPolicy`] and export it with
/// [`crate::export_body_policy!`]).
///
/// The gateway creates one value per configured instance of the policy (one `init`),
/// then calls [`on_request`](Self::on_request) for every request that reaches it and
/// [`on_response`](Self::on_response) for every response on the way back (in reverse
/// pipeline order). A policy instance may serve many requests: keep per-request state in
/// the [`Context`], not in `self`.
///
/// ```
/// use serde::Deserialize;
/// use sluice_sdk::{Context, Policy, Request, RequestDecision};
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config { header: String }
///
/// struct RequireHeader { header: String }
///
/// impl Policy for RequireHeader {
///     type Config = Config;
///     fn new(config: Config) -> Result<Self, String> {
///         Ok(Self { header: config.header.to_ascii_lowercase() })
///     }
///     fn on_request(&self, req: &Request, _ctx: &Context) -> RequestDecision {
///         if req.has_header(&self.header) {
///             RequestDecision::Continue
///         } else {
///             RequestDecision::respond(400).body(format!("missing {}", self.header))
///         }
///     }
/// }
/// sluice_sdk::export_policy!(RequireHeader);
/// ```
pub trait Policy: Sized + 'static {
    /// The configuration, deserialized from the JSON object the gateway passes to `init`
    /// (converted from the route's TOML table; `{}` when the route sets none). Use
    /// `#[serde(deny_unknown_fields)]` so that typos are refused at load time.
    type Config: DeserializeOwned;

    /// Validates the configuration and builds the policy.
    ///
    /// # Errors
    /// A message naming the problem; the gateway refuses the configuration with it.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Runs for each request, in pipeline order. By default the request continues
    /// unchanged.
    fn on_request(&self, req: &Request<'_>, ctx: &Context<'_>) -> RequestDecision {
        let _ = (req, ctx);
        RequestDecision::Continue
    }

    /// Runs for each response, in reverse pipeline order, including responses produced
    /// locally by a later policy. By default the response continues unchanged.
    fn on_response(
        &self,
        req: &Request<'_>,
        resp: &Response<'_>,
        ctx: &Context<'_>,
    ) -> ResponseDecision {
        let _ = (req, resp, ctx);
        ResponseDecision::Continue
    }
}

/// A policy that also sees the request body. Implement it in addition to [`Policy`], then
/// export the type with [`crate::export_body_policy!`] (not [`crate::export_policy!`]).
///
/// The component then exports `on-request-body` (the `body-policy` world), and the gateway
/// buffers the request body of every request that reaches the policy (up to the route's
/// `max_body_bytes`; a longer body is refused with 413 before the policy sees it) and calls
/// [`on_request_body`](Self::on_request_body) after [`Policy::on_request`] continued (with
/// its edits applied). Buffering costs memory and latency and stops the body from
/// streaming to the upstream, so header-only policies should stay plain [`Policy`]s. The
/// upstream receives the buffered body with a `content-length`.
///
/// [`Policy::on_request`] runs first and can refuse a request before its body is read,
/// e.g. on its `content-length`.
///
/// ```
/// use serde::Deserialize;
/// use sluice_sdk::{BodyPolicy, Context, Edits, Policy, Request, RequestDecision};
///
/// #[derive(Deserialize)]
/// struct Config {}
///
/// struct CountBytes;
///
/// impl Policy for CountBytes {
///     type Config = Config;
///     fn new(_config: Config) -> Result<Self, String> {
///         Ok(Self)
///     }
/// }
///
/// impl BodyPolicy for CountBytes {
///     fn on_request_body(&self, _req: &Request, body: &[u8], _ctx: &Context) -> RequestDecision {
///         Edits::new().set_header("x-body-bytes", body.len().to_string()).into()
///     }
/// }
/// sluice_sdk::export_body_policy!(CountBytes);
/// ```
pub trait BodyPolicy: Policy {
    /// Runs with the whole request body, after [`Policy::on_request`] continued. The
    /// request head reflects the edits of this policy's `on_request` and of earlier
    /// policies; the decision's edits apply to the head (the body is forwarded unchanged).
    fn on_request_body(&self, req: &Request<'_>, body: &[u8], ctx: &Context<'_>)
    -> RequestDecision;
}

/// Builds a policy from the configuration JSON the gateway passes to `init`: empty text
/// counts as `{}`, then serde turns it into [`Policy::Config`] and [`Policy::new`]
/// validates it.
///
/// # Errors
/// `invalid configuration: …` for JSON that does not match the config type, or the
/// policy's own message.
pub fn build<P: Policy>(config_json: &str) -> Result<P, String> {
    let text = config_json.trim();
    let text = if text.is_empty() || text == "null" {
        "{}"
    } else {
        text
    };
    let config: P::Config =
        serde_json::from_str(text).map_err(|e| format!("invalid configuration: {e}"))?;
    P::new(config)
}
