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

/// Longest `init` error message kept: a policy's message is cut beyond it, so that a
/// hostile policy cannot put megabytes into the gateway's errors and logs.
const MAX_INIT_MESSAGE_BYTES: usize = 1024;

impl PolicyError {
    /// `init` refused the configuration with `message`, cut to 1 KiB (at a character
    /// boundary) when longer.
    pub fn init(mut message: String) -> Self {
        if message.len() > MAX_INIT_MESSAGE_BYTES {
            let mut end = MAX_INIT_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("… (truncated)");
        }
        Self::Init(message)
    }

    /// A trap during `what`.
    pub fn trap(what: &'static str, e: wasmtime::Error) -> Self {
        let cause = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => "CPU deadline exceeded".to_string(),
            Some(t) => t.to_string(),
            None => e.root_cause().to_string(),
        };
        // The full error (with its wasm backtrace) goes to the operator's log; clients and
        // the error type get the first line, bounded.
        tracing::debug!(%what, error = ?e, "policy call failed");
        let first: String = cause
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        Self::Trap { what, cause: first }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_messages_are_cut_at_a_character_boundary() {
        assert_eq!(
            PolicyError::init("bad".into()).to_string(),
            "init refused the configuration: bad"
        );
        let long = format!(
            "{}é{}",
            "a".repeat(MAX_INIT_MESSAGE_BYTES - 1),
            "b".repeat(10 << 20)
        );
        let PolicyError::Init(m) = PolicyError::init(long) else {
            unreachable!()
        };
        assert_eq!(
            m,
            format!("{}… (truncated)", "a".repeat(MAX_INIT_MESSAGE_BYTES - 1))
        );
    }
}
