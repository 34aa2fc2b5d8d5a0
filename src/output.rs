//! Standard output and error for every command.
//!
//! A reader that goes away (`tapedeck inspect … | head`) is not an error: from the first
//! `EPIPE` on, output to that stream is discarded, the command runs to its end (reports and
//! tapes are still written) and exits with its own code. A verdict's exit code never depends on
//! whether anyone read the summary (issue 17). Nothing in `src/` uses `print!`/`eprint!` (they
//! panic on a closed pipe); clippy's `print_stdout`/`print_stderr` lints enforce it.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader is gone: later writes are dropped without a syscall.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// The process's stdout, locked, with a closed reader turned into a sink. Get it with
/// [`stdout`]; every command prints through it.
#[derive(Debug)]
pub(crate) struct Stdout {
    inner: io::StdoutLock<'static>,
}

/// Stdout for a command's output (see the module docs).
pub(crate) fn stdout() -> Stdout {
    Stdout {
        inner: io::stdout().lock(),
    }
}

/// The outcome of a write to a stream whose reader may be gone: `EPIPE` marks it gone and
/// counts as written; other errors (a full disk behind a redirect…) stay errors.
fn absorb<T>(gone: &AtomicBool, r: io::Result<T>, written: T) -> io::Result<T> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            gone.store(true, Ordering::Relaxed);
            Ok(written)
        }
        r => r,
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if STDOUT_GONE.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        absorb(&STDOUT_GONE, r, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if STDOUT_GONE.load(Ordering::Relaxed) {
            return Ok(());
        }
        let r = self.inner.flush();
        absorb(&STDOUT_GONE, r, ())
    }
}

/// Whether stdout is a terminal (colors, progress bars).
pub(crate) fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// When the summary on stdout is colored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorWhen {
    /// When stdout is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    /// Always (e.g. for a CI log that renders ANSI colors).
    Always,
    /// Never.
    Never,
}

impl ColorWhen {
    /// Whether to color now.
    pub(crate) fn enabled(self) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

/// `--color WHEN`: one definition for every command that prints a verdict summary (`diff`,
/// `check`); flatten it into their flags.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct ColorFlag {
    /// Colors in the summary: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub(crate) color: ColorWhen,
}

/// Writes one line to stderr (messages for people: summaries of long-running commands, the
/// final error). A stderr nobody reads is not an error either: the line is dropped.
pub(crate) fn note_line(args: std::fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `eprintln!` that never panics: see [`note_line`].
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::output::note_line(format_args!($($arg)*))
    };
}
pub(crate) use note;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_absorbed_and_remembered_other_errors_are_not() {
        let gone = AtomicBool::new(false);
        let r = absorb(&gone, Err(io::Error::from(io::ErrorKind::BrokenPipe)), 5);
        assert_eq!(r.ok(), Some(5));
        assert!(gone.load(Ordering::Relaxed));
        let gone = AtomicBool::new(false);
        let r = absorb(&gone, Err::<usize, _>(io::Error::other("disk full")), 5);
        assert!(r.is_err());
        assert!(!gone.load(Ordering::Relaxed));
    }
}
