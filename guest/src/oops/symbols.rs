//! Naming code addresses from the embedded symbol table (`.ksyms`, filled
//! in by the runner after the link), for the oops and the records.
use super::backtrace::{self, Backtrace};
use abi::guard::{Frame, Sym};
use abi::Hex;

/// An address as the embedded symbol table names it: `None` if the table
/// is missing or no symbol contains the address.
pub fn sym(addr: u64) -> Option<Sym<'static>> {
    let table = crate::mm::layout::symbols()?;
    let found = table.lookup(addr)?;
    // A deliberate defect (`runner --defect`): the lookup lands one entry
    // too low, as an off-by-one in its binary search would, and names the
    // function before the right one.
    #[cfg(defect = "ksyms-off-by-one")]
    let found = {
        // The entry before: the symbol below this one's start, past any
        // alignment padding between the two.
        let base = addr - found.offset;
        let (at, prev) = (1..64u64).find_map(|back| {
            let at = base.checked_sub(back)?;
            Some((at, table.lookup(at)?))
        })?;
        abi::ksyms::Found {
            offset: addr - (at - prev.offset),
            ..prev
        }
    };
    Some(Sym {
        name: found.name,
        link: found.link,
        off: Hex(found.offset),
        size: Hex(found.size),
    })
}

/// A return address as Linux's `%pB` names it: by the call before it
/// (`addr - 1`: a call that ends a function returns past its end), with
/// the offset of `addr` itself.
pub fn return_sym(addr: u64) -> Option<Sym<'static>> {
    let s = sym(addr.checked_sub(1)?)?;
    Some(Sym {
        off: Hex(s.off.get() + 1),
        ..s
    })
}

/// A frame's name: an interrupted instruction by itself, a return address
/// by its call.
pub fn frame_sym(f: &backtrace::Frame) -> Option<Sym<'static>> {
    match f.trap {
        Some(_) => sym(f.addr),
        None => return_sym(f.addr),
    }
}

/// A backtrace as the records carry it: every frame with its name, runs
/// of one return address folded (a trap frame never is).
pub fn frames(bt: &Backtrace) -> heapless::Vec<Frame<'static>, { abi::guard::MAX_FRAMES }> {
    let mut out: heapless::Vec<Frame<'static>, { abi::guard::MAX_FRAMES }> = heapless::Vec::new();
    for f in bt.frames() {
        if let Some(last) = out.last_mut() {
            if f.trap.is_none()
                && last.trap.is_none()
                && last.addr.get() == f.addr
                && last.size == f.size
            {
                last.repeat += 1;
                continue;
            }
        }
        // Cannot fail: a walk keeps at most `MAX_FRAMES`.
        let _ = out.push(Frame {
            addr: Hex(f.addr),
            sym: frame_sym(f),
            trap: f.trap,
            repeat: 1,
            size: f.size,
        });
    }
    out
}
