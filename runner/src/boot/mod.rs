//! Starting a guest: the boot media (`media`, with real Limine's ISO in
//! `limine`), the QEMU command line (`qemu`), running it under a deadline
//! with no orphan left behind (`process`), keeping its serial output
//! bounded (`capture`) and cleaning it (`console`).

pub mod capture;
pub mod console;
pub mod image;
pub mod limine;
pub mod media;
pub mod pool;
pub mod process;
pub mod qemu;
