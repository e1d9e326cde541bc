//! Child processes that never outlive their test: the guard kills (SIGKILL) and reaps the
//! child when dropped, also when the test panics.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// Owns a running child process; kills and waits for it on drop.
pub struct ChildGuard {
    child: Child,
    label: String,
}

impl ChildGuard {
    /// Takes ownership of `child`; `label` names it in panic messages.
    pub fn new(child: Child, label: impl Into<String>) -> Self {
        ChildGuard {
            child,
            label: label.into(),
        }
    }

    /// The label given at creation.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the child is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // `kill` fails harmlessly when the child has already exited; `wait` reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
