//! Giving the `acpi` crate access to firmware tables through the HHDM.
//!
//! The tables sit in ACPI-reclaimable/NVS memory or below 4 GiB, all of which
//! the boot loader maps in the HHDM, so "mapping" is adding the offset and
//! unmapping is nothing.
use crate::mm::hhdm;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use core::ptr::NonNull;
use x86_64::PhysAddr;

#[derive(Clone, Copy, Debug)]
pub struct HhdmAcpi;

impl AcpiHandler for HhdmAcpi {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = hhdm::phys_to_virt(PhysAddr::new(physical_address as u64))
            .expect("ACPI access before the HHDM offset is known");
        let ptr = NonNull::new(virt.as_mut_ptr::<T>()).expect("HHDM addresses are never null");
        // SAFETY: the HHDM maps every ACPI region for as long as the kernel
        // runs (PROTOCOL.md, base revision 2), so the mapping never dangles;
        // the caller vouched that a `T` lives there.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// What the MADT says about the processors.
#[derive(Clone, Copy, Debug, Default)]
pub struct MadtSummary {
    /// Local APIC entries with the "enabled" flag set.
    pub enabled_cpus: usize,
    pub io_apics: usize,
}

/// Parse the ACPI tables from the RSDP at `rsdp_phys`: the acpi crate
/// validates the RSDP (signature and checksums) and each table it maps.
pub fn madt_summary(rsdp_phys: PhysAddr) -> acpi::AcpiResult<MadtSummary> {
    // SAFETY: the boot loader's RSDP response points at the RSDP, and the
    // acpi crate checks its signature and checksum before following it.
    let tables = unsafe { AcpiTables::from_rsdp(HhdmAcpi, rsdp_phys.as_u64() as usize)? };
    let madt = tables.find_table::<Madt>()?;
    let mut summary = MadtSummary::default();
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(lapic) if { lapic.flags } & 1 != 0 => summary.enabled_cpus += 1,
            MadtEntry::LocalX2Apic(x2) if { x2.flags } & 1 != 0 => summary.enabled_cpus += 1,
            MadtEntry::IoApic(_) => summary.io_apics += 1,
            _ => {}
        }
    }
    Ok(summary)
}
