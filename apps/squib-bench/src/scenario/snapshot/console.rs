//! The guest's serial console as a VMM writes it to its stdout file, read while it grows:
//! its first new byte, and the guest kit's tick lines (`SQUIB tick <n>`), tell the benchmark
//! when a guest runs, after its boot and again after a restore.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::vmm::VmmProcess;

/// Pause between two reads of a console that has nothing new: the resolution of the
/// "first output" figure.
const POLL: Duration = Duration::from_micros(200);

/// The start of a tick line (`SQUIB tick-period` and `SQUIB tick-file` lines do not match:
/// the space is part of it).
const TICK: &[u8] = b"SQUIB tick ";

/// The guest's announcement of a fast tick (`squib.tick_period`).
const TICK_PERIOD: &str = "SQUIB tick-period ";

/// A console file, read from where the last look stopped.
pub struct Console {
    file: File,
    /// Bytes read and not yet consumed by a [`Console::wait_for_tick`].
    pending: Vec<u8>,
}

impl Console {
    /// Opens the console file `path` (the VMM's stdout) at its start.
    pub fn open(path: &Path) -> Result<Console, String> {
        let file = File::open(path)
            .map_err(|e| format!("cannot open the console file {}: {e}", path.display()))?;
        Ok(Console {
            file,
            pending: Vec::new(),
        })
    }

    /// Waits for the console's first byte not read yet; returns when it was seen (it stays
    /// unconsumed). Fails when `vmm` exits or after `timeout`.
    pub fn wait_for_output(
        &mut self,
        vmm: &mut VmmProcess,
        timeout: Duration,
    ) -> Result<Instant, String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.read_new()?;
            if !self.pending.is_empty() {
                return Ok(Instant::now());
            }
            vmm.check_running()
                .map_err(|e| format!("the guest stopped before printing: {e}"))?;
            if Instant::now() > deadline {
                return Err(format!(
                    "nothing on the guest console within {} s",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the next whole tick line; returns when it was seen and the console text up
    /// to the end of that line (which this call consumes). Fails when `vmm` exits or after
    /// `timeout`.
    pub fn wait_for_tick(
        &mut self,
        vmm: &mut VmmProcess,
        timeout: Duration,
    ) -> Result<(Instant, Vec<u8>), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.read_new()?;
            if let Some(end) = tick_line_end(&self.pending) {
                let seen = Instant::now();
                return Ok((seen, self.pending.drain(..end).collect()));
            }
            vmm.check_running()
                .map_err(|e| format!("the guest stopped before printing a tick line: {e}"))?;
            if Instant::now() > deadline {
                return Err(format!(
                    "no tick line on the guest console within {} s (console: {:?})",
                    timeout.as_secs(),
                    last_chars(&self.pending, 120)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Appends what the VMM wrote since the last read.
    fn read_new(&mut self) -> Result<(), String> {
        // A regular file read at its end returns 0, and returns the new bytes once the VMM
        // has appended more, so the open file keeps its place.
        self.file
            .read_to_end(&mut self.pending)
            .map(|_| ())
            .map_err(|e| format!("cannot read the console file: {e}"))
    }
}

/// The index just past the first whole tick line (`SQUIB tick <digits>`, then `\n` or
/// `\r\n`) in `text`. A line cut by a pause cannot match in the restored process's output:
/// its `SQUIB tick ` start went to the old process.
pub fn tick_line_end(text: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = find(&text[from..], TICK).map(|i| i + from) {
        let rest = &text[at + TICK.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let after = &rest[digits..];
        let newline = match after {
            [b'\n', ..] => Some(1),
            [b'\r', b'\n', ..] => Some(2),
            _ => None,
        };
        if let (true, Some(n)) = (digits > 0, newline) {
            return Some(at + TICK.len() + digits + n);
        }
        from = at + 1;
    }
    None
}

/// The period the guest announced (`SQUIB tick-period <seconds>`), if it did.
pub fn announced_tick_period(text: &[u8]) -> Option<String> {
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|l| l.trim().strip_prefix(TICK_PERIOD).map(str::to_owned))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The last `n` characters of `text`, for error messages.
fn last_chars(text: &[u8], n: usize) -> String {
    let s = String::from_utf8_lossy(text);
    let chars: Vec<char> = s.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tick_line_end_finds_the_first_whole_tick_line() {
        let text = b"boot noise\r\nSQUIB tick-period 0.01\r\nSQUIB tick 1\r\nSQUIB tick 2\n";
        let end = tick_line_end(text).unwrap();
        assert!(text[..end].ends_with(b"SQUIB tick 1\r\n"));
        assert_eq!(tick_line_end(b"SQUIB tick 7\n"), Some(13));
    }

    #[test]
    fn tick_line_end_waits_for_the_newline_and_skips_other_lines() {
        assert_eq!(tick_line_end(b"SQUIB tick 12"), None);
        assert_eq!(tick_line_end(b"SQUIB tick 12\r"), None);
        assert_eq!(tick_line_end(b"SQUIB tick-file x\nSQUIB tick \n"), None);
        assert_eq!(tick_line_end(b"SQUIB tick x1\n"), None);
        assert_eq!(tick_line_end(b""), None);
        // The tail of a line cut by the pause, then a whole one.
        let text = b"3\r\nSQUIB tick 124\r\n";
        assert_eq!(tick_line_end(text), Some(text.len()));
    }

    #[test]
    fn announced_tick_period_reads_the_guest_line() {
        let text = b"x\r\nSQUIB tick-period 0.01\r\nSQUIB tick 1\r\n";
        assert_eq!(announced_tick_period(text).as_deref(), Some("0.01"));
        assert_eq!(announced_tick_period(b"SQUIB tick 1\n"), None);
    }

    #[test]
    fn console_reads_what_is_appended_and_consumes_up_to_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.txt");
        let mut writer = File::create(&path).unwrap();
        let mut console = Console::open(&path).unwrap();
        // `sleep` rejects the VMM flags and exits, but each wait finds its line at the first
        // read, before it looks at the process.
        let mut vmm = VmmProcess::spawn(Path::new("/bin/sleep"), "t", false).unwrap();
        writer
            .write_all(b"SQUIB tick-period 0.01\r\nSQUIB tick 1\r\nSQUIB ti")
            .unwrap();
        let (_, text) = console
            .wait_for_tick(&mut vmm, Duration::from_secs(5))
            .unwrap();
        assert_eq!(announced_tick_period(&text).as_deref(), Some("0.01"));
        assert!(text.ends_with(b"SQUIB tick 1\r\n"));
        writer.write_all(b"ck 2\r\n").unwrap();
        let (_, text) = console
            .wait_for_tick(&mut vmm, Duration::from_secs(5))
            .unwrap();
        assert_eq!(text, b"SQUIB tick 2\r\n");
        let _ = vmm.kill();
    }

    #[test]
    fn wait_for_output_sees_the_first_new_byte_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.txt");
        let mut writer = File::create(&path).unwrap();
        let mut console = Console::open(&path).unwrap();
        let mut vmm = VmmProcess::spawn(Path::new("/bin/sh"), "t", false).unwrap();
        writer.write_all(b"9\r\nSQUIB tick 10\r\n").unwrap();
        console
            .wait_for_output(&mut vmm, Duration::from_secs(5))
            .unwrap();
        let (_, text) = console
            .wait_for_tick(&mut vmm, Duration::from_secs(5))
            .unwrap();
        assert_eq!(text, b"9\r\nSQUIB tick 10\r\n");
        let err = console
            .wait_for_output(&mut vmm, Duration::from_secs(30))
            .unwrap_err();
        assert!(err.contains("stopped before printing"), "{err}");
    }

    #[test]
    fn console_wait_fails_when_the_vmm_exits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.txt");
        std::fs::write(&path, "no ticks").unwrap();
        let mut console = Console::open(&path).unwrap();
        // `sh` rejects the VMM flags and exits at once.
        let mut vmm = VmmProcess::spawn(Path::new("/bin/sh"), "t", false).unwrap();
        let err = console
            .wait_for_tick(&mut vmm, Duration::from_secs(30))
            .unwrap_err();
        assert!(err.contains("stopped"), "{err}");
        assert!(Console::open(&dir.path().join("missing")).is_err());
    }
}
