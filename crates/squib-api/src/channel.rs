//! The API -> VMM channel: a bounded queue of [`ApiRequest`]s, each with a oneshot for the
//! reply, plus the VMM's wake eventfd, written after each send so its epoll loop notices.
//!
//! The receiving side is synchronous ([`ApiReceiver::try_recv`]) so the VMM thread needs no
//! tokio runtime.

use tokio::sync::{mpsc, oneshot};
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

/// The API thread's end.
#[derive(Debug, Clone)]
pub struct ApiSender {
    tx: mpsc::Sender<ApiRequest>,
    wake: std::sync::Arc<EventFd>,
}

impl ApiSender {
    /// Queue `action`, wake the VMM, and wait for its reply (no timeout here: the caller
    /// bounds the whole call).
    ///
    /// # Errors
    /// [`ChannelError`] when the VMM side is gone.
    pub async fn call(&self, action: ApiAction) -> Result<ApiResponse, ChannelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ApiRequest {
                action,
                reply: ApiReply(reply),
            })
            .await
            .map_err(|_| ChannelError::Closed)?;
        if let Err(e) = self.wake.write(1) {
            log::error!("Failed to wake the VMM for an API request: {e}");
        }
        rx.await.map_err(|_| ChannelError::NoReply)
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
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        ApiSender {
            tx,
            wake: std::sync::Arc::new(wake),
        },
        ApiReceiver { rx },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn request_round_trip_wakes_the_vmm() {
        let wake = EventFd::new(EFD_NONBLOCK).unwrap();
        let observer = wake.try_clone().unwrap();
        let (tx, mut rx) = api_channel(4, wake);
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
        let (tx, rx) = api_channel(1, EventFd::new(EFD_NONBLOCK).unwrap());
        drop(rx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(
            rt.block_on(tx.call(ApiAction::GetMmds)),
            Err(ChannelError::Closed)
        ));
    }
}
