//! What QEMU boots: the guest without the sections only the host reads.
//!
//! The guest ELF carries ~9 MB of DWARF that the runner needs (file:line,
//! its own unwinder, `--gdb`) and the guest never touches; QEMU would read
//! all of it on every boot. So each boot gets `guest.boot`, the same ELF
//! with its `.debug_*` sections dropped, and everything else (segments,
//! symbols, `.ksyms`) as it was; the runner keeps reading the full one.

use object::build::elf::Builder;
use std::path::{Path, PathBuf};

/// `elf` without its debug sections; its loadable bytes are unchanged
/// (checked here, since a boot would otherwise run something else).
pub fn without_debug(elf: &[u8]) -> Result<Vec<u8>, String> {
    let out = drop_debug(elf)?;
    let (before, after) = (loaded(elf)?, loaded(&out)?);
    if before != after {
        return Err("dropping the debug sections changed what is loaded".into());
    }
    Ok(out)
}

/// The ELF rewritten without its `.debug*` sections. (A dynamic ELF's
/// tables are rebuilt too, so for one of those the loaded bytes differ;
/// the guest is static.)
fn drop_debug(elf: &[u8]) -> Result<Vec<u8>, String> {
    let mut builder = Builder::read(elf).map_err(|e| e.to_string())?;
    for section in builder.sections.iter_mut() {
        if section.name.starts_with(b".debug") {
            section.delete = true;
        }
    }
    let mut out = Vec::new();
    builder.write(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Each loadable segment's address, size in memory, and file bytes, less
/// the ELF and program headers where a segment holds them (the writer
/// renews those: the section table moved).
fn loaded(elf: &[u8]) -> Result<Vec<(u64, u64, Vec<u8>)>, String> {
    use object::read::elf::FileHeader;
    use object::{Object, ObjectSegment};
    let header =
        object::elf::FileHeader64::<object::Endianness>::parse(elf).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let headers_end = header.e_phoff(endian)
        + u64::from(header.e_phnum(endian)) * u64::from(header.e_phentsize(endian));
    let file = object::File::parse(elf).map_err(|e| e.to_string())?;
    file.segments()
        .map(|s| {
            let data = s.data().map_err(|e| e.to_string())?;
            let (offset, _) = s.file_range();
            let skip = headers_end.saturating_sub(offset).min(data.len() as u64) as usize;
            Ok((s.address(), s.size(), data[skip..].to_vec()))
        })
        .collect()
}

/// `guest` → `guest.boot` beside it, rewritten only when `guest` is newer
/// (write, then rename: a concurrent runner never boots half a file).
pub fn write_beside(guest: &Path) -> Result<PathBuf, String> {
    let image = path_of(guest);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(dst)) = (mtime(guest), mtime(&image)) {
        if dst > src {
            return Ok(image);
        }
    }
    let elf = std::fs::read(guest).map_err(|e| format!("cannot read {}: {e}", guest.display()))?;
    let bytes = without_debug(&elf).map_err(|e| format!("{}: {e}", guest.display()))?;
    let tmp = guest.with_extension(format!("boot.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &image)
        .map_err(|e| format!("cannot rename to {}: {e}", image.display()))?;
    Ok(image)
}

/// Where the boot image of `guest` lives.
pub fn path_of(guest: &Path) -> PathBuf {
    guest.with_extension("boot")
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, ObjectSegment};

    fn has_debug(data: &[u8]) -> bool {
        object::File::parse(data)
            .unwrap()
            .sections()
            .any(|s| s.name().is_ok_and(|n| n.starts_with(".debug")))
    }

    /// The runner's own ELF stands in for the guest: it has DWARF too.
    /// (`tests/outcomes.rs` holds a real run's guest and boot image
    /// against each other.)
    #[test]
    fn debug_sections_go_and_the_code_stays() {
        let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_debug(&elf), "the test binary has no DWARF to drop");
        let stripped = drop_debug(&elf).unwrap();
        assert!(!has_debug(&stripped));
        assert!(stripped.len() < elf.len());
        let text = |data: &[u8]| {
            let file = object::File::parse(data).unwrap();
            let section = file.section_by_name(".text").unwrap();
            (section.address(), section.data().unwrap().to_vec())
        };
        assert_eq!(text(&elf), text(&stripped));
    }

    #[test]
    fn a_changed_loaded_byte_is_seen() {
        let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let file = object::File::parse(&*elf).unwrap();
        let (offset, size) = file.segments().last().unwrap().file_range();
        assert!(size > 0);
        let mut changed = elf.clone();
        changed[(offset + size - 1) as usize] ^= 0xff;
        assert_ne!(loaded(&elf).unwrap(), loaded(&changed).unwrap());
    }
}
