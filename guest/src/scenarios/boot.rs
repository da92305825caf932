//! `boot.smoke`: did the boot protocol give us the world it promises?
//!
//! Every check here is a promise from Limine's PROTOCOL.md (base revision 2)
//! that the rest of the kernel relies on, checked against something the
//! bootloader cannot fake: our own symbols, the live page tables, the ACPI
//! checksums, and the CPUs themselves.
use super::Checks;
use crate::arch::x86_64::{acpi, cpu, time};
use crate::boot::{self, BootInfo};
use crate::mm::{frames, hhdm, layout, paging};
use kcore::memmap;
use limine::memory_map::EntryType;
use x86_64::VirtAddr;

pub fn smoke(boot: &BootInfo, c: &mut Checks) {
    match boot.bootloader {
        Some((name, version)) => c.info(format_args!("bootloader: {name} {version}")),
        None => c.info(format_args!("bootloader: no bootloader-info response")),
    }
    c.info(format_args!(
        "cmdline ({}): {:?}",
        boot.cmdline_source, boot.cmdline
    ));
    c.check(
        boot.base_revision_supported,
        format_args!(
            "base revision 2 accepted (loaded revision {:?})",
            boot.loaded_revision
        ),
    );
    memory_map(boot, c);
    direct_map(boot, c);
    executable(boot, c);
    rsdp_and_cpus(boot, c);
    boot_stack(boot, c);
    clock(c);
}

/// Every deadline and timeout in the guest reads `time::now_ns`: a clock
/// that stands still (as a 64-bit overflow once made it under KVM, whose
/// TSC starts at the host's) turns each of them into a hang, and one
/// calibrated in a window the host paused runs slow (a loaded CI host once
/// made it read 348 µs for 1000). So time one PIT window with it. Only a
/// lower bound: the host may pause the vCPU inside this window too.
fn clock(c: &mut Checks) {
    const WINDOW_US: u64 = 500;
    let (windows, agreed, boot_window_us) = time::calibration_windows();
    let rate = time::tsc_per_us_x1000();
    let (whole, frac) = (rate / 1000, rate % 1000);
    if boot_window_us > 0 {
        c.info(format_args!(
            "TSC at {whole}.{frac:03} cycles/µs over the boot's first {boot_window_us} µs \
             (one PIT window agreed)"
        ));
    } else {
        c.info(format_args!(
            "TSC at {whole}.{frac:03} cycles/µs from {windows} PIT windows ({})",
            if agreed {
                "enough agreed"
            } else {
                "too few agreed: their median"
            }
        ));
    }
    let t0 = time::now_ns();
    time::pit_wait_us(WINDOW_US);
    let took_us = time::now_ns().saturating_sub(t0) / 1000;
    c.check(
        took_us >= WINDOW_US * 9 / 10,
        format_args!("the TSC clock keeps time: a {WINDOW_US} µs PIT wait took {took_us} µs"),
    );
}

fn memory_map(boot: &BootInfo, c: &mut Checks) {
    let Some(map) = boot.memory_map else {
        c.check(false, format_args!("memory map response present"));
        return;
    };
    if !c.check(
        !map.is_empty(),
        format_args!("memory map has {} entries", map.len()),
    ) {
        return;
    }
    let kind = crate::boot::memmap_kind;
    let entries = || {
        map.iter()
            .map(|e| memmap::Entry::new(e.base, e.length, kind(e.entry_type)))
    };
    for e in entries() {
        c.info(format_args!(
            "memmap {:#014x}..{:#014x} {}",
            e.base,
            e.end(),
            memmap::kind::name(e.kind)
        ));
    }
    // PROTOCOL.md's promises about the map, checked by kcore::memmap.
    let r = memmap::check(entries());
    c.check(r.sorted, format_args!("entries sorted by base"));
    c.check(
        r.misaligned_strict.is_empty(),
        format_args!(
            "usable/reclaimable entries page aligned ({} not)",
            r.misaligned_strict.len()
        ),
    );
    c.check(
        r.overlaps_with_strict.is_empty(),
        format_args!(
            "usable/reclaimable entries overlap nothing ({} overlaps)",
            r.overlaps_with_strict.len()
        ),
    );
    c.check(
        r.usable_below_4k.is_empty(),
        format_args!("nothing below 0x1000 is usable"),
    );
    c.check(
        r.usable_bytes >= 16 << 20,
        format_args!("usable memory present: {} KiB", r.usable_bytes / 1024),
    );
}

fn direct_map(boot: &BootInfo, c: &mut Checks) {
    let Some(offset) = boot.hhdm_offset else {
        c.check(false, format_args!("HHDM response present"));
        return;
    };
    c.info(format_args!("hhdm offset {offset:#x}"));
    // A frame from the allocator: usable RAM nobody else owns.
    match frames::alloc() {
        Some(f) => {
            let phys = f.start_address();
            c.check(
                hhdm::probe_rw(phys),
                format_args!("HHDM read/write reaches RAM at phys {:#x}", phys.as_u64()),
            );
            frames::free(f);
        }
        None => {
            c.check(false, format_args!("a free frame to probe the HHDM with"));
        }
    }
}

fn executable(boot: &BootInfo, c: &mut Checks) {
    let image = layout::image();
    let Some((phys_base, virt_base)) = boot.executable_address else {
        c.check(false, format_args!("executable address response present"));
        return;
    };
    c.info(format_args!(
        "executable phys {phys_base:#x} virt {virt_base:#x}"
    ));
    c.check(
        virt_base == image.start.as_u64(),
        format_args!(
            "virtual base is our link address {:#x}",
            image.start.as_u64()
        ),
    );
    // Each part of the image must map to phys_base + its offset, with the
    // permissions its program header asked for.
    let parts: [(&str, VirtAddr, bool, bool); 3] = [
        ("text", image.text, false, true),
        ("rodata", image.rodata, false, false),
        ("data", image.data, true, false),
    ];
    for (name, addr, writable, executable) in parts {
        let expect = phys_base + (addr - image.start);
        match paging::translate(addr) {
            Some(m) => {
                c.check(
                    m.phys.as_u64() == expect,
                    format_args!(
                        "{name} at {:#x} maps to phys {:#x} (expected {expect:#x})",
                        addr.as_u64(),
                        m.phys.as_u64()
                    ),
                );
                c.check(
                    m.writable == writable && m.executable == executable,
                    format_args!(
                        "{name} permissions: {}{}{} (expected {}{}{})",
                        "r",
                        if m.writable { "w" } else { "-" },
                        if m.executable { "x" } else { "-" },
                        "r",
                        if writable { "w" } else { "-" },
                        if executable { "x" } else { "-" },
                    ),
                );
            }
            None => {
                c.check(
                    false,
                    format_args!("{name} at {:#x} is mapped", addr.as_u64()),
                );
            }
        }
    }
    let kernel_entry = boot.memory_map.and_then(|m| {
        m.iter().find(|e| {
            e.entry_type == EntryType::EXECUTABLE_AND_MODULES
                && e.base <= phys_base
                && phys_base < e.base + e.length
        })
    });
    c.check(
        kernel_entry.is_some(),
        format_args!("the image lies in an executable-and-modules entry"),
    );
}

fn rsdp_and_cpus(boot: &BootInfo, c: &mut Checks) {
    let madt = match boot.rsdp_address.and_then(hhdm::to_phys) {
        None => {
            c.check(false, format_args!("RSDP response present"));
            None
        }
        Some(rsdp) => {
            c.info(format_args!("rsdp at phys {:#x}", rsdp.as_u64()));
            match acpi::madt_summary(rsdp) {
                Ok(m) => {
                    c.check(
                        true,
                        format_args!("RSDP checksum valid, MADT found ({} IOAPICs)", m.io_apics),
                    );
                    Some(m)
                }
                Err(e) => {
                    c.check(false, format_args!("RSDP and MADT valid: {e:?}"));
                    None
                }
            }
        }
    };

    let count = boot.cpu_count();
    let expected = abi::cmdline::value(boot.cmdline, abi::cmdline::EXPECT_CPUS)
        .and_then(|v| v.parse::<usize>().ok());
    match expected {
        Some(n) => c.check(
            count == n,
            format_args!("{count} CPUs, as the runner asked for ({n})"),
        ),
        None => c.check(
            true,
            format_args!(
                "{count} CPUs (no {} on the cmdline)",
                abi::cmdline::EXPECT_CPUS
            ),
        ),
    };
    if let Some(m) = madt {
        c.check(
            m.enabled_cpus == count,
            format_args!("MADT lists {} enabled CPUs", m.enabled_cpus),
        );
    }

    let Some(mp) = boot.mp else {
        c.check(
            count == 1 && expected.unwrap_or(1) == 1,
            format_args!("no MP response: only valid on one CPU"),
        );
        return;
    };
    let bsp = mp.bsp_lapic_id();
    c.check(
        bsp == cpu::apic_id(),
        format_args!("BSP LAPIC id {bsp} is the CPU running us"),
    );
    let ids = mp.cpus().iter().map(|c| c.lapic_id);
    c.info(format_args!("lapic ids: {:?}", Ids(ids)));
    let arrived = boot::mp::online_aps();
    c.check(
        arrived == count - 1,
        format_args!(
            "{arrived} of {} APs reached goto_address and came online",
            count - 1
        ),
    );
    for ap in boot::mp::reports(mp) {
        c.check(
            ap.reported_apic_id == Some(ap.lapic_id),
            format_args!(
                "AP lapic {} reported in as {:?}",
                ap.lapic_id, ap.reported_apic_id
            ),
        );
    }
}

/// Formats an iterator of ids as a list without allocating.
struct Ids<I>(I);

impl<I: Iterator<Item = u32> + Clone> core::fmt::Debug for Ids<I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.0.clone()).finish()
    }
}

fn boot_stack(boot: &BootInfo, c: &mut Checks) {
    c.check(
        boot.stack_size_granted,
        format_args!(
            "stack size request ({} KiB) answered",
            boot::BOOT_STACK_SIZE / 1024
        ),
    );
    let rsp = cpu::stack_pointer();
    let Some(phys) = paging::translate(VirtAddr::new(rsp)).map(|m| m.phys.as_u64()) else {
        c.check(false, format_args!("boot stack {rsp:#x} is mapped"));
        return;
    };
    let in_reclaimable = boot.memory_map.is_some_and(|m| {
        m.iter().any(|e| {
            e.entry_type == EntryType::BOOTLOADER_RECLAIMABLE
                && e.base <= phys
                && phys < e.base + e.length
        })
    });
    c.check(
        in_reclaimable,
        format_args!(
            "boot stack (rsp {rsp:#x}, phys {phys:#x}) is in bootloader-reclaimable memory"
        ),
    );
}
