//! The one request handler: read the body within the payload limit, parse the route, answer
//! `GET /` and `GET /version` locally, otherwise send the action to the VMM and wait with the
//! action class's timeout.
//!
//! A timeout cancels: the request is abandoned (`channel`'s module docs), so an action the
//! VMM had not started never runs and the client gets the plain timeout message; an action
//! the VMM had already started runs on, and the client is told its outcome is unknown.
//! The body has [`BODY_READ_TIMEOUT`] to arrive.

use squib_logger::metrics::METRICS;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::connection::BODY_READ_TIMEOUT;
use super::response::{self, Flags};
use crate::channel::{Abandon, ApiSender};
use crate::error::RequestError;
use crate::mirror::StateMirror;
use crate::routes::{parse_request, Parsed};
use crate::version::version_json;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct ServerState {
    /// The one sender, locked only while a request waits for room in the queue.
    pub sender: tokio::sync::Mutex<ApiSender>,
    pub mirror: Arc<StateMirror>,
    pub max_payload_size: usize,
    pub mmds_size_limit: usize,
}

fn error_response(e: &RequestError, flags: Flags) -> Response {
    log::debug!("API request refused: {e}");
    response::fault(e.status(), &e.to_string(), flags)
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    let collect = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect());
    let Ok(collected) = collect.await else {
        return Err(RequestError::BodyTimeout {
            secs: BODY_READ_TIMEOUT.as_secs(),
        });
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(RequestError::PayloadTooLarge {
                size: limit.saturating_add(1),
                limit,
            })
        }
        Err(e) => Err(RequestError::BodyRead(e.to_string())),
    }
}

fn announced_length(request: &Request) -> Option<usize> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn method_log_name(method: &str) -> String {
    let mut name = method.to_ascii_lowercase();
    if let Some(first) = name.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    name
}

/// Serve one request.
pub(crate) async fn handle(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let limit = state.max_payload_size;
    if let Some(size) = announced_length(&request).filter(|&n| n > limit) {
        return error_response(
            &RequestError::PayloadTooLarge { size, limit },
            Flags {
                close: true,
                ..Flags::default()
            },
        );
    }
    let body = match read_body(request.into_body(), limit).await {
        Ok(body) => body,
        Err(e) => {
            return error_response(
                &e,
                Flags {
                    close: true,
                    ..Flags::default()
                },
            )
        }
    };
    if body.is_empty() {
        log::debug!(
            "The API server received a {} request on \"{path}\".",
            method_log_name(&method)
        );
    } else {
        let text = String::from_utf8_lossy(&body);
        log::debug!(
            "The API server received a {} request on \"{path}\" with body \"{text}\".",
            method_log_name(&method)
        );
    }
    let response = respond(&state, &method, &path, &body).await;
    log::debug!(
        "Total previous API call duration: {} us.",
        started.elapsed().as_micros()
    );
    response
}

async fn respond(state: &ServerState, method: &str, path: &str, body: &[u8]) -> Response {
    let is_mmds_write = path == "/mmds" && (method == "PUT" || method == "PATCH");
    if is_mmds_write && body.len() > state.mmds_size_limit {
        return error_response(&RequestError::MmdsTooLarge, Flags::default());
    }
    let (action, deprecation) = match parse_request(method, path, body) {
        Ok(Parsed::InstanceInfo) => {
            METRICS.get_api_requests.instance_info_count.inc();
            return response::json(&*state.mirror.instance_info(), Flags::default());
        }
        Ok(Parsed::Version) => {
            METRICS.get_api_requests.vmm_version_count.inc();
            return response::json(&version_json(), Flags::default());
        }
        Ok(Parsed::Action {
            action,
            deprecation,
        }) => (action, deprecation),
        Err(e) => return error_response(&e, Flags::default()),
    };
    if deprecation.is_some() {
        METRICS.deprecated_api.deprecated_http_api_calls.inc();
    }
    let flags = Flags {
        deprecation: deprecation.is_some(),
        close: false,
    };
    let spec = action.spec();
    let started_us = squib_logger::time::monotonic_us();
    match call_vmm(state, action, spec.class.timeout()).await {
        Ok(reply) => {
            if let Some((name, latency)) = spec.latency {
                let us = squib_logger::time::monotonic_us().saturating_sub(started_us);
                latency.store(us);
                log::info!("'{name}' API request took {us} us.");
            }
            response::from_api(&reply, flags)
        }
        Err(e @ RequestError::Channel(_)) => error_response(&e, flags),
        Err(e) => {
            log::error!("{e}");
            error_response(&e, flags)
        }
    }
}

/// Send `action` and wait for the VMM's answer, `timeout` in all (waiting for room in the
/// queue included). On timeout the request is abandoned: if the VMM had not started it, it
/// never will ([`RequestError::Timeout`]); if it had, it runs on and the answer says the
/// outcome is unknown ([`RequestError::TimeoutOutcomeUnknown`]).
async fn call_vmm(
    state: &ServerState,
    action: crate::action::ApiAction,
    timeout: std::time::Duration,
) -> Result<crate::action::ApiResponse, RequestError> {
    let label = action.spec().label;
    let secs = timeout.as_secs();
    let deadline = tokio::time::Instant::now() + timeout;
    let send = async { state.sender.lock().await.send(action).await };
    let mut pending = match tokio::time::timeout_at(deadline, send).await {
        Ok(sent) => sent?,
        // Never queued: nothing will run.
        Err(_) => return Err(RequestError::Timeout { label, secs }),
    };
    match tokio::time::timeout_at(deadline, pending.wait()).await {
        Ok(reply) => Ok(reply?),
        Err(_) => Err(match pending.abandon() {
            Abandon::NotStarted => RequestError::Timeout { label, secs },
            Abandon::Started => RequestError::TimeoutOutcomeUnknown { label, secs },
        }),
    }
}
