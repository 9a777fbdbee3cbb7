//! Capability `analytics`: usage events for the gateway's analytics sink.
//!
//! Requires the grant `analytics`. Natively, [`crate::testing::TestHost::events`]
//! returns what was emitted.
//!
//! ```
//! sluice_sdk::analytics::Event::new()
//!     .field("route", "users")
//!     .field("status", 200)
//!     .emit();
//! ```

use crate::host::{Active, Host};

/// Emits one event made of named fields.
pub fn emit(fields: &[(String, String)]) {
    Active::analytics_emit(fields);
}

/// An event under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    fields: Vec<(String, String)>,
}

impl Event {
    /// An event with no fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field.
    pub fn field(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.fields.push((name.into(), value.to_string()));
        self
    }

    /// Adds a field when `value` is `Some`.
    pub fn field_opt(self, name: impl Into<String>, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.field(name, v),
            None => self,
        }
    }

    /// The fields so far.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// Emits the event.
    pub fn emit(self) {
        emit(&self.fields);
    }
}
