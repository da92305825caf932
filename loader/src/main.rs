//! The testbed's direct-boot loader: QEMU starts it through PVH, and it boots
//! the guest ELF (the PVH module / initrd) through the part of the Limine
//! protocol (base revision 2) the guest uses.
#![no_std]
#![no_main]

/// The end of both hand-offs, the BSP's (`handoff`) and each AP's (`mp`):
/// PROTOCOL.md's entry state has every general register zero but those it
/// passes something in (an AP's RDI, its `limine_mp_info`), then `ret`
/// jumps to the entry point pushed above a zero return address.
macro_rules! zero_gprs_but_rdi_and_ret {
    () => {
        "xor %eax, %eax
    xor %ebx, %ebx
    xor %ecx, %ecx
    xor %edx, %edx
    xor %esi, %esi
    xor %ebp, %ebp
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    ret"
    };
}

mod acpi;
mod cell;
mod cpu;
mod elf;
mod fwcfg;
mod handoff;
mod memmap;
mod mp;
mod paging;
mod protocol;
mod pvh;
mod requests;
mod responses;
mod serial;
mod time;

use memmap::{align_up, Map, PAGE};
use protocol::memmap_type::*;

/// Where APs start in real mode (SIPI vector 0x08); any free page below 1 MiB works.
const PREFERRED_TRAMPOLINE: u64 = 0x8000;
const DEFAULT_STACK_SIZE: u64 = 64 * 1024;

unsafe extern "C" {
    static __loader_start: u8;
    static __loader_end: u8;
}

#[unsafe(no_mangle)]
extern "C" fn loader_main(start_info: u32) -> ! {
    serial::init();
    let cmdline = responses::cmdline_buffer();
    let boot = pvh::read(start_info, cmdline);

    let mut e820 = boot.e820;
    let mut e820_len = boot.e820_len;
    if e820_len == 0 {
        e820_len = fwcfg::e820(&mut e820);
    }
    if e820_len == 0 {
        fail!("no memory map: neither hvm_start_info nor fw_cfg etc/e820 has one");
    }
    let mut map = Map::from_e820(&e820[..e820_len]);
    reserve_legacy_area(&mut map);

    let (image_start, image_end) = (
        core::ptr::addr_of!(__loader_start) as u64,
        core::ptr::addr_of!(__loader_end) as u64,
    );
    map.carve(
        image_start,
        align_up(image_end, PAGE),
        Some(BOOTLOADER_RECLAIMABLE),
    );

    let Some((module, module_size)) = boot.module.or_else(fwcfg::initrd) else {
        fail!("no guest: pass its ELF with -initrd");
    };
    // Reclaimable, as real Limine reports the kernel file it read (only the
    // loaded image is Kernel/Modules).
    map.carve(
        module & !(PAGE - 1),
        align_up(module + module_size, PAGE),
        Some(BOOTLOADER_RECLAIMABLE),
    );
    // SAFETY: QEMU placed the module there (below 4 GiB, identity-mapped) and
    // its range is now reserved in the map, so nothing overwrites it.
    let file =
        unsafe { core::slice::from_raw_parts(module as usize as *const u8, module_size as usize) };
    let image = elf::load(file, &mut map);
    let reqs = requests::scan(&image);

    let stack_size = reqs
        .stack_size
        // SAFETY: the ID matched the stack size request.
        .map(|r| unsafe { requests::request::<protocol::StackSizeRequest>(r) }.stack_size)
        .filter(|&s| s > 0)
        .map_or(DEFAULT_STACK_SIZE, |s| align_up(s, 16));
    let stack_bytes = align_up(stack_size, PAGE);
    let bsp_stack_top = map.alloc(stack_bytes, PAGE, BOOTLOADER_RECLAIMABLE) + stack_bytes;

    let rsdp = acpi::find_rsdp(boot.rsdp);
    let madt = rsdp.and_then(acpi::madt);
    let bsp_lapic_id = mp::bsp_lapic_id();
    let mp_plan = match (&madt, reqs.mp) {
        (Some(m), Some(_)) => Some(mp::plan(m, bsp_lapic_id, stack_size, &mut map)),
        _ => None,
    };
    let trampoline = mp_plan.as_ref().map(|_| reserve_trampoline(&mut map));

    let nx = pvh::nx();
    let firmware_view = map.clone();
    let tables = paging::PageTables::new(&mut map, nx);
    tables.map_kernel(&mut map, &image);
    tables.map_hhdm(&mut map, firmware_view.regions());
    tables.add_identity();
    handoff::init_gdtr();
    // SAFETY: the new tables identity-map the first 4 GiB exactly as the
    // boot tables did (same 2 MiB pages), so code, stack and data stay put.
    unsafe { cpu::write_cr3(tables.pml4) };

    let mp = match (&madt, &mp_plan, trampoline) {
        (Some(m), Some(plan), Some(page)) => {
            let clock = time::Clock::calibrate();
            let ctx = mp::Context {
                trampoline: page,
                cr3: tables.pml4,
                nx,
                // SAFETY: written once by `init_gdtr` above.
                gdtr_limit: unsafe { (*handoff::GDTR.get()).limit },
                // SAFETY: as above.
                gdt_hhdm: unsafe { (*handoff::GDTR.get()).base },
            };
            let (cpus, count) = mp::start(m, plan, &ctx, &clock);
            Some(responses::Mp {
                bsp_lapic_id,
                cpu_count: count as u64,
                cpus,
            })
        }
        _ => None,
    };

    let entry = responses::fill(&responses::Inputs {
        reqs: &reqs,
        image: &image,
        module,
        module_size,
        rsdp,
        mp,
        map: &map,
    });
    let ioapics = madt
        .as_ref()
        .map_or(&[][..], |m| &m.ioapics[..m.ioapic_count]);
    handoff::enter(
        entry,
        protocol::HHDM_OFFSET + bsp_stack_top,
        tables.identity_slot(),
        ioapics,
    )
}

/// The VGA hole and BIOS area, and the EBDA below them, are never RAM we may
/// hand out, whatever a sparse map (fw_cfg's) claims.
fn reserve_legacy_area(map: &mut Map) {
    // SAFETY: the BDA word at 0x40e is identity-mapped low memory.
    let ebda = u64::from(unsafe { (0x40e as *const u16).read_unaligned() }) << 4;
    let start = if (0x8_0000..0xa_0000).contains(&ebda) {
        ebda
    } else {
        0xa_0000
    };
    if map.overlaps_usable(start, 0x10_0000) {
        map.carve(start, 0x10_0000, Some(RESERVED));
    }
}

fn reserve_trampoline(map: &mut Map) -> u64 {
    let page = core::iter::once(PREFERRED_TRAMPOLINE)
        .chain((PAGE..0x9_f000).step_by(PAGE as usize))
        .find(|&p| map.is_usable(p, p + PAGE))
        .unwrap_or_else(|| fail!("no free page below 1 MiB for the AP trampoline"));
    map.carve(page, page + PAGE, Some(BOOTLOADER_RECLAIMABLE));
    page
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fail!("panic: {info}")
}
