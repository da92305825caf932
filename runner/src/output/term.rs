//! The runner's own lines on stdout and stderr. std's `println!` panics
//! when its stream is closed (`runner run ... | head` gives EPIPE), which
//! would end a run mid-way with its results unwritten. Here a stream that
//! fails once goes quiet for the rest of the run; boots, serial logs,
//! `--json` and `--junit` carry on. The crate's `println!` and `eprintln!`
//! (main.rs) come here.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

pub fn out(args: fmt::Arguments) {
    line(&mut std::io::stdout().lock(), &STDOUT_GONE, args);
}

pub fn err(args: fmt::Arguments) {
    line(&mut std::io::stderr().lock(), &STDERR_GONE, args);
}

fn line(stream: &mut impl Write, gone: &AtomicBool, args: fmt::Arguments) {
    if gone.load(Ordering::Relaxed) {
        return;
    }
    if writeln!(stream, "{args}")
        .and_then(|()| stream.flush())
        .is_err()
    {
        gone.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed(usize);

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.0 += 1;
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stream_goes_quiet_without_panicking() {
        let gone = AtomicBool::new(false);
        let mut closed = Closed(0);
        line(&mut closed, &gone, format_args!("a"));
        assert!(gone.load(Ordering::Relaxed));
        let tries = closed.0;
        line(&mut closed, &gone, format_args!("b"));
        assert_eq!(closed.0, tries, "wrote again after the stream closed");
        let mut open = Vec::new();
        line(&mut open, &AtomicBool::new(false), format_args!("x {}", 1));
        assert_eq!(open, b"x 1\n");
    }
}
