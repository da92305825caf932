//! Firmware consoles on the serial port. OVMF (and Limine drawing through
//! it) treat COM1 as a terminal: they clear the screen and move the cursor
//! with escape sequences instead of ending lines, so the guest's first line
//! can arrive glued to `ESC[02;01H`. Before the report is read, cursor moves
//! and screen clears become line breaks and every other escape sequence
//! goes; the serial log on disk keeps the raw bytes.

const ESC: u8 = 0x1b;

pub fn plain(serial: &[u8]) -> Vec<u8> {
    if !serial.contains(&ESC) {
        return serial.to_vec();
    }
    let mut out = Vec::with_capacity(serial.len());
    let mut i = 0;
    while i < serial.len() {
        if serial[i] != ESC {
            out.push(serial[i]);
            i += 1;
            continue;
        }
        match serial.get(i + 1) {
            // CSI: parameters and intermediates, then one final byte.
            Some(b'[') => {
                let mut j = i + 2;
                while j < serial.len() && !(0x40..=0x7e).contains(&serial[j]) {
                    j += 1;
                }
                let fin = serial.get(j).copied();
                if matches!(fin, Some(b'H' | b'f' | b'J')) && out.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
                i = j + 1;
            }
            // A two-byte escape (ESC c, ESC 7...), or ESC at the very end.
            Some(_) => i += 2,
            None => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_str(s: &str) -> String {
        String::from_utf8(plain(s.as_bytes())).unwrap()
    }

    #[test]
    fn cursor_moves_become_line_breaks() {
        // What OVMF + Limine 8.2.0 printed before the guest's first line.
        let raw = "\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: starting Boot0001\r\n\
                   \x1b[01;01Hl\x1b[01;02Hi\x1b[01;47H\x1b[02;01HKTAP version 1\n1..1\n";
        let text = plain_str(raw);
        assert!(text.contains("\nKTAP version 1\n1..1\n"), "{text:?}");
        assert!(text.contains("BdsDxe: starting Boot0001\r\n"), "{text:?}");
        assert!(!text.contains('\x1b'));
        let report = ktap::parse(&text);
        assert!(report.version.is_some(), "{text:?}");
    }

    #[test]
    fn plain_text_and_colours() {
        assert_eq!(plain_str("ok 1 a\n"), "ok 1 a\n");
        assert_eq!(plain_str("\x1b[31mPANIC\x1b[0m x\n"), "PANIC x\n");
        assert_eq!(plain_str("a\x1bcb\x1b"), "ab");
        assert_eq!(plain_str("a\x1b[12"), "a");
    }
}
