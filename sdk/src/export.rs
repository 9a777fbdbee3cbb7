//! The glue between a [`crate::Policy`] and the component's exports.

/// Exports a [`Policy`](crate::Policy) type as the component's `init`, `on-request` and
/// `on-response`. Use it once per crate, at the top level:
///
/// ```
/// struct Allow;
///
/// impl sluice_sdk::Policy for Allow {
///     type Config = ();
///     fn new(_config: ()) -> Result<Self, String> {
///         Ok(Allow)
///     }
/// }
///
/// sluice_sdk::export_policy!(Allow);
/// ```
///
/// In a `wasm32` build, `init` parses the configuration with [`crate::policy::build`]
/// and keeps the policy in a static of the instance; `on-request` and `on-response`
/// dispatch to it. Calling them before a successful `init` traps. Natively the macro only
/// checks that the type implements `Policy` (tests call the policy directly through
/// [`crate::testing::TestHost`]).
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        $crate::__sluice_export!(
            $policy,
            Guest,
            __sluice_guest_methods,
            bindings,
            __sluice_export_bindings,
            assert_policy
        );
    };
}

/// Exports a [`BodyPolicy`](crate::BodyPolicy) type as the component's `init`,
/// `on-request`, `on-response` and `on-request-body` (the `body-policy` world). Use it
/// once per crate, at the top level, instead of [`export_policy!`]:
///
/// ```
/// use sluice_sdk::{Context, Request, RequestDecision};
///
/// struct NonEmpty;
///
/// impl sluice_sdk::Policy for NonEmpty {
///     type Config = ();
///     fn new(_config: ()) -> Result<Self, String> {
///         Ok(NonEmpty)
///     }
/// }
///
/// impl sluice_sdk::BodyPolicy for NonEmpty {
///     fn on_request_body(&self, _req: &Request<'_>, body: &[u8], _ctx: &Context<'_>) -> RequestDecision {
///         if body.is_empty() {
///             RequestDecision::respond(400).body("empty body").into()
///         } else {
///             RequestDecision::Continue
///         }
///     }
/// }
///
/// sluice_sdk::export_body_policy!(NonEmpty);
/// ```
///
/// Only components exported with this macro export `on-request-body`, so only they make
/// the gateway buffer request bodies. Natively the macro only checks that the type
/// implements `BodyPolicy` (tests call it through
/// [`crate::testing::TestHost::on_request_body`]).
#[macro_export]
macro_rules! export_body_policy {
    ($policy:ty) => {
        $crate::__sluice_export!(
            $policy,
            BodyGuest,
            __sluice_body_methods,
            body_bindings,
            __sluice_export_body_bindings,
            assert_body_policy
        );
    };
}

/// Exports a [`Policy`](crate::Policy) type as the component's `init` and `on-request`
/// only (the `request-policy` world): the gateway never calls it on the way back, which
/// saves a call per request. Use it instead of [`export_policy!`] for a policy that does
/// not implement `on_response` (authentication, request rewriting); an `on_response` it
/// implements anyway is never called.
///
/// ```
/// use sluice_sdk::{Context, Request, RequestDecision};
///
/// struct NeedsTenant;
///
/// impl sluice_sdk::Policy for NeedsTenant {
///     type Config = ();
///     fn new(_config: ()) -> Result<Self, String> {
///         Ok(NeedsTenant)
///     }
///     fn on_request(&self, req: &Request<'_>, _ctx: &Context<'_>) -> RequestDecision {
///         if req.has_header("x-tenant") {
///             RequestDecision::Continue
///         } else {
///             RequestDecision::respond(400).body("missing x-tenant")
///         }
///     }
/// }
///
/// sluice_sdk::export_request_policy!(NeedsTenant);
/// ```
///
/// Natively the macro only checks that the type implements `Policy`.
#[macro_export]
macro_rules! export_request_policy {
    ($policy:ty) => {
        $crate::__sluice_export!(
            $policy,
            RequestGuest,
            __sluice_request_methods,
            request_bindings,
            __sluice_export_request_bindings,
            assert_policy
        );
    };
}

/// The export glue of a world whose exports are exactly `$methods`: the policy slot, the
/// `$guest` trait of the world's bindings `$bindings` implemented over it, and the
/// bindings' export macro `$export`; natively, `$assert` checks the policy's traits.
/// Shared by every export macro. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_export {
    ($policy:ty, $guest:ident, $methods:ident, $bindings:ident, $export:ident, $assert:ident) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct __SluiceExport;

            $crate::__sluice_policy_slot!(__SLUICE_POLICY, $policy);

            impl $crate::__private::$guest for __SluiceExport {
                $crate::$methods!(__SLUICE_POLICY, $policy);
            }

            $crate::__private::$bindings::$export!(
                __SluiceExport with_types_in $crate::__private::$bindings
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = $crate::__private::$assert::<$policy>;
    };
}

/// The instance's policy slot (a thread-local `RefCell<Option<P>>` named `$slot`); shared
/// by the export glue ([`__sluice_export!`]). Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_policy_slot {
    ($slot:ident, $policy:ty) => {
        ::std::thread_local! {
            static $slot: ::core::cell::RefCell<::core::option::Option<$policy>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }
    };
}

/// `init` and `on-request` over the slot `$slot`; shared by every export macro (every
/// world exports these two). Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_request_methods {
    ($slot:ident, $policy:ty) => {
        fn init(
            config: ::std::string::String,
        ) -> ::core::result::Result<(), ::std::string::String> {
            let policy = $crate::policy::build::<$policy>(&config)?;
            $slot.with(|slot| *slot.borrow_mut() = ::core::option::Option::Some(policy));
            ::core::result::Result::Ok(())
        }

        fn on_request(
            req: &$crate::__private::RawRequest,
            ctx: &$crate::__private::RawContext,
        ) -> $crate::__private::WitRequestDecision {
            $slot.with(|slot| $crate::__private::on_request(slot.borrow().as_ref(), req, ctx))
        }
    };
}

/// `init`, `on-request` and `on-response` over the slot `$slot`; shared by the `policy`
/// and `body-policy` export macros (both worlds export these three). Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_guest_methods {
    ($slot:ident, $policy:ty) => {
        $crate::__sluice_request_methods!($slot, $policy);

        fn on_response(
            req: &$crate::__private::RawRequest,
            resp: &$crate::__private::RawResponse,
            ctx: &$crate::__private::RawContext,
        ) -> $crate::__private::WitResponseDecision {
            $slot
                .with(|slot| $crate::__private::on_response(slot.borrow().as_ref(), req, resp, ctx))
        }
    };
}

/// The `body-policy` world's exports over the slot `$slot`: those of the `policy` world
/// and `on-request-body`. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_body_methods {
    ($slot:ident, $policy:ty) => {
        $crate::__sluice_guest_methods!($slot, $policy);

        fn on_request_body(
            req: &$crate::__private::RawRequest,
            ctx: &$crate::__private::RawContext,
            body: ::std::vec::Vec<u8>,
        ) -> $crate::__private::WitRequestDecision {
            $slot.with(|slot| {
                $crate::__private::on_request_body(slot.borrow().as_ref(), req, ctx, &body)
            })
        }
    };
}

/// Support for [`export_policy!`], [`export_request_policy!`] and [`export_body_policy!`];
/// not a public API.
#[doc(hidden)]
pub mod __private {
    use crate::Policy;

    /// Compile-time check used by the native expansion of `export_policy!`.
    pub fn assert_policy<P: Policy>() {}

    /// Compile-time check used by the native expansion of `export_body_policy!`.
    pub fn assert_body_policy<P: crate::BodyPolicy>() {}

    #[cfg(target_arch = "wasm32")]
    pub use self::guest::*;

    #[cfg(target_arch = "wasm32")]
    mod guest {
        pub use crate::host::wasm::{bindings, body_bindings, request_bindings};
        pub use bindings::Guest;
        pub use bindings::sluice::policy::types::{
            Context as RawContext, RequestDecision as WitRequestDecision,
            RequestHead as RawRequest, ResponseDecision as WitResponseDecision,
            ResponseHead as RawResponse,
        };
        pub use body_bindings::Guest as BodyGuest;
        pub use request_bindings::Guest as RequestGuest;
        pub use wit_bindgen;

        use crate::host::wasm::{request_decision, response_decision};
        use crate::{BodyPolicy, Context, Policy, Request, Response};

        const NOT_INITIALIZED: &str = "sluice-sdk: the gateway called the policy before init";

        /// Runs `on_request` of the initialized policy.
        pub fn on_request<P: Policy>(
            policy: Option<&P>,
            req: &RawRequest,
            ctx: &RawContext,
        ) -> WitRequestDecision {
            let policy = policy.expect(NOT_INITIALIZED);
            request_decision(policy.on_request(&Request::new(req), &Context::new(ctx)))
        }

        /// Runs `on_request_body` of the initialized policy.
        pub fn on_request_body<P: BodyPolicy>(
            policy: Option<&P>,
            req: &RawRequest,
            ctx: &RawContext,
            body: &[u8],
        ) -> WitRequestDecision {
            let policy = policy.expect(NOT_INITIALIZED);
            request_decision(policy.on_request_body(&Request::new(req), body, &Context::new(ctx)))
        }

        /// Runs `on_response` of the initialized policy.
        pub fn on_response<P: Policy>(
            policy: Option<&P>,
            req: &RawRequest,
            resp: &RawResponse,
            ctx: &RawContext,
        ) -> WitResponseDecision {
            let policy = policy.expect(NOT_INITIALIZED);
            response_decision(policy.on_response(
                &Request::new(req),
                &Response::new(resp),
                &Context::new(ctx),
            ))
        }
    }
}
