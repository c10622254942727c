//! The parsers the action table's rows name: how a route turns its request into its payload.
//! Routes with rules of their own (deprecated fields, special errors) keep their parser next
//! to their schema.

use serde::de::DeserializeOwned;

use super::{Method, RouteInput};
use crate::error::RequestError;
use crate::schemas::SchemaError;

/// A body that names the resource its path names (`drive_id`, `iface_id`, `id`).
pub trait BodyId {
    /// The type the path's `{id}` must parse as.
    type PathId: TryFrom<String, Error = SchemaError>;
    /// The ID the body names.
    fn body_id(&self) -> &str;
    /// The error when the two differ.
    fn mismatch(_path: &str, _body: &str) -> RequestError {
        RequestError::IdMismatch
    }
}

/// The body, which must not be empty (`Empty PUT request.`, `Empty PATCH request.`).
///
/// # Errors
/// [`RequestError::EmptyPut`] or [`RequestError::EmptyPatch`].
pub fn body<'a>(input: &RouteInput<'a>) -> Result<&'a [u8], RequestError> {
    match (input.body.is_empty(), input.method) {
        (false, _) => Ok(input.body),
        (true, Method::Patch) => Err(RequestError::EmptyPatch),
        (true, _) => Err(RequestError::EmptyPut),
    }
}

/// No payload, and no body allowed (GET).
///
/// # Errors
/// [`RequestError::GetWithBody`].
pub fn no_body(input: &RouteInput<'_>) -> Result<(), RequestError> {
    if input.body.is_empty() {
        Ok(())
    } else {
        Err(RequestError::GetWithBody)
    }
}

/// No payload; whatever body came is ignored.
///
/// # Errors
/// Never.
pub fn ignore_body(_input: &RouteInput<'_>) -> Result<(), RequestError> {
    Ok(())
}

/// The body as JSON of type `T`.
///
/// # Errors
/// An empty body, or JSON that is not a `T`.
pub fn json<T: DeserializeOwned>(input: &RouteInput<'_>) -> Result<T, RequestError> {
    serde_json::from_slice(body(input)?).map_err(RequestError::Deserialize)
}

/// The body as JSON of type `T`, or `T::default()` when there is none.
///
/// # Errors
/// JSON that is not a `T`.
pub fn optional_json<T: DeserializeOwned + Default>(
    input: &RouteInput<'_>,
) -> Result<T, RequestError> {
    if input.body.is_empty() {
        Ok(T::default())
    } else {
        json(input)
    }
}

/// `raw` validated into `T`, errors behind the route's fault prefix.
///
/// # Errors
/// [`RequestError::Invalid`].
pub fn validate<R, T: TryFrom<R, Error = SchemaError>>(
    input: &RouteInput<'_>,
    raw: R,
) -> Result<T, RequestError> {
    T::try_from(raw).map_err(|source| RequestError::Invalid {
        prefix: input.fault_prefix,
        source,
    })
}

/// The body as a raw `R`, validated into `T`.
///
/// # Errors
/// An empty body, JSON that is not an `R`, or an `R` that is not valid.
pub fn validated<R: DeserializeOwned, T: TryFrom<R, Error = SchemaError>>(
    input: &RouteInput<'_>,
) -> Result<T, RequestError> {
    let raw = json::<R>(input)?;
    validate(input, raw)
}

/// The path's `{id}` as a `T`.
///
/// # Errors
/// [`RequestError::InvalidPathId`].
pub fn path_id<T: TryFrom<String, Error = SchemaError>>(
    input: &RouteInput<'_>,
) -> Result<T, RequestError> {
    T::try_from(input.id.to_owned()).map_err(RequestError::InvalidPathId)
}

/// A resource under `/<collection>/{id}`: a body is required, the path ID must be valid, and
/// the body must name the same ID before it is validated.
///
/// # Errors
/// The first of those rules that fails.
pub fn with_id<R: BodyId + DeserializeOwned, T: TryFrom<R, Error = SchemaError>>(
    input: &RouteInput<'_>,
) -> Result<T, RequestError> {
    body(input)?;
    path_id::<R::PathId>(input)?;
    let raw = json::<R>(input)?;
    if raw.body_id() != input.id {
        return Err(R::mismatch(input.id, raw.body_id()));
    }
    validate(input, raw)
}
