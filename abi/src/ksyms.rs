//! The guest's embedded symbol table ("kallsyms"), written by the runner,
//! read by the guest's oops printer.
//!
//! Like Linux's kallsyms, the table cannot come from the link that produces
//! the addresses it lists, so it is filled in afterwards: the guest reserves
//! a zeroed `.ksyms` section, and after building, the runner writes the
//! sorted function symbols into it in place. The guest then names `RIP` and
//! every backtrace frame itself (`name+0xoff/0xsize`, as Linux prints
//! them), even when nobody symbolizes its log.
//!
//! Layout (little endian): magic `KSYMTAB3`, `count: u32`, `strings: u32`,
//! then `count` entries of `(addr: u64, size: u32, name_offset: u32,
//! name_len: u32, link_len: u32)` sorted by address, then the names. A size
//! of 0 (an assembly label) means "up to the next symbol", as the runner's
//! own lookup reads the ELF. Each entry's name is demangled; the
//! `link_len` bytes right after it spell it as the ELF's symbol table does
//! (mangled), none when that is the same, so the oops can give both: one
//! for a person, one for tools that look it up with `nm`.

pub const MAGIC: &[u8; 8] = b"KSYMTAB3";
/// Bytes the guest reserves for the table.
pub const SECTION_SIZE: usize = 384 * 1024;
/// The section the runner fills.
pub const SECTION_NAME: &str = ".ksyms";

const HEADER: usize = 16;
const ENTRY: usize = 24;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A symbol an address was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    pub name: &'a str,
    /// The ELF's spelling of `name`, when it differs.
    pub link: Option<&'a str>,
    /// Bytes from the symbol's start to the address.
    pub offset: u64,
    /// The symbol's size; 0 for a label without one.
    pub size: u64,
}

/// A table view over the section's bytes. Never panics on a corrupt or
/// empty (never-filled) section: it just finds nothing.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Table<'a> {
    pub fn new(bytes: &'a [u8]) -> Option<Table<'a>> {
        if bytes.get(..8)? != MAGIC {
            return None;
        }
        let count = u32_at(bytes, 8)? as usize;
        if HEADER.checked_add(count.checked_mul(ENTRY)?)? > bytes.len() {
            return None;
        }
        Some(Table { bytes, count })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `i`: (address, size, name, link name).
    fn entry(&self, i: usize) -> Option<(u64, u64, &'a str, Option<&'a str>)> {
        let at = HEADER + i * ENTRY;
        let addr = u64_at(self.bytes, at)?;
        let size = u64::from(u32_at(self.bytes, at + 8)?);
        let strings = HEADER + self.count * ENTRY;
        let off = strings + u32_at(self.bytes, at + 12)? as usize;
        let len = u32_at(self.bytes, at + 16)? as usize;
        let link_len = u32_at(self.bytes, at + 20)? as usize;
        let text = |from: usize, len: usize| {
            core::str::from_utf8(self.bytes.get(from..from.checked_add(len)?)?).ok()
        };
        let name = text(off, len)?;
        let link = match link_len {
            0 => None,
            n => Some(text(off.checked_add(len)?, n)?),
        };
        Some((addr, size, name, link))
    }

    /// The function containing `addr`: the last symbol at or below it, if
    /// `addr` is inside it (a sized symbol) or before the next one (a label).
    pub fn lookup(&self, addr: u64) -> Option<Found<'a>> {
        // Binary search for the last entry with entry.addr <= addr.
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)?.0 <= addr {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        let (base, size, name, link) = self.entry(i)?;
        let inside = match size {
            0 => i + 1 < self.count,
            size => addr - base < size,
        };
        inside.then_some(Found {
            name,
            link,
            offset: addr - base,
            size,
        })
    }
}

/// One symbol for `encode`: address, size (0 if none), demangled name, the
/// ELF's name ("" when the same).
pub type Symbol<'s> = (u64, u64, &'s str, &'s str);

/// Encode `symbols` (any order) into a table of at most `capacity` bytes,
/// dropping symbols from the high end of the sorted list if they do not
/// all fit. Of several symbols at one address the first listed is kept.
/// Returns the bytes and how many symbols made it.
#[cfg(feature = "alloc")]
pub fn encode(symbols: &[Symbol], capacity: usize) -> (alloc::vec::Vec<u8>, usize) {
    let mut sorted: alloc::vec::Vec<Symbol> = symbols.to_vec();
    sorted.sort_by_key(|s| s.0);
    sorted.dedup_by_key(|s| s.0);
    let mut n = sorted.len();
    loop {
        let names: usize = sorted[..n].iter().map(|s| s.2.len() + s.3.len()).sum();
        if HEADER + n * ENTRY + names <= capacity || n == 0 {
            break;
        }
        n -= 1;
    }
    let mut out = alloc::vec::Vec::with_capacity(capacity);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    let names: usize = sorted[..n].iter().map(|s| s.2.len() + s.3.len()).sum();
    out.extend_from_slice(&(names as u32).to_le_bytes());
    let mut off = 0u32;
    for (addr, size, name, link) in &sorted[..n] {
        let link = if link == name { "" } else { link };
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&u32::try_from(*size).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(link.len() as u32).to_le_bytes());
        off += (name.len() + link.len()) as u32;
    }
    for (_, _, name, link) in &sorted[..n] {
        out.extend_from_slice(name.as_bytes());
        if link != name {
            out.extend_from_slice(link.as_bytes());
        }
    }
    (out, n)
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    fn found(name: &str, offset: u64, size: u64) -> Option<Found<'_>> {
        Some(Found {
            name,
            link: None,
            offset,
            size,
        })
    }

    #[test]
    fn both_spellings_of_a_name_come_back() {
        let syms = [
            (0x1000u64, 0x10, "a::f", "_ZN1a1f17h0123456789abcdefE"),
            (0x1010, 0x10, "g", "g"),
            (0x1020, 0x10, "h", ""),
        ];
        let (bytes, n) = encode(&syms, 4096);
        assert_eq!(n, 3);
        let t = Table::new(&bytes).unwrap();
        let link = |a| t.lookup(a).map(|f| (f.name, f.link));
        assert_eq!(
            link(0x1004),
            Some(("a::f", Some("_ZN1a1f17h0123456789abcdefE")))
        );
        assert_eq!(link(0x1014), Some(("g", None)));
        assert_eq!(link(0x1024), Some(("h", None)));
    }

    #[test]
    fn round_trip_sizes_and_labels() {
        let syms = [
            (0x3000u64, 0, "c", ""),
            (0x1000, 0x100, "a", ""),
            (0x2000, 0, "b", ""),
        ];
        let (bytes, n) = encode(&syms, 4096);
        assert_eq!(n, 3);
        let t = Table::new(&bytes).unwrap();
        assert_eq!(t.lookup(0x0fff), None);
        assert_eq!(t.lookup(0x1000), found("a", 0, 0x100));
        assert_eq!(t.lookup(0x10ff), found("a", 0xff, 0x100));
        // Past a sized symbol's end: nobody's.
        assert_eq!(t.lookup(0x1100), None);
        // A label reaches to the next symbol; the last one nowhere.
        assert_eq!(t.lookup(0x2abc), found("b", 0xabc, 0));
        assert_eq!(t.lookup(0x3000), None);
    }

    #[test]
    fn unfilled_or_corrupt_sections_find_nothing() {
        assert!(Table::new(&[0u8; 64]).is_none());
        let (mut bytes, _) = encode(&[(1, 4, "x", "")], 4096);
        bytes[8] = 0xff; // count far beyond the data
        assert!(Table::new(&bytes).is_none());
        let (bytes, _) = encode(&[(1, 4, "x", "_ZN1x"), (9, 0, "y", "")], 4096);
        for cut in 0..bytes.len() {
            if let Some(t) = Table::new(&bytes[..cut]) {
                let _ = t.lookup(5);
            }
        }
        // The old format is not read as this one.
        let mut old = bytes.clone();
        old[..8].copy_from_slice(b"KSYMTAB2");
        assert!(Table::new(&old).is_none());
    }

    #[test]
    fn too_many_symbols_are_dropped_to_fit() {
        let names: alloc::vec::Vec<alloc::string::String> =
            (0..100).map(|i| alloc::format!("sym{i:04}")).collect();
        let syms: alloc::vec::Vec<Symbol> = names
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 * 16, 16, s.as_str(), ""))
            .collect();
        let (bytes, n) = encode(&syms, 600);
        assert!(bytes.len() <= 600 && n < 100 && n > 0);
        assert_eq!(Table::new(&bytes).unwrap().len(), n);
    }
}
