//! Where the stack went, as a picture: the frames of a guard hit's Call
//! Trace laid out on the stack area by their sizes, for `make demo`'s ASCII
//! map and its SVG (one per scenario, under `<target>/demo/`).
//!
//! Everything comes from the `GUARD-HIT` record: the interrupted rbp is
//! the innermost frame record, and each frame's `size` (the chain's saved
//! rbp minus the record below it) puts the next record above it. So the
//! bands stop where the sizes do: at a trap frame the walk crossed, or at
//! the outermost frame. Below the innermost record lies what the faulting
//! function had pushed when it hit the guard.

use abi::guard::{GuardHit, StackAlloc};
use std::fmt::Write as _;

/// A run of the stack one function's frames occupy, `lo..hi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    pub lo: u64,
    pub hi: u64,
    pub name: String,
    /// Frames folded into the band (a recursion's run) and each one's bytes.
    pub frames: u32,
    pub each: u64,
    /// The faulting function's partial frame, below the innermost record.
    pub faulting: bool,
}

/// The bands of `hit`'s trace, lowest first.
pub fn bands(hit: &GuardHit) -> Vec<Band> {
    let name = |sym: Option<abi::guard::Sym>| sym.map_or("?".to_string(), |s| s.name.to_string());
    let rbp = hit.regs.rbp.get();
    let rsp = hit.rsp.get();
    let mut out = Vec::new();
    // From the interrupted rsp up to the innermost record's end: the frame
    // the faulting function was building (its return address and rbp
    // included, as a static frame counts them).
    let mut at = rbp.saturating_add(16);
    if rsp < at && at - rsp <= hit.stack_hi.get().saturating_sub(hit.stack_lo.get()) + 4096 {
        out.push(Band {
            lo: rsp,
            hi: at,
            name: name(hit.rip_sym),
            frames: 1,
            each: at - rsp,
            faulting: true,
        });
    }
    for f in hit.backtrace.iter() {
        let Some(size) = f.size.filter(|&s| s > 0) else {
            break;
        };
        let total = u64::from(size) * u64::from(f.repeat);
        out.push(Band {
            lo: at,
            hi: at + total,
            name: name(f.sym),
            frames: f.repeat,
            each: u64::from(size),
            faulting: false,
        });
        at += total;
    }
    out
}

impl Band {
    /// `stack_recurse × 53 (304 B each)`, `start_current (80 B)`.
    pub fn label(&self) -> String {
        let short = short_name(&self.name);
        if self.faulting {
            format!("{short} (faulting, {} B)", self.each)
        } else if self.frames > 1 {
            format!("{short} × {} ({} B each)", self.frames, self.each)
        } else {
            format!("{short} ({} B)", self.each)
        }
    }
}

/// A function's last path segment or two: `stack::stack_recurse`.
fn short_name(name: &str) -> String {
    let parts: Vec<&str> = name.split("::").collect();
    let n = parts.len();
    if n <= 2 {
        name.to_string()
    } else {
        parts[n - 2..].join("::")
    }
}

/// The stack area of `alloc`, its guard pages and `hit`'s bands to scale,
/// high addresses on top, the fault address marked: an SVG document.
pub fn svg(alloc: &StackAlloc, hit: &GuardHit, bands: &[Band]) -> String {
    const PAGE: u64 = 4096;
    const W: f64 = 1100.0;
    const BAR_X: f64 = 300.0;
    const BAR_W: f64 = 300.0;
    const TOP: f64 = 50.0;
    const H: f64 = 640.0;
    let (lo, hi) = (alloc.lo.get(), alloc.hi.get());
    let bottom = lo.saturating_sub(alloc.guard_below * PAGE);
    let top = hi + alloc.guard_above * PAGE;
    let fault = hit.fault_addr.get();
    let (bottom, top) = (bottom.min(fault), top.max(fault + 1));
    let span = (top - bottom).max(1) as f64;
    let y = |addr: u64| TOP + (top.saturating_sub(addr)) as f64 / span * H;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="monospace" font-size="12">"##,
        H + TOP + 40.0
    );
    let _ = writeln!(
        s,
        r##"<defs><pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="8" height="8" fill="#eee"/><line x1="0" y1="0" x2="0" y2="8" stroke="#999" stroke-width="3"/></pattern></defs>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="22" font-size="15" font-weight="bold">{}: {} stack of task {} '{}', CPU {} ({} KiB)</text>"##,
        esc(hit.scenario),
        alloc.stack_kind.linux_name(),
        alloc.task_id,
        esc(alloc.task_name),
        alloc.cpu,
        (hi - lo) / 1024
    );
    let rect = |s: &mut String, a: u64, b: u64, fill: &str, stroke: &str| {
        let _ = writeln!(
            s,
            r##"<rect x="{BAR_X}" y="{:.1}" width="{BAR_W}" height="{:.2}" fill="{fill}" stroke="{stroke}" stroke-width="0.5"/>"##,
            y(b),
            (y(a) - y(b)).max(0.3)
        );
    };
    let addr_label = |s: &mut String, addr: u64, text: &str| {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{addr:016x}</text><text x="{}" y="{:.1}" fill="#555">{}</text>"##,
            BAR_X - 6.0,
            y(addr) + 4.0,
            BAR_X + BAR_W + 6.0 + 300.0,
            y(addr) + 4.0,
            esc(text)
        );
    };
    if alloc.guard_above > 0 {
        rect(
            &mut s,
            hi,
            hi + alloc.guard_above * PAGE,
            "url(#hatch)",
            "#666",
        );
        centered(
            &mut s,
            BAR_X + BAR_W / 2.0,
            (y(hi) + y(hi + alloc.guard_above * PAGE)) / 2.0,
            "guard page (unmapped)",
        );
    }
    rect(&mut s, lo, hi, "#f7f7ff", "#336");
    if alloc.guard_below > 0 {
        rect(
            &mut s,
            bottom.max(lo.saturating_sub(alloc.guard_below * PAGE)),
            lo,
            "url(#hatch)",
            "#666",
        );
        centered(
            &mut s,
            BAR_X + BAR_W / 2.0,
            (y(lo) + y(lo.saturating_sub(alloc.guard_below * PAGE))) / 2.0,
            "guard page (unmapped)",
        );
    }
    addr_label(&mut s, hi, "stack top (hi)");
    addr_label(&mut s, lo, "stack bottom (lo)");
    // The bands, alternating shades; a label inside when the band is tall
    // enough, else beside it on a leader, each such label at least a line
    // below the one above it (a task's entry frames are a few pixels).
    let mut next_free = f64::MIN;
    for (i, b) in bands.iter().enumerate().rev() {
        let fill = if b.faulting {
            "#f4b183"
        } else if i % 2 == 0 {
            "#9dc3e6"
        } else {
            "#c5e0b4"
        };
        rect(&mut s, b.lo, b.hi, fill, "#345");
        let h = y(b.lo) - y(b.hi);
        let mid = (y(b.lo) + y(b.hi)) / 2.0;
        if h >= 11.0 {
            centered(&mut s, BAR_X + BAR_W / 2.0, mid + 4.0, &b.label());
        } else {
            let ly = mid.max(next_free);
            next_free = ly + 14.0;
            let _ = writeln!(
                s,
                r##"<polyline points="{},{mid:.1} {},{mid:.1} {},{ly:.1}" fill="none" stroke="#888"/><text x="{}" y="{:.1}">{}</text>"##,
                BAR_X + BAR_W,
                BAR_X + BAR_W + 10.0,
                BAR_X + BAR_W + 22.0,
                BAR_X + BAR_W + 26.0,
                ly + 4.0,
                esc(&b.label())
            );
        }
    }
    // The fault.
    let fy = y(fault);
    let _ = writeln!(
        s,
        r##"<line x1="{}" y1="{fy:.1}" x2="{}" y2="{fy:.1}" stroke="#c00" stroke-width="2"/><text x="{}" y="{:.1}" text-anchor="end" fill="#c00">{fault:016x}</text><text x="{}" y="{:.1}" text-anchor="end" fill="#c00" font-weight="bold">fault: {:?} by {} B</text>"##,
        BAR_X - 4.0,
        BAR_X + BAR_W + 4.0,
        BAR_X - 6.0,
        fy + 16.0,
        BAR_X - 6.0,
        fy + 30.0,
        hit.kind,
        hit.bytes
    );
    let used: u64 = bands.iter().map(|b| b.hi - b.lo).sum();
    let _ = writeln!(
        s,
        r##"<text x="10" y="{:.1}" fill="#333">{} frames on the trace, {} bytes with a known size; scale: {:.1} bytes per pixel</text>"##,
        H + TOP + 28.0,
        bands.iter().map(|b| b.frames).sum::<u32>(),
        used,
        span / H
    );
    s.push_str("</svg>\n");
    s
}

fn centered(s: &mut String, x: f64, y: f64, text: &str) {
    let _ = writeln!(
        s,
        r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{}</text>"##,
        esc(text)
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::lines::{parse, tests as lines};

    #[test]
    fn bands_stack_up_from_the_innermost_record_by_their_sizes() {
        let hit_line = lines::hit().replacen("\"repeat\":53}", "\"repeat\":53,\"size\":304}", 1);
        assert_ne!(hit_line, lines::hit(), "the fixture's recursion run");
        let serial = format!("{}\n{hit_line}\n", lines::alloc());
        let events = parse(&serial);
        let hit = events.hits_of("stack.recursion").next().unwrap();
        let b = bands(hit);
        let rbp = hit.regs.rbp.get();
        assert!(b[0].faulting, "{b:?}");
        assert_eq!((b[0].lo, b[0].hi), (hit.rsp.get(), rbp + 16));
        assert_eq!((b[1].lo, b[1].hi), (rbp + 16, rbp + 16 + 53 * 304));
        assert_eq!(b[1].label(), "stack::stack_recurse × 53 (304 B each)");
        let alloc = events.allocs_of("stack.recursion").next().unwrap();
        let svg = svg(alloc, hit, &b);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("stack::stack_recurse × 53 (304 B each)"),
            "{svg}"
        );
        assert!(svg.contains("fault: Overflow by"), "{svg}");
    }
}
