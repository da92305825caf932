//! The raw words of a faulting stack, for the runner's own unwinder.
//!
//! At the first guard hit of a scenario the guest prints the stack it
//! faulted on, from the interrupted `rsp` (or the stack's bottom when `rsp`
//! left the stack) up to the top, as `STACK-DUMP` records right after the
//! `GUARD-HIT`. The runner unwinds those words with the ELF's call-frame
//! information, which the guest never reads, and holds the guest's
//! frame-pointer trace against the result.
//!
//! A dump is cut into chunks of at most `CHUNK_WORDS` words (one record
//! each, so every line fits the guest's record buffer). A chunk's words are
//! one string of space-separated tokens: a word in lowercase hex without
//! leading zeros, `?` for a word the guest could not read, either followed
//! by `*N` when it repeats N (≥ 2) times. A recursion's stack is mostly its
//! frames' filler, so the folding keeps a 16 KiB stack to a few KiB.

use crate::record::{Hex, Record};
use core::fmt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Words per `STACK-DUMP` record.
pub const CHUNK_WORDS: usize = 512;

/// One chunk of a stack dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackDump<'a> {
    pub scenario: &'a str,
    /// The CPU whose fault this is (pairs the dump with its `GUARD-HIT`).
    pub cpu: u32,
    /// The whole dump covers `[lo, hi)`; this chunk starts at `at`.
    pub lo: Hex,
    pub hi: Hex,
    pub at: Hex,
    #[serde(borrow)]
    pub words: Words<'a>,
}

impl Record for StackDump<'_> {
    const PREFIX: &'static str = "STACK-DUMP ";
    fn scenario(&self) -> &str {
        self.scenario
    }
}

/// The words of a chunk: read from memory (the guest, writing) or as the
/// encoded text (the runner, reading). Both compare by the words they hold.
#[derive(Clone, Copy)]
pub enum Words<'a> {
    /// `len` words from `at` upwards, each through `read` (`None`:
    /// unreadable).
    Memory {
        at: u64,
        len: usize,
        read: fn(u64) -> Option<u64>,
    },
    /// The encoded form, as it came off the serial line.
    Text(&'a str),
}

/// Why an encoded chunk does not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadToken;

impl<'a> Words<'a> {
    /// The words in order, expanded; an `Err` ends a malformed text.
    pub fn iter(&self) -> WordIter<'a> {
        WordIter {
            words: *self,
            index: 0,
            pending: None,
            failed: false,
        }
    }
}

/// Iterates over `Words`.
pub struct WordIter<'a> {
    words: Words<'a>,
    /// Words read from memory so far; for text, the byte offset.
    index: usize,
    /// A run being expanded: (value, words left).
    pending: Option<(Option<u64>, u64)>,
    failed: bool,
}

fn token(t: &str) -> Result<(Option<u64>, u64), BadToken> {
    let (word, count) = match t.split_once('*') {
        Some((w, n)) => {
            let ok = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0');
            let n: u64 = if ok {
                n.parse().map_err(|_| BadToken)?
            } else {
                0
            };
            if n < 2 {
                return Err(BadToken);
            }
            (w, n)
        }
        None => (t, 1),
    };
    let value = if word == "?" {
        None
    } else {
        let ok = !word.is_empty()
            && word.len() <= 16
            && word
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && (word == "0" || !word.starts_with('0'));
        if !ok {
            return Err(BadToken);
        }
        Some(u64::from_str_radix(word, 16).map_err(|_| BadToken)?)
    };
    Ok((value, count))
}

impl Iterator for WordIter<'_> {
    type Item = Result<Option<u64>, BadToken>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some((v, left)) = self.pending {
            self.pending = (left > 1).then_some((v, left - 1));
            return Some(Ok(v));
        }
        match self.words {
            Words::Memory { at, len, read } => {
                if self.index >= len {
                    return None;
                }
                let v = read(at + 8 * self.index as u64);
                self.index += 1;
                Some(Ok(v))
            }
            Words::Text(text) => {
                let rest = &text[self.index..];
                if rest.is_empty() {
                    return None;
                }
                let (t, after) = match rest.find(' ') {
                    Some(i) => (&rest[..i], i + 1),
                    None => (rest, rest.len()),
                };
                // A trailing or doubled space is malformed too.
                if t.is_empty() || (after == rest.len() && rest.ends_with(' ')) {
                    self.failed = true;
                    return Some(Err(BadToken));
                }
                self.index += after;
                match token(t) {
                    Ok((v, n)) => {
                        self.pending = (n > 1).then_some((v, n - 1));
                        Some(Ok(v))
                    }
                    Err(e) => {
                        self.failed = true;
                        Some(Err(e))
                    }
                }
            }
        }
    }
}

impl fmt::Display for Words<'_> {
    /// The encoding: runs of one value folded into `value*N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Words::Text(t) = self {
            return f.write_str(t);
        }
        let mut run: Option<(Option<u64>, u64)> = None;
        let mut first = true;
        let mut flush = |f: &mut fmt::Formatter<'_>, (v, n): (Option<u64>, u64)| {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            match v {
                Some(v) => write!(f, "{v:x}")?,
                None => f.write_str("?")?,
            }
            if n > 1 {
                write!(f, "*{n}")?;
            }
            Ok(())
        };
        for w in self.iter() {
            let w = w.map_err(|_| fmt::Error)?;
            run = match run {
                Some((v, n)) if v == w => Some((v, n + 1)),
                Some(r) => {
                    flush(f, r)?;
                    Some((w, 1))
                }
                None => Some((w, 1)),
            };
        }
        if let Some(r) = run {
            flush(f, r)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Words<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Words({self})")
    }
}

impl PartialEq for Words<'_> {
    fn eq(&self, other: &Words) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Words<'_> {}

impl Serialize for Words<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Words<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Words<'a>, D::Error> {
        let text = <&'de str>::deserialize(d)?;
        let words = Words::Text(text);
        if words.iter().any(|w| w.is_err()) {
            return Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(text),
                &"space-separated hex words, `?`, each optionally `*N`",
            ));
        }
        Ok(words)
    }
}

/// The dump's bounds for a stack `[lo, hi)` faulted at `rsp`: from `rsp`
/// while it is inside the stack, else from the bottom (an overflow has
/// already pushed `rsp` into the guard; a bad frame may have thrown it
/// anywhere).
pub const fn bounds(lo: u64, hi: u64, rsp: u64) -> (u64, u64) {
    let from = if rsp >= lo && rsp < hi { rsp & !7 } else { lo };
    (from, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;
    use proptest::prelude::*;
    extern crate std;
    use std::vec::Vec;

    std::thread_local! {
        static MEMORY: core::cell::RefCell<Vec<Option<u64>>> = const { core::cell::RefCell::new(Vec::new()) };
    }

    const BASE: u64 = 0xffffc9000001f000;

    fn read(addr: u64) -> Option<u64> {
        MEMORY.with(|m| m.borrow()[((addr - BASE) / 8) as usize])
    }

    fn memory(words: &[Option<u64>]) -> Words<'static> {
        MEMORY.with(|m| *m.borrow_mut() = words.to_vec());
        Words::Memory {
            at: BASE,
            len: words.len(),
            read,
        }
    }

    fn dump(words: Words) -> StackDump {
        StackDump {
            scenario: "stack.recursion",
            cpu: 1,
            lo: Hex(BASE),
            hi: Hex(BASE + 0x4000),
            at: Hex(BASE),
            words,
        }
    }

    #[test]
    fn runs_fold_and_read_back() {
        let a5 = Some(0xa5a5a5a5a5a5a5a5);
        let mut words = std::vec![Some(0xffffc9000001f070), Some(0xffffffff800293d9)];
        words.extend([a5; 32]);
        words.extend([Some(0), None, None, Some(7)]);
        let w = memory(&words);
        assert_eq!(
            std::format!("{w}"),
            "ffffc9000001f070 ffffffff800293d9 a5a5a5a5a5a5a5a5*32 0 ?*2 7"
        );
        let mut buf = [0u8; 4096];
        round_trip(&dump(w), &mut buf);
        let empty = memory(&[]);
        assert_eq!(std::format!("{empty}"), "");
        round_trip(&dump(empty), &mut buf);
    }

    #[test]
    fn malformed_words_do_not_read() {
        for bad in [
            "1 ",
            " 1",
            "1  2",
            "01",
            "x",
            "1*1",
            "1*0",
            "1*",
            "1*02",
            "*3",
            "11111111111111111",
            "A",
            "?*1",
            "1*-2",
        ] {
            let json = std::format!(
                "{{\"scenario\":\"s\",\"cpu\":0,\"lo\":\"0x0\",\"hi\":\"0x8\",\"at\":\"0x0\",\"words\":\"{bad}\"}}"
            );
            assert!(serde_json::from_str::<StackDump>(&json).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_full_chunk_fits_the_guests_buffer() {
        let words: Vec<Option<u64>> = (0..CHUNK_WORDS as u64)
            .map(|i| Some(u64::MAX - i))
            .collect();
        let mut buf = [0u8; 16384];
        let line = round_trip(&dump(memory(&words)), &mut buf);
        assert!(line.len() < 12 * 1024, "{} bytes", line.len());
    }

    #[test]
    fn the_dump_starts_at_rsp_inside_the_stack_else_at_the_bottom() {
        let (lo, hi) = (0x1000, 0x5000);
        assert_eq!(bounds(lo, hi, 0x2f48), (0x2f48, hi));
        assert_eq!(bounds(lo, hi, 0x2f4c), (0x2f48, hi));
        assert_eq!(bounds(lo, hi, lo), (lo, hi));
        assert_eq!(bounds(lo, hi, lo - 8), (lo, hi));
        assert_eq!(bounds(lo, hi, hi), (lo, hi));
        assert_eq!(bounds(lo, hi, 0), (lo, hi));
    }

    proptest! {
        #[test]
        fn any_words_round_trip(
            words in proptest::collection::vec(
                proptest::option::weighted(0.95, prop_oneof![Just(0u64), Just(0xa5a5a5a5a5a5a5a5), any::<u64>()]),
                0..300,
            )
        ) {
            let mut buf = [0u8; 16384];
            round_trip(&dump(memory(&words)), &mut buf);
        }
    }
}
