//! The guest ELF's symbols, read by the runner: names and file:line for the
//! addresses a fault report carries (from DWARF, with `addr2line`), and the
//! `.ksyms` table the guest reads to name them itself (`abi::ksyms`).
//!
//! The runner symbolizes independently of the guest so that a check like
//! "the backtrace contains `stack_recurse`" holds the guest's addresses
//! against the ELF, not against whatever names the guest chose to print.

use crate::unwind::{CallFrames, ElfCallFrames};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What the verdicts need to know of the guest ELF; tests supply tables.
pub trait Symbolize {
    /// Every function name `addr` lies in, innermost first (inlined frames
    /// and symbol aliases included). Empty if unknown.
    fn functions(&self, addr: u64) -> Vec<String>;
    /// The symbol-table entry containing `addr` (as the guest's `.ksyms`
    /// was filled from): every name at its address, its start and size.
    fn symbol(&self, addr: u64) -> Option<SymbolAt>;
    /// Whether `addr` lies in the ELF's executable code.
    fn in_text(&self, addr: u64) -> bool;
    /// The ELF's call-frame information, for the runner's own unwinder.
    fn call_frames(&self) -> Option<&dyn CallFrames>;
    /// Where `irq_common`'s call of its exit path returns
    /// ([`abi::guard::IRQ_COMMON_FRAMED`]), if the ELF says.
    fn irq_exit_return(&self) -> Option<u64> {
        None
    }
    /// The static frame size (`frames::StaticFrame::bytes`) of the
    /// function return address `ret` returns into, where its prologue was
    /// read and it keeps a frame pointer (else the chain does not show it).
    fn frame_bytes(&self, _ret: u64) -> Option<u64> {
        None
    }
    /// Whether the ELF's prologues were read at all (`frame_bytes` can
    /// answer for some address).
    fn frame_sizes_read(&self) -> bool {
        false
    }
}

/// A function symbol: all names at one address (aliases, folded
/// functions), where it starts, how big it is (0: an assembly label, which
/// reaches to the next symbol).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SymbolAt {
    /// Demangled, as a person (and the guest's oops) names it.
    pub names: Vec<String>,
    /// The same names as the ELF's symbol table spells them (what `nm`
    /// prints), in the same order.
    #[serde(default)]
    pub links: Vec<String>,
    pub base: u64,
    pub size: u64,
}

/// One frame of an address's inline chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    /// `path:line`, the path relative to the workspace when inside it.
    pub location: Option<String>,
}

type Reader = gimli::EndianRcSlice<gimli::RunTimeEndian>;

/// A loaded guest ELF.
pub struct Symbols {
    dwarf: Option<addr2line::Context<Reader>>,
    /// Function symbols sorted by address: (address, size, demangled name,
    /// the name as the ELF spells it).
    table: Vec<(u64, u64, String, String)>,
    /// Executable sections' address ranges.
    text: Vec<std::ops::Range<u64>>,
    cfi: Option<ElfCallFrames>,
    irq_exit_return: Option<u64>,
    /// `None` if the prologues could not be read (the check says so).
    frames: Option<crate::frames::StaticFrames>,
    root: Option<PathBuf>,
}

impl Symbols {
    pub fn load(path: &Path) -> Result<Symbols, String> {
        let data =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Symbols::parse(&data).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(data: &[u8]) -> Result<Symbols, String> {
        let file = object::File::parse(data).map_err(|e| e.to_string())?;
        let mut table = function_symbols(&file);
        table.sort();
        let endian = if file.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        // Each section is copied into an Rc so the context owns its data.
        let load = |id: gimli::SectionId| -> Result<Reader, String> {
            let bytes: Rc<[u8]> = match file.section_by_name(id.name()) {
                Some(section) => {
                    Rc::from(&*section.uncompressed_data().map_err(|e| e.to_string())?)
                }
                None => Rc::from(&[][..]),
            };
            Ok(gimli::EndianRcSlice::new(bytes, endian))
        };
        // No DWARF is not fatal: names still come from the symbol table.
        let dwarf = gimli::Dwarf::load(load)
            .ok()
            .and_then(|d| addr2line::Context::from_dwarf(d).ok());
        let text = file
            .sections()
            .filter(|s| s.kind() == object::SectionKind::Text)
            .map(|s| s.address()..s.address() + s.size())
            .collect();
        // Without CFI the unwinder has nothing to go on; its check says so.
        let cfi = ElfCallFrames::parse(&file)
            .map_err(|e| eprintln!("runner: warning: the guest's call-frame information: {e}"))
            .ok();
        let irq_exit_return = data_words::<2>(&file, abi::guard::IRQ_COMMON_FRAMED).map(|[_, r]| r);
        let frames = crate::frames::StaticFrames::parse(data)
            .map_err(|e| eprintln!("runner: warning: the guest's static frame sizes: {e}"))
            .ok();
        Ok(Symbols {
            dwarf,
            table,
            text,
            cfi,
            irq_exit_return,
            frames,
            root: Some(crate::workspace::root()),
        })
    }

    /// Where the function named `name` (demangled, without its hash) starts.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.table
            .iter()
            .find(|(_, _, n, _)| n == name)
            .map(|&(a, ..)| a)
    }

    /// The inline chain at `addr`, innermost first, with file:line; falls
    /// back to the symbol table when DWARF says nothing.
    pub fn frames(&self, addr: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        // addr2line probes the range [addr, addr + 1), which overflows at
        // u64::MAX (a panic with overflow checks on); no code lives there.
        let dwarf = self.dwarf.as_ref().filter(|_| addr != u64::MAX);
        if let Some(ctx) = dwarf {
            if let Ok(mut frames) = ctx.find_frames(addr).skip_all_loads() {
                while let Ok(Some(frame)) = frames.next() {
                    let function = frame
                        .function
                        .as_ref()
                        .and_then(|f| f.demangle().ok())
                        .map(|n| n.into_owned());
                    let location = frame
                        .location
                        .as_ref()
                        .and_then(|l| Some(format!("{}:{}", self.relative(l.file?), l.line?)));
                    if let Some(function) = function.or_else(|| self.symbol(addr)) {
                        out.push(Frame { function, location });
                    }
                }
            }
        }
        if out.is_empty() {
            if let Some(function) = self.symbol(addr) {
                out.push(Frame {
                    function,
                    location: None,
                });
            }
        }
        out
    }

    fn containing(&self, addr: u64) -> Option<&(u64, u64, String, String)> {
        let last = self.table.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        // Of several symbols at one address, the first in table order: the
        // one `abi::ksyms::encode` keeps, so the guest's answer and this
        // one are about the same entry.
        let i = self.table.partition_point(|s| s.0 < self.table[last].0);
        let s = &self.table[i];
        // An assembly label has no size: it reaches to the next symbol
        // (the last one reaches nowhere).
        let fits = match s.1 {
            0 => last + 1 < self.table.len(),
            size => addr < s.0 + size,
        };
        fits.then_some(s)
    }

    fn symbol(&self, addr: u64) -> Option<String> {
        self.containing(addr).map(|s| s.2.clone())
    }

    fn relative(&self, file: &str) -> String {
        match &self.root {
            Some(root) => Path::new(file)
                .strip_prefix(root)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| file.to_string()),
            None => file.to_string(),
        }
    }
}

impl Symbolize for Symbols {
    fn symbol(&self, addr: u64) -> Option<SymbolAt> {
        let &(base, size, _, _) = self.containing(addr)?;
        let at = || self.table.iter().filter(|s| s.0 == base);
        Some(SymbolAt {
            names: at().map(|s| s.2.clone()).collect(),
            links: at().map(|s| s.3.clone()).collect(),
            base,
            size,
        })
    }

    fn in_text(&self, addr: u64) -> bool {
        self.text.iter().any(|r| r.contains(&addr))
    }

    fn call_frames(&self) -> Option<&dyn CallFrames> {
        self.cfi.as_ref().map(|c| c as &dyn CallFrames)
    }

    fn irq_exit_return(&self) -> Option<u64> {
        self.irq_exit_return
    }

    fn frame_sizes_read(&self) -> bool {
        self.frames.is_some()
    }

    fn frame_bytes(&self, ret: u64) -> Option<u64> {
        use crate::frames::Size;
        let f = self.frames.as_ref()?.of_return_address(ret)?;
        match &f.size {
            Size::Known(p) if p.frame_pointer => f.bytes(),
            _ => None,
        }
    }

    fn functions(&self, addr: u64) -> Vec<String> {
        let mut names: Vec<String> = self.frames(addr).into_iter().map(|f| f.function).collect();
        // Identical functions folded into one address keep all their names.
        if let Some(&(base, _, _, _)) = self.containing(addr) {
            for (_, _, name, _) in self.table.iter().filter(|s| s.0 == base) {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }
}

/// The `N` little-endian words at the data symbol `name`, as the file holds them.
fn data_words<const N: usize>(file: &object::File, name: &str) -> Option<[u64; N]> {
    let sym = file.symbols().find(|s| s.name() == Ok(name))?;
    let section = file.section_by_index(sym.section_index()?).ok()?;
    let data = section.data().ok()?;
    let at = usize::try_from(sym.address().checked_sub(section.address())?).ok()?;
    let mut words = [0u64; N];
    for (i, w) in words.iter_mut().enumerate() {
        let bytes = data.get(at + 8 * i..at + 8 * i + 8)?;
        *w = u64::from_le_bytes(bytes.try_into().ok()?);
    }
    Some(words)
}

/// Defined function symbols: (address, size, demangled name without hash,
/// the name as the ELF spells it).
/// Untyped labels in code count too: `global_asm!` entry stubs
/// (`trap_common`) are NOTYPE, and without them their addresses would be
/// named after whatever function precedes them.
fn function_symbols(file: &object::File) -> Vec<(u64, u64, String, String)> {
    let in_code = |s: &object::Symbol| {
        s.section_index()
            .and_then(|i| file.section_by_index(i).ok())
            .is_some_and(|sec| sec.kind() == object::SectionKind::Text)
    };
    file.symbols()
        .filter(|s| match s.kind() {
            SymbolKind::Text => s.is_definition(),
            SymbolKind::Unknown | SymbolKind::Label => in_code(s),
            _ => false,
        })
        .filter(|s| s.address() != 0 && !s.name().unwrap_or(".L").starts_with(".L"))
        .filter_map(|s| {
            let name = s.name().ok()?;
            Some((s.address(), s.size(), demangle(name), name.to_string()))
        })
        .collect()
}

fn demangle(name: &str) -> String {
    // `{:#}` leaves out the `::h0123abcd` hash suffix.
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Fill the `.ksyms` section of `elf` with its own function symbols
/// (`abi::ksyms::encode`) and return the patched image. Errors name what is
/// missing; the bytes of everything else are untouched.
pub fn with_ksyms(elf: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let file = object::File::parse(elf).map_err(|e| e.to_string())?;
    let section = file
        .section_by_name(abi::ksyms::SECTION_NAME)
        .ok_or_else(|| format!("no {} section", abi::ksyms::SECTION_NAME))?;
    let (offset, size) = section
        .file_range()
        .ok_or_else(|| format!("{} has no bytes in the file", abi::ksyms::SECTION_NAME))?;
    let capacity = (size as usize).min(abi::ksyms::SECTION_SIZE);
    let mut symbols = function_symbols(&file);
    // In the order `Symbols` keeps them, so both pick the same alias.
    symbols.sort();
    let entries: Vec<abi::ksyms::Symbol> = symbols
        .iter()
        .map(|(a, size, n, link)| (*a, *size, n.as_str(), link.as_str()))
        .collect();
    let (table, count) = abi::ksyms::encode(&entries, capacity);
    let mut out = elf.to_vec();
    let at = offset as usize;
    out[at..at + capacity].fill(0);
    out[at..at + table.len()].copy_from_slice(&table);
    Ok((out, count))
}

/// `guest` → `guest.ksyms` beside it, with the table filled in. Cargo's own
/// output is never modified (that would make cargo relink every time); the
/// copy is rewritten only when the ELF is newer than it.
pub fn embed(guest: &Path) -> Result<PathBuf, String> {
    let patched = guest.with_extension("ksyms");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(dst)) = (mtime(guest), mtime(&patched)) {
        if dst > src {
            return Ok(patched);
        }
    }
    let elf = std::fs::read(guest).map_err(|e| format!("cannot read {}: {e}", guest.display()))?;
    let (bytes, _) = with_ksyms(&elf).map_err(|e| format!("{}: {e}", guest.display()))?;
    // Write then rename, so a concurrent runner never boots half a file.
    let tmp = guest.with_extension(format!("ksyms.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &patched)
        .map_err(|e| format!("cannot rename to {}: {e}", patched.display()))?;
    Ok(patched)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A symbolizer from a fixed table: address → names; no symbol table,
    /// no text, no CFI.
    pub struct Fake(pub HashMap<u64, Vec<&'static str>>);

    impl Symbolize for Fake {
        fn functions(&self, addr: u64) -> Vec<String> {
            self.0
                .get(&addr)
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        }
        fn symbol(&self, _: u64) -> Option<SymbolAt> {
            None
        }
        fn in_text(&self, _: u64) -> bool {
            false
        }
        fn call_frames(&self) -> Option<&dyn CallFrames> {
            None
        }
    }

    /// The runner's own executable stands in for a guest ELF: it has a
    /// symbol table and DWARF, but no `.ksyms`.
    fn me() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn names_and_lines_from_a_real_elf() {
        let data = me();
        let symbols = Symbols::parse(&data).unwrap();
        let target = demangle as fn(&str) -> String as usize as u64;
        // A PIE's symbols are link-time addresses; find ours by name instead.
        let (addr, _, _, _) = symbols
            .table
            .iter()
            .find(|s| s.2.ends_with("symbols::demangle"))
            .cloned()
            .unwrap_or((target, 0, String::new(), String::new()));
        let names = symbols.functions(addr);
        assert!(
            names.iter().any(|n| n.contains("demangle")),
            "{names:?} at {addr:#x}"
        );
        let s = Symbolize::symbol(&symbols, addr).unwrap();
        assert_eq!(s.base, addr);
        assert!(s.size > 0 && s.names.iter().any(|n| n.ends_with("symbols::demangle")));
        // Each name also as `nm` prints it: mangled.
        assert_eq!(s.links.len(), s.names.len());
        assert!(
            s.links
                .iter()
                .all(|l| l.starts_with("_ZN") || l.starts_with("_R")),
            "{:?}",
            s.links
        );
        assert!(symbols.in_text(addr));
        assert!(!symbols.in_text(0));
        assert!(symbols.functions(u64::MAX).is_empty());
    }

    #[test]
    fn ksyms_needs_its_section() {
        let err = with_ksyms(&me()).unwrap_err();
        assert!(err.contains(".ksyms"), "{err}");
        assert!(with_ksyms(b"not an elf").is_err());
    }
}
