//! The API -> VMM channel: a bounded queue of [`ApiRequest`]s, each with a oneshot for the
//! reply, plus the VMM's wake eventfd, written after each send so its epoll loop notices.
//!
//! Built on `futures-channel`, which needs no runtime: the API thread awaits on its tokio
//! runtime, the VMM thread takes requests with a plain [`ApiReceiver::try_recv`], and the VMM
//! crate links no tokio.
//!
//! # Timeouts cancel
//!
//! A request whose requester has gone (its timeout fired, or its client disconnected) must
//! not run later: a slow `InstanceStart` must not boot a VM after the orchestrator gave up.
//! Each request carries a small shared state, `Queued -> Started` (the VMM claims it with
//! [`ApiRequest::claim`] right before running it) or `Queued -> Abandoned` (the requester
//! gives up with [`PendingReply::abandon`], or drops its [`PendingReply`]). Both moves are
//! one compare-and-swap, so exactly one side wins:
//! - the requester wins: the action never runs; the VMM skips it, logs it and counts it
//!   ([`ApiReceiver::skipped`]); the requester's timeout answer means "not performed";
//! - the VMM wins: the action runs to completion; a requester that times out afterwards gets
//!   [`Abandon::Started`] and must say that the outcome is unknown (the timeout does not wait:
//!   it bounds the client's wait, and a stuck VMM would otherwise hold it forever).
//!
//! The VMM also treats a dropped reply receiver (`oneshot::Sender::is_canceled`) as
//! abandoned, so a requester that never used this state (a dropped future) is covered too.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use futures_channel::{mpsc, oneshot};
use vmm_sys_util::eventfd::EventFd;

use crate::action::{ApiAction, ApiResponse};

/// Why an action got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The VMM side is gone.
    #[error("The VMM is not accepting API requests anymore.")]
    Closed,
    /// The VMM dropped the request without answering.
    #[error("The VMM dropped the request without answering.")]
    NoReply,
}

/// The way back to one request's requester.
#[derive(Debug)]
pub struct ApiReply(oneshot::Sender<ApiResponse>);

impl ApiReply {
    /// Answer. A requester that already gave up (timeout, disconnect) is ignored.
    pub fn respond(self, response: ApiResponse) {
        if self.0.send(response).is_err() {
            log::debug!("API reply dropped: the requester timed out or disconnected");
        }
    }
}

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Who decided a request's fate first: the VMM (started) or its requester (abandoned).
#[derive(Debug, Clone, Default)]
struct RequestState(Arc<AtomicU8>);

impl RequestState {
    /// Move from `Queued` to `to`; the state found when that fails.
    fn settle(&self, to: u8) -> Result<(), u8> {
        self.0
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }
}

/// One action and the way back to its requester.
#[derive(Debug)]
pub struct ApiRequest {
    /// The validated action.
    pub action: ApiAction,
    reply: ApiReply,
    state: RequestState,
}

impl ApiRequest {
    /// Answer the request.
    pub fn respond(self, response: ApiResponse) {
        self.reply.respond(response);
    }

    /// Whether the requester has given up (timed out or disconnected): such a request must
    /// not run. Racy by nature; [`ApiRequest::claim`] is the decision.
    #[must_use]
    pub fn is_abandoned(&self) -> bool {
        self.reply.0.is_canceled() || self.state.0.load(Ordering::Acquire) == ABANDONED
    }

    /// Claim the request for running: the action and its reply handle, or `None` when its
    /// requester has already gone (then the action must not run). After a successful claim
    /// the requester can no longer cancel it: a timeout then reports an unknown outcome.
    #[must_use]
    pub fn claim(self) -> Option<(ApiAction, ApiReply)> {
        if self.reply.0.is_canceled() {
            // The receiver is gone; make the state say so for any observer.
            let _ = self.state.settle(ABANDONED);
            return None;
        }
        match self.state.settle(STARTED) {
            Ok(()) => Some((self.action, self.reply)),
            Err(_) => None,
        }
    }

    /// The action and its reply handle, to answer after consuming the action.
    #[must_use]
    pub fn into_parts(self) -> (ApiAction, ApiReply) {
        (self.action, self.reply)
    }
}

/// The API thread's end. There is one (it is not `Clone`): the API thread keeps it behind a
/// lock, so the queue really holds at most the channel's capacity, timed-out requests included.
#[derive(Debug)]
pub struct ApiSender {
    tx: mpsc::Sender<ApiRequest>,
    wake: EventFd,
}

/// What became of a request its requester gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    /// The VMM had not started it: it will never run.
    NotStarted,
    /// The VMM had already started it: it runs to completion, outcome unknown.
    Started,
}

/// A queued request's reply, still to come. Dropping it abandons the request (see the
/// module docs): if the VMM has not started it yet, it never will.
#[derive(Debug)]
pub struct PendingReply {
    rx: oneshot::Receiver<ApiResponse>,
    state: RequestState,
}

impl PendingReply {
    /// Wait for the VMM's answer. Cancel-safe: a caller whose wait times out can still
    /// [`PendingReply::abandon`] the request.
    ///
    /// # Errors
    /// [`ChannelError::NoReply`] when the VMM dropped the request.
    pub async fn wait(&mut self) -> Result<ApiResponse, ChannelError> {
        (&mut self.rx).await.map_err(|_| ChannelError::NoReply)
    }

    /// Give up on the request and drop the reply receiver: [`Abandon::NotStarted`] if the
    /// VMM had not claimed it (it never will), else [`Abandon::Started`].
    #[must_use]
    pub fn abandon(self) -> Abandon {
        // Drop runs the same compare-and-swap; do it here to learn the outcome.
        match self.state.settle(ABANDONED) {
            Ok(()) => Abandon::NotStarted,
            Err(ABANDONED) => Abandon::NotStarted,
            Err(_) => Abandon::Started,
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        let _ = self.state.settle(ABANDONED);
        self.rx.close();
    }
}

impl ApiSender {
    /// Queue `action`, waiting while the queue is full, and wake the VMM.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] when the VMM side is gone.
    pub async fn send(&mut self, action: ApiAction) -> Result<PendingReply, ChannelError> {
        poll_fn(|cx| self.tx.poll_ready(cx))
            .await
            .map_err(|_| ChannelError::Closed)?;
        let (reply, rx) = oneshot::channel();
        let state = RequestState::default();
        self.tx
            .start_send(ApiRequest {
                action,
                reply: ApiReply(reply),
                state: state.clone(),
            })
            .map_err(|_| ChannelError::Closed)?;
        if let Err(e) = self.wake.write(1) {
            log::error!("Failed to wake the VMM for an API request: {e}");
        }
        Ok(PendingReply { rx, state })
    }

    /// [`ApiSender::send`], then wait for the reply (no timeout here: the caller bounds the
    /// whole call).
    ///
    /// # Errors
    /// [`ChannelError`] when the VMM side is gone or dropped the request.
    pub async fn call(&mut self, action: ApiAction) -> Result<ApiResponse, ChannelError> {
        self.send(action).await?.wait().await
    }
}

/// The VMM thread's end.
#[derive(Debug)]
pub struct ApiReceiver {
    rx: mpsc::Receiver<ApiRequest>,
    skipped: u64,
}

impl ApiReceiver {
    /// The next queued request, without blocking.
    pub fn try_recv(&mut self) -> Option<ApiRequest> {
        self.rx.try_recv().ok()
    }

    /// The next queued request whose requester still waits, claimed for running (see
    /// [`ApiRequest::claim`]); abandoned ones are skipped with a warning and counted.
    pub fn next_claimed(&mut self) -> Option<(ApiAction, ApiReply)> {
        loop {
            let request = self.try_recv()?;
            let label = request.action.label();
            match request.claim() {
                Some(claimed) => return Some(claimed),
                None => {
                    self.skipped += 1;
                    log::warn!(
                        "Skipped API request {label}: its requester timed out or disconnected \
                         before the VMM could start it."
                    );
                }
            }
        }
    }

    /// How many abandoned requests [`ApiReceiver::next_claimed`] skipped.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// A channel holding up to `capacity` requests (at least 1); `wake` is written after each send.
#[must_use]
pub fn api_channel(capacity: usize, wake: EventFd) -> (ApiSender, ApiReceiver) {
    // futures' bounded channel holds `buffer` messages plus one per sender (there is one).
    let (tx, rx) = mpsc::channel(capacity.max(1) - 1);
    (ApiSender { tx, wake }, ApiReceiver { rx, skipped: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn request_round_trip_wakes_the_vmm() {
        let wake = EventFd::new(EFD_NONBLOCK).unwrap();
        let observer = wake.try_clone().unwrap();
        let (mut tx, mut rx) = api_channel(4, wake);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let vmm = std::thread::spawn(move || loop {
            if let Some(req) = rx.try_recv() {
                let (action, reply) = req.into_parts();
                assert!(matches!(action, ApiAction::GetMmds));
                reply.respond(ApiResponse::NoContent);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
        let reply = rt.block_on(tx.call(ApiAction::GetMmds)).unwrap();
        assert_eq!(reply, ApiResponse::NoContent);
        assert_eq!(observer.read().unwrap(), 1);
        vmm.join().unwrap();
    }

    #[test]
    fn closed_receiver_is_an_error() {
        let (mut tx, rx) = api_channel(1, EventFd::new(EFD_NONBLOCK).unwrap());
        drop(rx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(
            rt.block_on(tx.call(ApiAction::GetMmds)),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn a_full_queue_holds_the_next_sender_back() {
        let (mut tx, mut rx) = api_channel(1, EventFd::new(EFD_NONBLOCK).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _first = rt.block_on(tx.send(ApiAction::GetMmds)).unwrap();
        let short = std::time::Duration::from_millis(20);
        let second =
            rt.block_on(async { tokio::time::timeout(short, tx.send(ApiAction::GetMmds)).await });
        assert!(
            second.is_err(),
            "a second request was queued past capacity 1"
        );
        assert!(rx.try_recv().is_some());
        let third =
            rt.block_on(async { tokio::time::timeout(short, tx.send(ApiAction::GetMmds)).await });
        assert!(third.is_ok(), "taking the first request must make room");
    }

    #[test]
    fn abandon_before_the_claim_cancels_and_after_it_reports_started() {
        let (mut tx, mut rx) = api_channel(4, EventFd::new(EFD_NONBLOCK).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Timed out while queued: never runs.
        let pending = rt.block_on(tx.send(ApiAction::GetMmds)).unwrap();
        assert_eq!(pending.abandon(), Abandon::NotStarted);
        let request = rx.try_recv().unwrap();
        assert!(request.is_abandoned());
        assert!(request.claim().is_none());
        // Timed out after the VMM claimed it: runs on, outcome unknown.
        let pending = rt.block_on(tx.send(ApiAction::GetMmds)).unwrap();
        let (_, reply) = rx.next_claimed().unwrap();
        assert_eq!(pending.abandon(), Abandon::Started);
        reply.respond(ApiResponse::NoContent);
        // A dropped reply receiver (the client went away) is abandoned too.
        drop(rt.block_on(tx.send(ApiAction::GetMmds)).unwrap());
        assert!(rx.next_claimed().is_none());
        assert_eq!(rx.skipped(), 1);
    }
}
