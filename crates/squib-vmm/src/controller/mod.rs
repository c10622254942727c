//! The one admission gate and the dispatch of every API action.
//!
//! [`Vmm::handle_action`] reads the action's row of squib-api's action table
//! (`ApiAction::spec`): its admission decides whether the action may run in the VM's state
//! (Firecracker's pre-boot / post-boot messages otherwise), then the handler the row names
//! runs, and a handler's error becomes a fault behind the row's prefix. The dispatch is
//! generated from the same table, so a row without a handler does not compile.

use std::fmt::Display;

use squib_api::action::{Admission, ApiAction, ApiResponse};
use squib_api::{NOT_SUPPORTED_AFTER_START, NOT_SUPPORTED_BEFORE_START};

use crate::vmm::Vmm;

/// What a handler answers: `Ok` with the success response (204 or JSON), or why it failed.
pub(crate) type ActionResult = Result<ApiResponse, ActionError>;

/// Why an action failed.
#[derive(Debug)]
pub(crate) enum ActionError {
    /// Answered as `<the action's fault prefix>: <message>` (Firecracker's
    /// `Drive config error: ...`).
    Invalid(String),
    /// Answered as it is: a message with a prefix of its own, or another status.
    Fault(ApiResponse),
}

impl ActionError {
    /// A failure shown behind the action's fault prefix.
    pub(crate) fn invalid(message: impl Display) -> Self {
        Self::Invalid(message.to_string())
    }

    /// A 400 whose whole text is `message`.
    pub(crate) fn fault(message: impl Display) -> Self {
        Self::Fault(ApiResponse::fault(message))
    }
}

impl<E: std::error::Error> From<E> for ActionError {
    fn from(e: E) -> Self {
        Self::invalid(e)
    }
}

/// What an action that squib cannot perform yet answers.
pub(crate) fn not_supported(what: &str) -> ActionError {
    ActionError::fault(format!("{what} is not supported by squib yet."))
}

/// `Vmm::dispatch`: each action to the handler its row of the table names.
macro_rules! dispatch_to_handlers {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $(($arg:ident: $payload:ty))? => $handler:ident:
            $method:ident $path:literal $(/ {$id:ident})?, $parse:expr,
            $spec_fn:ident($($spec_arg:expr),*);
    )*) => {
        impl Vmm {
            fn dispatch(&mut self, action: ApiAction) -> ActionResult {
                match action {
                    $(ApiAction::$variant $(($arg))? => self.$handler($($arg)?),)*
                }
            }
        }
    };
}

squib_api::for_each_api_action!(dispatch_to_handlers);

/// Whether `action` configures a resource of the boot path, after which a snapshot can no
/// longer be loaded (Firecracker's rule: the logger, metrics, serial, MMDS data and CPU
/// configuration do not count).
fn configures_boot_resources(action: &ApiAction) -> bool {
    matches!(
        action,
        ApiAction::PutBootSource(_)
            | ApiAction::PutMachineConfig(_)
            | ApiAction::PatchMachineConfig(_)
            | ApiAction::PutDrive(_)
            | ApiAction::PutNetwork(_)
            | ApiAction::PutVsock(_)
            | ApiAction::PutMmdsConfig(_)
            | ApiAction::PutBalloon(_)
            | ApiAction::PutEntropy(_)
            | ApiAction::PutPmem(_)
            | ApiAction::PutHotplugMemory(_)
    )
}

impl Vmm {
    /// Admit and perform one API action.
    pub fn handle_action(&mut self, action: ApiAction) -> ApiResponse {
        let spec = action.spec();
        let booted = self.running.is_some();
        let boot_specific = !booted && configures_boot_resources(&action);
        let result = match (spec.admission, booted) {
            (Admission::PostBootOnly, false) => Err(ActionError::fault(NOT_SUPPORTED_BEFORE_START)),
            (Admission::PreBootOnly, true) => Err(ActionError::fault(NOT_SUPPORTED_AFTER_START)),
            _ => self.dispatch(action),
        };
        if boot_specific && result.is_ok() {
            self.boot_resources_configured = true;
        }
        match result {
            Ok(response) => response,
            Err(ActionError::Invalid(message)) => {
                ApiResponse::fault(format!("{}: {message}", spec.fault_prefix))
            }
            Err(ActionError::Fault(response)) => response,
        }
    }

    /// Whether `InstanceStart` has built the microVM.
    pub(crate) fn booted(&self) -> bool {
        self.running.is_some()
    }
}

#[cfg(test)]
mod tests;
