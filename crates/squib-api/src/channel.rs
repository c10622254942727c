//! The API -> VMM channel: a bounded queue of [`ApiRequest`]s, each with a oneshot for the
//! reply, plus the VMM's wake eventfd, written after each send so its epoll loop notices.
//!
//! Built on `futures-channel`, which needs no runtime: the API thread awaits on its tokio
//! runtime, the VMM thread takes requests with a plain [`ApiReceiver::try_recv`], and the VMM
//! crate links no tokio.

use std::future::poll_fn;

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

/// One action and the way back to its requester.
#[derive(Debug)]
pub struct ApiRequest {
    /// The validated action.
    pub action: ApiAction,
    reply: ApiReply,
}

impl ApiRequest {
    /// Answer the request.
    pub fn respond(self, response: ApiResponse) {
        self.reply.respond(response);
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

/// A queued request's reply, still to come.
#[derive(Debug)]
pub struct PendingReply(oneshot::Receiver<ApiResponse>);

impl PendingReply {
    /// Wait for the VMM's answer.
    ///
    /// # Errors
    /// [`ChannelError::NoReply`] when the VMM dropped the request.
    pub async fn wait(self) -> Result<ApiResponse, ChannelError> {
        self.0.await.map_err(|_| ChannelError::NoReply)
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
        self.tx
            .start_send(ApiRequest {
                action,
                reply: ApiReply(reply),
            })
            .map_err(|_| ChannelError::Closed)?;
        if let Err(e) = self.wake.write(1) {
            log::error!("Failed to wake the VMM for an API request: {e}");
        }
        Ok(PendingReply(rx))
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
}

impl ApiReceiver {
    /// The next queued request, without blocking.
    pub fn try_recv(&mut self) -> Option<ApiRequest> {
        self.rx.try_recv().ok()
    }
}

/// A channel holding up to `capacity` requests (at least 1); `wake` is written after each send.
#[must_use]
pub fn api_channel(capacity: usize, wake: EventFd) -> (ApiSender, ApiReceiver) {
    // futures' bounded channel holds `buffer` messages plus one per sender (there is one).
    let (tx, rx) = mpsc::channel(capacity.max(1) - 1);
    (ApiSender { tx, wake }, ApiReceiver { rx })
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
}
