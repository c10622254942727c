//! The handler side of the hand-off: receive the VMM's region description and userfaultfd.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::error::HandlerError;
use crate::mapping::GuestRegionUffdMapping;
use crate::uffd::Uffd;

/// The longest description accepted. A region takes about 120 bytes of JSON, so this allows
/// hundreds of regions; Firecracker's own example handlers read at most 1 KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// What a VMM hands its page-fault handler.
#[derive(Debug)]
pub struct Handoff {
    /// The guest memory regions, as the VMM described them (not yet checked).
    pub mappings: Vec<GuestRegionUffdMapping>,
    /// The userfaultfd they are registered with, non-blocking.
    pub uffd: Uffd,
}

/// Receives, on a freshly accepted connection, the JSON array of region descriptions and the
/// userfaultfd attached to it. The VMM sends one `sendmsg`, but a stream socket may deliver it
/// in pieces: reading goes on until the bytes form a whole JSON value.
pub fn receive_handoff(vmm: &UnixStream) -> Result<Handoff, HandlerError> {
    let mut message = Vec::new();
    let mut uffd: Option<OwnedFd> = None;
    let mut chunk = [0u8; 4096];
    loop {
        let (read, fd) = vmm
            .recv_with_fd(&mut chunk)
            .map_err(|err| HandlerError::Receive(err.into()))?;
        if let Some(fd) = fd {
            // Only the first descriptor is the userfaultfd; a later one is closed on drop.
            uffd.get_or_insert(fd.into());
        }
        if read == 0 {
            return Err(HandlerError::ClosedEarly {
                received: message.len(),
            });
        }
        message.extend_from_slice(&chunk[..read]);
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(HandlerError::MessageTooLong {
                max: MAX_MESSAGE_BYTES,
            });
        }
        match serde_json::from_slice::<Vec<GuestRegionUffdMapping>>(&message) {
            Ok(mappings) => {
                let uffd = Uffd::from(uffd.ok_or(HandlerError::NoUffd)?);
                uffd.set_nonblocking_cloexec()
                    .map_err(HandlerError::UffdSetup)?;
                return Ok(Handoff { mappings, uffd });
            }
            Err(err) if err.is_eof() => continue,
            Err(err) => return Err(HandlerError::Parse(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use super::*;

    const ONE_REGION: &str = r#"[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096,"page_size_kib":4096}]"#;

    #[test]
    fn a_message_in_two_pieces_is_put_back_together() {
        let (vmm, handler) = UnixStream::pair().unwrap();
        let fd = tempfile::tempfile().unwrap();
        let (first, rest) = ONE_REGION.split_at(30);
        vmm.send_with_fd(first.as_bytes(), fd.as_raw_fd()).unwrap();
        (&vmm).write_all(rest.as_bytes()).unwrap();
        let handoff = receive_handoff(&handler).unwrap();
        assert_eq!(handoff.mappings.len(), 1);
        assert_eq!(handoff.mappings[0].size, 8192);
    }

    #[test]
    fn a_message_without_descriptor_is_refused() {
        let (mut vmm, handler) = UnixStream::pair().unwrap();
        vmm.write_all(ONE_REGION.as_bytes()).unwrap();
        assert!(matches!(
            receive_handoff(&handler),
            Err(HandlerError::NoUffd)
        ));
    }

    #[test]
    fn truncated_garbage_and_oversized_messages_are_refused() {
        let (mut vmm, handler) = UnixStream::pair().unwrap();
        vmm.write_all(&ONE_REGION.as_bytes()[..20]).unwrap();
        drop(vmm);
        assert!(matches!(
            receive_handoff(&handler),
            Err(HandlerError::ClosedEarly { received: 20 })
        ));

        let (mut vmm, handler) = UnixStream::pair().unwrap();
        vmm.write_all(br#"{"not":"an array"}"#).unwrap();
        assert!(matches!(
            receive_handoff(&handler),
            Err(HandlerError::Parse(_))
        ));

        let (vmm, handler) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            // An array that never ends; the handler stops reading, so writes may fail.
            let mut vmm = vmm;
            let _ = vmm.write_all(b"[");
            let filler = [b' '; 4096];
            for _ in 0..(MAX_MESSAGE_BYTES / filler.len() + 2) {
                if vmm.write_all(&filler).is_err() {
                    break;
                }
            }
        });
        assert!(matches!(
            receive_handoff(&handler),
            Err(HandlerError::MessageTooLong { .. })
        ));
        drop(handler);
        writer.join().unwrap();
    }
}
