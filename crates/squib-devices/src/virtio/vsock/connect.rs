//! The `CONNECT <port>\n` line a host client sends first (Firecracker's text protocol).
//!
//! The keyword is case-insensitive and the port a decimal `u32`; words are separated by
//! whitespace and words after the port are ignored, as Firecracker does. The whole line,
//! newline included, is at most [`MAX_CONNECT_LINE`] bytes and must be readable at once:
//! [`read_connect_line`] reads it byte by byte (so bytes after the newline stay in the
//! stream for the guest) and gives up at the first would-block, EOF or overlong line.

use std::io::{ErrorKind, Read};

/// Longest `CONNECT` line, newline included.
pub const MAX_CONNECT_LINE: usize = 32;

/// Why a host client's first line was refused (the stream is then closed).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The line did not arrive complete in one go (would block, or EOF first).
    #[error("incomplete CONNECT line")]
    Incomplete,
    /// No newline within [`MAX_CONNECT_LINE`] bytes.
    #[error("CONNECT line longer than {MAX_CONNECT_LINE} bytes")]
    TooLong,
    /// Not `CONNECT <u32>`.
    #[error("malformed CONNECT line")]
    Malformed,
    /// Reading the stream failed.
    #[error("reading the CONNECT line: {0}")]
    Io(ErrorKind),
}

/// Parse one line (with or without its newline) into the requested guest port.
///
/// # Errors
/// [`ConnectError::Malformed`] unless the line is `CONNECT <port>` (keyword in any case).
pub fn parse_connect_line(line: &[u8]) -> Result<u32, ConnectError> {
    let text = std::str::from_utf8(line).map_err(|_| ConnectError::Malformed)?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(keyword), Some(port)) if keyword.eq_ignore_ascii_case("connect") => {
            port.parse::<u32>().map_err(|_| ConnectError::Malformed)
        }
        _ => Err(ConnectError::Malformed),
    }
}

/// Read the `CONNECT` line from `stream` (non-blocking) and parse it.
///
/// # Errors
/// [`ConnectError`] when the line is incomplete, too long, malformed, or the read failed.
pub fn read_connect_line<R: Read>(stream: &mut R) -> Result<u32, ConnectError> {
    let mut line = [0u8; MAX_CONNECT_LINE];
    let mut len = 0;
    while len < MAX_CONNECT_LINE {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => return Err(ConnectError::Incomplete),
            Ok(_) => {
                line[len] = byte[0];
                len += 1;
                if byte[0] == b'\n' {
                    return parse_connect_line(&line[..len]);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(ConnectError::Incomplete),
            Err(e) => return Err(ConnectError::Io(e.kind())),
        }
    }
    Err(ConnectError::TooLong)
}

/// The reply to a host client once the guest accepted: `OK <local_port>\n`, in `buf`.
pub fn ok_reply(local_port: u32, buf: &mut [u8; 16]) -> usize {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // "OK 4294967295\n" is 14 bytes: the write always fits.
    let _ = writeln!(cursor, "OK {local_port}");
    cursor.position() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_is_case_insensitive() {
        assert_eq!(parse_connect_line(b"CONNECT 52\n"), Ok(52));
        assert_eq!(parse_connect_line(b"connect 52\n"), Ok(52));
        assert_eq!(parse_connect_line(b"CoNnEcT 4294967295\n"), Ok(u32::MAX));
        assert_eq!(parse_connect_line(b"  CONNECT\t7  \n"), Ok(7));
    }

    #[test]
    fn trailing_words_are_ignored_as_firecracker() {
        assert_eq!(parse_connect_line(b"CONNECT 52 extra\n"), Ok(52));
    }

    #[test]
    fn garbage_and_bad_ports_are_refused() {
        for line in [
            &b"CONNECT\n"[..],
            b"CONNECT -1\n",
            b"CONNECT 4294967296\n",
            b"CONNECT 0x10\n",
            b"CONNEC 52\n",
            b"CONNECTX 52\n",
            b"GET / HTTP/1.1\n",
            b"\n",
            b"CONNECT \xff\n",
        ] {
            assert_eq!(
                parse_connect_line(line),
                Err(ConnectError::Malformed),
                "{line:?}"
            );
        }
    }

    #[test]
    fn reads_only_up_to_the_newline() {
        let mut input: &[u8] = b"CONNECT 1234\nhello";
        assert_eq!(read_connect_line(&mut input), Ok(1234));
        assert_eq!(input, b"hello");
    }

    #[test]
    fn overlong_and_incomplete_lines_are_refused() {
        let long = format!("CONNECT {}\n", "0".repeat(40));
        assert_eq!(
            read_connect_line(&mut long.as_bytes()),
            Err(ConnectError::TooLong)
        );
        // 31 bytes plus the newline is the longest accepted line.
        let max = format!("CONNECT {:0>23}\n", 5);
        assert_eq!(max.len(), MAX_CONNECT_LINE);
        assert_eq!(read_connect_line(&mut max.as_bytes()), Ok(5));
        assert_eq!(
            read_connect_line(&mut &b"CONNECT 52"[..]),
            Err(ConnectError::Incomplete)
        );
    }

    #[test]
    fn ok_reply_is_firecracker_text() {
        let mut buf = [0u8; 16];
        let n = ok_reply(1_073_741_824, &mut buf);
        assert_eq!(&buf[..n], b"OK 1073741824\n");
        let n = ok_reply(u32::MAX, &mut buf);
        assert_eq!(&buf[..n], b"OK 4294967295\n");
    }
}
