//! What a handler's failure becomes for its caller: its error as an `application` error
//! with its text (a registered closure's `Err` adds its value: `handlers::reply`), and a
//! panic's payload as the `panicked` error's message.

use std::any::Any;

use crate::wire::{ErrorKind, RemoteError};

/// What a handler's error becomes for its caller: an `application` error with the error's
/// text (and, for a registered closure's `Err`, its value as JSON: `handlers::reply`).
pub(crate) trait Fault {
    fn into_error(self) -> RemoteError;
}

impl<E: std::fmt::Display> Fault for E {
    fn into_error(self) -> RemoteError {
        RemoteError::new(ErrorKind::Application, self.to_string())
    }
}

/// The text of a panic payload, for the `Panicked` error.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
