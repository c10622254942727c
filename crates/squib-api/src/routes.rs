//! Routing: method + path + body -> a validated [`ApiAction`] (or a route the API thread
//! answers itself). Pure and synchronous, so it is tested and fuzzed without a socket.
//!
//! The routes are the rows of the action table ([`crate::table`]); this module matches them
//! and applies Firecracker's rules (`parsed_request.rs`): an unknown method or path names the
//! first path segment; GET must have no body, PUT and PATCH must have one; path IDs are
//! checked before the body and must equal the body's ID.

pub mod parse;

use std::cell::Cell;

use crate::action::ApiAction;
use crate::error::RequestError;
use crate::table::ROUTES;

/// The methods Firecracker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    fn from_http(method: &str) -> Option<Self> {
        Some(match method {
            "GET" => Self::Get,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }
}

/// What a route's parser sees of the request.
#[derive(Debug)]
pub struct RouteInput<'a> {
    /// The request's method.
    pub method: Method,
    /// The `{id}` path segment, for routes that have one (empty otherwise).
    pub id: &'a str,
    /// The request body.
    pub body: &'a [u8],
    /// The route's fault prefix (`Drive config error`, ...) for validation errors.
    pub fault_prefix: &'static str,
    deprecation: Cell<Option<&'static str>>,
}

impl RouteInput<'_> {
    /// Mark the request as using a deprecated field: `warning` is logged and the response
    /// carries `Deprecation: true`.
    pub fn deprecate(&self, warning: &'static str) {
        log::warn!("{warning}");
        self.deprecation.set(Some(warning));
    }
}

/// One row of the action table as the router sees it.
#[derive(Debug)]
pub(crate) struct Route {
    pub method: Method,
    /// The path without its `{id}` segment.
    pub path: &'static str,
    /// Whether one `{id}` segment follows `path`.
    pub with_id: bool,
    /// The prefix of the route's validation errors.
    pub fault_prefix: &'static str,
    /// Builds the action from the request.
    pub parse: fn(&RouteInput<'_>) -> Result<ApiAction, RequestError>,
}

impl Route {
    /// The `{id}` segment (empty for routes without one) when `path` is this route's.
    fn matches<'p>(&self, method: Method, path: &'p str) -> Option<&'p str> {
        if method != self.method {
            return None;
        }
        let rest = path.strip_prefix(self.path)?;
        match (self.with_id, rest.strip_prefix('/')) {
            (false, _) if rest.is_empty() => Some(""),
            (true, Some(id)) if !id.contains('/') => Some(id),
            _ => None,
        }
    }
}

/// What a request turned into.
// One short-lived value per request: boxing the action would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// `GET /`, answered from the state mirror.
    InstanceInfo,
    /// `GET /version`.
    Version,
    /// An action for the VMM; `deprecation` is the warning when a deprecated field was used.
    Action {
        /// The action.
        action: ApiAction,
        /// Warning text; `Some` adds `Deprecation: true` to the response.
        deprecation: Option<&'static str>,
    },
}

/// Parse one request. `method` is the raw method text; `path` has no query string.
///
/// # Errors
/// [`RequestError`] with Firecracker's message for the first problem found.
pub fn parse_request(method: &str, path: &str, body: &[u8]) -> Result<Parsed, RequestError> {
    let invalid = || {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        RequestError::InvalidPathMethod {
            method: method.to_owned(),
            path: trimmed.split('/').next().unwrap_or_default().to_owned(),
        }
    };
    let method = Method::from_http(method).ok_or_else(invalid)?;
    if method == Method::Get && matches!(path, "/" | "/version") {
        if !body.is_empty() {
            return Err(RequestError::GetWithBody);
        }
        return Ok(if path == "/" {
            Parsed::InstanceInfo
        } else {
            Parsed::Version
        });
    }
    let (route, id) = ROUTES
        .iter()
        .find_map(|route| Some((route, route.matches(method, path)?)))
        .ok_or_else(invalid)?;
    let input = RouteInput {
        method,
        id,
        body,
        fault_prefix: route.fault_prefix,
        deprecation: Cell::new(None),
    };
    let action = (route.parse)(&input)?;
    Ok(Parsed::Action {
        action,
        deprecation: input.deprecation.get(),
    })
}

#[cfg(test)]
mod tests;
