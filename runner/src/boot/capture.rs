//! Bounded serial capture. A guest (or a QEMU) that floods the serial
//! line must not take the runner's memory, the console or `--json` with it:
//! a line longer than the line limit keeps its head and tail around a
//! marker saying how much was cut, and a boot that sends more than its byte
//! budget is stopped (`Ended::Flooded`). Pure, so every edge is tested
//! without a process.

/// How much of a boot's serial output is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one line kept before the cut (its last `LINE_TAIL` bytes
    /// are kept too).
    pub line: usize,
    /// Bytes a boot may send in all; past it the boot is a flood.
    pub boot: u64,
}

impl Limits {
    /// Generous against what the guest prints: its longest line is a
    /// record of at most 16 KiB (`console::record`'s buffer), a whole
    /// `runner test` boot logs well under 1 MiB.
    pub const DEFAULT: Limits = Limits {
        line: 64 * 1024,
        boot: 16 * 1024 * 1024,
    };
}

/// The end of a cut line that is kept: where the line was going.
const LINE_TAIL: usize = 256;

/// Turns raw serial bytes into the bytes kept: lines cut to the limit, and
/// the total counted against the budget.
pub struct Cutter {
    limits: Limits,
    /// Bytes received, cut or not.
    received: u64,
    /// Bytes of the current line received so far.
    line_len: usize,
    /// The last bytes of a line being cut (at most `LINE_TAIL`).
    tail: Vec<u8>,
    /// Lines cut so far.
    pub cut_lines: u64,
}

impl Cutter {
    pub fn new(limits: Limits) -> Cutter {
        Cutter {
            limits,
            received: 0,
            line_len: 0,
            tail: Vec::new(),
            cut_lines: 0,
        }
    }

    #[cfg(test)]
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the budget is spent: the boot must be stopped.
    pub fn flooded(&self) -> bool {
        self.received > self.limits.boot
    }

    /// Feed `chunk`; what is kept of it is appended to `out`. Once the
    /// budget is spent nothing more is kept.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.flooded() {
            return;
        }
        // Every byte counts against the budget; none past it is kept.
        let room = self.limits.boot - self.received;
        self.received = self.received.saturating_add(chunk.len() as u64);
        let chunk = &chunk[..chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            let (body, newline) = match piece.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (piece, false),
            };
            let keep = self
                .limits
                .line
                .saturating_sub(self.line_len)
                .min(body.len());
            out.extend_from_slice(&body[..keep]);
            let over = &body[keep..];
            if !over.is_empty() {
                self.tail
                    .extend_from_slice(&over[over.len().saturating_sub(LINE_TAIL)..]);
                let excess = self.tail.len().saturating_sub(LINE_TAIL);
                self.tail.drain(..excess);
            }
            self.line_len += body.len();
            if newline {
                self.end_line(out);
                out.push(b'\n');
            }
        }
        if self.flooded() {
            self.end_line(out);
        }
    }

    /// The stream ended: close a cut line that never got its newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.end_line(out);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        if self.line_len > self.limits.line {
            let dropped = self.line_len - self.limits.line - self.tail.len();
            self.cut_lines += 1;
            let marker = format!(
                " [runner: line cut at {} bytes; {dropped} bytes dropped; its last {} follow] ",
                self.limits.line,
                self.tail.len()
            );
            out.extend_from_slice(marker.as_bytes());
            out.append(&mut self.tail);
        }
        self.tail.clear();
        self.line_len = 0;
    }
}

/// Counts KTAP result lines (`ok ...`, `not ok ...`) in the kept stream,
/// however it is chunked: each one is progress, which restarts a boot's
/// deadline. A slow host makes a boot slow, not a timeout; a hang still
/// goes the whole deadline without one.
#[derive(Default)]
pub struct Results {
    /// The first bytes of the current line (enough to tell a result).
    head: Vec<u8>,
    /// The current line was already judged.
    judged: bool,
}

impl Results {
    const LONGEST: usize = "not ok ".len();

    /// Result lines that begin in `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut seen = 0;
        for &b in bytes {
            if b == b'\n' {
                seen += usize::from(self.judge());
                self.head.clear();
                self.judged = false;
            } else if !self.judged {
                self.head.push(b);
                if self.head.len() == Self::LONGEST {
                    seen += usize::from(self.judge());
                }
            }
        }
        seen
    }

    fn judge(&mut self) -> bool {
        if self.judged {
            return false;
        }
        self.judged = true;
        self.head.starts_with(b"ok ") || self.head.starts_with(b"not ok ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_counted_in_any_chunking() {
        let text = b"KTAP version 1\n1..3\n# ok: not a result\nok 1 a\nnot ok 2 b\nok 3 c # SKIP x\nbroken ok 4\nok";
        for split in 0..text.len() {
            let mut results = Results::default();
            let (a, b) = text.split_at(split);
            assert_eq!(results.feed(a) + results.feed(b), 3, "split at {split}");
        }
        let mut results = Results::default();
        assert_eq!(results.feed(b"ok\nok 1\n"), 1, "`ok` alone is not a result");
    }

    fn cut(limits: Limits, chunks: &[&[u8]]) -> (String, Cutter) {
        let mut cutter = Cutter::new(limits);
        let mut out = Vec::new();
        for chunk in chunks {
            cutter.feed(chunk, &mut out);
        }
        cutter.finish(&mut out);
        (String::from_utf8(out).unwrap(), cutter)
    }

    const SMALL: Limits = Limits {
        line: 8,
        boot: 10_000,
    };

    #[test]
    fn short_lines_pass_untouched_in_any_chunking() {
        let text = b"KTAP version 1\n1..1\nok 1 a\n";
        let limits = Limits {
            line: 64,
            boot: 1000,
        };
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            let (out, cutter) = cut(limits, &[a, b]);
            assert_eq!(out.as_bytes(), text);
            assert_eq!(cutter.cut_lines, 0);
        }
    }

    #[test]
    fn a_long_line_keeps_head_and_tail() {
        let long = format!("{}END\nok 1 a\n", "x".repeat(1000));
        let (out, cutter) = cut(SMALL, &[long.as_bytes()]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].starts_with(
                "xxxxxxxx [runner: line cut at 8 bytes; 739 bytes dropped; its last 256 follow] "
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("xEND"), "{}", lines[0]);
        assert_eq!(lines[1], "ok 1 a");
        assert_eq!(cutter.cut_lines, 1);
        // The same, a byte at a time, and without the final newline.
        let bytes: Vec<&[u8]> = long.as_bytes()[..1003].chunks(1).collect();
        let (one, _) = cut(SMALL, &bytes);
        assert_eq!(one.trim_end(), lines[0]);
    }

    #[test]
    fn the_budget_stops_the_boot_and_bounds_what_is_kept() {
        let limits = Limits {
            line: 100,
            boot: 70,
        };
        let mut cutter = Cutter::new(limits);
        let mut out = Vec::new();
        cutter.feed(&[b'a'; 30], &mut out);
        cutter.feed(format!("\n{}\n", "b".repeat(38)).as_bytes(), &mut out);
        assert_eq!(cutter.received(), 70);
        assert!(!cutter.flooded(), "exactly at the budget is not past it");
        assert_eq!(out.len(), 70);
        cutter.feed(b"c", &mut out);
        assert!(cutter.flooded());
        assert_eq!(out.len(), 70, "nothing past the budget is kept");
        // One huge chunk: counted whole, kept up to the budget, cut to the line limit.
        let mut over = Cutter::new(limits);
        let mut out = Vec::new();
        over.feed(&[b'z'; 1_000_000], &mut out);
        assert!(over.flooded());
        assert_eq!(over.received(), 1_000_000);
        assert!(
            out.starts_with(&[b'z'; 70]),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert!(out.len() < 200, "{} bytes kept", out.len());
    }
}
