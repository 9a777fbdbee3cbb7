//! The policy layer's error type.

/// Everything that can go wrong loading or running a policy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// The engine could not be set up.
    #[error("policy engine: {0}")]
    Engine(String),
    /// The bytes are not a usable `sluice:policy` component.
    #[error("{0}")]
    Invalid(String),
    /// The component imports a capability that was not granted.
    #[error("the component imports {import}, which is not granted to it")]
    Ungranted {
        /// The import's name.
        import: String,
    },
    /// `init` refused the configuration.
    #[error("init refused the configuration: {0}")]
    Init(String),
    /// The guest trapped (including CPU deadline, memory cap, stack overflow).
    #[error("{what} failed: {cause}")]
    Trap {
        /// Which call.
        what: &'static str,
        /// The trap.
        cause: String,
    },
    /// The call exceeded its wall-clock deadline.
    #[error("the call exceeded its deadline")]
    Timeout,
    /// The policy returned a decision the gateway cannot apply.
    #[error("invalid decision: {0}")]
    BadDecision(String),
}

impl PolicyError {
    /// A trap during `what`.
    pub fn trap(what: &'static str, e: wasmtime::Error) -> Self {
        let cause = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => "CPU deadline exceeded".to_string(),
            Some(t) => t.to_string(),
            None => format!("{e:#}"),
        };
        Self::Trap { what, cause }
    }
}
