//! A `log::Log` for squib-devices' unit tests: the lines each thread logs at `Info` and above
//! (the default level of squib's logger), so a test can count what a guest action logs.
//!
//! Tests run on parallel threads of one binary, and `log` has one global logger: lines are
//! kept per thread, like the allocation counter. Installed once, on first use.

use std::cell::RefCell;
use std::sync::Once;

use log::{Level, LevelFilter, Log, Metadata, Record};

thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{} [{}] {}", record.level(), record.target(), record.args());
            let _ = LINES.try_with(|lines| lines.borrow_mut().push(line));
        }
    }

    fn flush(&self) {}
}

/// Run `f` and return the lines this thread logged meanwhile (level and target included).
pub fn lines_logged_by(f: impl FnOnce()) -> Vec<String> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&Capture).is_ok() {
            log::set_max_level(LevelFilter::Info);
        }
    });
    let before = LINES.with(|lines| lines.borrow().len());
    f();
    LINES.with(|lines| lines.borrow_mut().split_off(before))
}

/// At most this many lines may come from one rate-limited call site in a test: one window's
/// worth, twice in case the test straddles a window boundary.
pub const PER_SITE: usize = 2 * squib_logger::rate_limited::LINES_PER_WINDOW as usize;
