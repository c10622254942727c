//! Errors the API thread answers itself (routing, parsing, validation, size limits, timeouts).
//! Their `Display` is the `fault_message` clients see, so every text here is pinned by a test.

use crate::channel::ChannelError;
use crate::schemas::SchemaError;

/// A request refused before (or instead of) reaching the VMM.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No such route for this method.
    #[error("Invalid request method and/or path: {method} {path}.")]
    InvalidPathMethod {
        /// Request method.
        method: String,
        /// First path segment.
        path: String,
    },
    /// The body is not the JSON the route expects.
    #[error("An error occurred when deserializing the json body of a request: {0}.")]
    Deserialize(#[source] serde_json::Error),
    /// A snapshot-load memory backend rule, reported as Firecracker's deserializer does.
    #[error("An error occurred when deserializing the json body of a request: {0}.")]
    SnapshotMemBackend(#[source] SchemaError),
    /// A GET with a body.
    #[error("GET request cannot have a body.")]
    GetWithBody,
    /// A PUT without a body.
    #[error("Empty PUT request.")]
    EmptyPut,
    /// A PATCH without a body, or one that changes nothing.
    #[error("Empty PATCH request.")]
    EmptyPatch,
    /// Path ID and body ID differ.
    #[error("The id from the path does not match the id from the body!")]
    IdMismatch,
    /// Path ID and body ID differ (network interfaces).
    #[error("The id from the path [{path}] does not match the id from the body [{body}]!")]
    NetIdMismatch {
        /// ID in the path.
        path: String,
        /// ID in the body.
        body: String,
    },
    /// A malformed ID in the path.
    #[error("{0}")]
    InvalidPathId(#[source] SchemaError),
    /// A body that parsed but is not valid.
    #[error("{prefix}: {source}")]
    Invalid {
        /// Firecracker's resource prefix (`Machine config error`, ...).
        prefix: &'static str,
        /// What is wrong.
        #[source]
        source: SchemaError,
    },
    /// A body over `--http-api-max-payload-size`.
    #[error(
        "Request payload with size {size} is larger than the limit of {limit} allowed by server."
    )]
    PayloadTooLarge {
        /// Bytes announced or read.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A body that could not be read from the connection.
    #[error("Failed to read the request body: {0}.")]
    BodyRead(String),
    /// An MMDS body over `--mmds-size-limit`.
    #[error("MMDS limit exceeded error: The MMDS patch request doesn't fit.")]
    MmdsTooLarge,
    /// The VMM did not start the action in time; it was cancelled and will not run.
    #[error("Timed out after {secs} s waiting for the VMM to complete {label}.")]
    Timeout {
        /// The action.
        label: &'static str,
        /// Seconds waited.
        secs: u64,
    },
    /// The VMM started the action but did not finish it in time; it runs on.
    #[error(
        "Timed out after {secs} s waiting for the VMM to complete {label}. \
         The action was already running and may still take effect: its outcome is unknown."
    )]
    TimeoutOutcomeUnknown {
        /// The action.
        label: &'static str,
        /// Seconds waited.
        secs: u64,
    },
    /// The request body did not arrive in time.
    #[error("Timed out after {secs} s reading the request body.")]
    BodyTimeout {
        /// Seconds waited.
        secs: u64,
    },
    /// The VMM side of the channel is gone.
    #[error("{0}")]
    Channel(#[from] ChannelError),
}

impl RequestError {
    /// The HTTP status: 413 for MMDS size, 408 for a body too slow to arrive, 400 for
    /// everything else.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::MmdsTooLarge => 413,
            Self::BodyTimeout { .. } => 408,
            _ => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_firecrackers() {
        let e = RequestError::InvalidPathMethod {
            method: "GET".into(),
            path: "foo".into(),
        };
        assert_eq!(
            e.to_string(),
            "Invalid request method and/or path: GET foo."
        );
        assert_eq!(
            RequestError::GetWithBody.to_string(),
            "GET request cannot have a body."
        );
        assert_eq!(RequestError::EmptyPut.to_string(), "Empty PUT request.");
        assert_eq!(RequestError::EmptyPatch.to_string(), "Empty PATCH request.");
        assert_eq!(
            RequestError::IdMismatch.to_string(),
            "The id from the path does not match the id from the body!"
        );
        let e = RequestError::NetIdMismatch {
            path: "a".into(),
            body: "b".into(),
        };
        assert_eq!(
            e.to_string(),
            "The id from the path [a] does not match the id from the body [b]!"
        );
        assert_eq!(
            RequestError::InvalidPathId(SchemaError::EmptyId).to_string(),
            "The ID cannot be empty."
        );
        assert_eq!(RequestError::MmdsTooLarge.status(), 413);
        let e = RequestError::Invalid {
            prefix: "Machine config error",
            source: SchemaError::InvalidMemorySize,
        };
        assert_eq!(e.to_string(), "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.");
    }

    #[test]
    fn timeout_messages_say_whether_the_action_may_still_run() {
        let label = "InstanceStart";
        assert_eq!(
            RequestError::Timeout { label, secs: 30 }.to_string(),
            "Timed out after 30 s waiting for the VMM to complete InstanceStart."
        );
        assert_eq!(
            RequestError::TimeoutOutcomeUnknown { label, secs: 30 }.to_string(),
            "Timed out after 30 s waiting for the VMM to complete InstanceStart. The action was \
             already running and may still take effect: its outcome is unknown."
        );
        let e = RequestError::BodyTimeout { secs: 10 };
        assert_eq!(
            e.to_string(),
            "Timed out after 10 s reading the request body."
        );
        assert_eq!(e.status(), 408);
    }
}
