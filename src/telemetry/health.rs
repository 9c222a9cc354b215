//! Whether a background sink (the audit trail, the store) is failing, and why: set by its writer,
//! read by `/readyz` and by callers deciding whether to refuse.

use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct SinkHealth {
    /// Why the sink is failing, if it is. Reasons name files and errors, never patient data.
    failing: Mutex<Option<String>>,
}

impl SinkHealth {
    pub fn set(&self, why: Option<String>) {
        match self.failing.lock() {
            Ok(mut slot) => *slot = why,
            Err(poisoned) => *poisoned.into_inner() = why,
        }
    }

    pub fn get(&self) -> Option<String> {
        match self.failing.lock() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
