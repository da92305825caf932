//! The records the guest prints for the runner, and how they travel.
//!
//! A record is one line, `PREFIX {json}`, anywhere in the serial log: bare,
//! inside a KTAP `# ` diagnostic, or glued behind another CPU's output. Each
//! is a type in this crate, so the guest that writes it (`encode`, no heap:
//! serde-json-core into a caller's buffer) and the runner that reads it
//! (serde_json, from `json_in`) agree on every field by construction. The
//! tests round-trip every record through both libraries.
//!
//! Addresses are `Hex`, a JSON string (`"0xffffc90000004000"`), so no JSON
//! reader rounds them through a double. Names that several places spell are
//! `kinds` enums, serialized as their one spelling.

use core::fmt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A line the guest prints for the runner.
pub trait Record: Serialize {
    /// What starts the record's line, space included (`"GUARD-HIT "`).
    const PREFIX: &'static str;
    /// The scenario the record is about, so even a garbled line can be
    /// charged to it.
    fn scenario(&self) -> &str;
}

/// Why a record could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The buffer is too small for it.
    TooLong,
}

/// The buffer the guest encodes one record in: room for the longest, a
/// `GUARD-HIT` naming 64 frames by both spellings of long names (~20 KiB).
pub const BUFFER: usize = 32 * 1024;

/// The record as `PREFIX{json}` in `buf` (no newline). On `TooLong`, the
/// caller still owes the runner a line that names the scenario (see
/// `too_long_line`), so that the loss shows as an unreadable record.
pub fn encode<'b, R: Record>(record: &R, buf: &'b mut [u8]) -> Result<&'b str, EncodeError> {
    let prefix = R::PREFIX.as_bytes();
    if buf.len() < prefix.len() {
        return Err(EncodeError::TooLong);
    }
    buf[..prefix.len()].copy_from_slice(prefix);
    let n = serde_json_core::to_slice(record, &mut buf[prefix.len()..])
        .map_err(|_| EncodeError::TooLong)?;
    core::str::from_utf8(&buf[..prefix.len() + n]).map_err(|_| EncodeError::TooLong)
}

/// The line to print in place of a record that did not fit: it carries the
/// prefix and the scenario, and does not parse as the record.
pub fn too_long_line<R: Record>(record: &R) -> impl fmt::Display + '_ {
    struct Line<'r, R: Record>(&'r R);
    impl<R: Record> fmt::Display for Line<'_, R> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "{}{{\"scenario\":\"{}\",\"error\":\"record too long for the guest's buffer\"}}",
                R::PREFIX,
                self.0.scenario()
            )
        }
    }
    Line(record)
}

/// The JSON of record `R` in `line`, if the line carries one: the text
/// after `R::PREFIX` when it opens an object. A line with the prefix but no
/// object is `Some("")`, so the reader can call it unreadable, not absent.
pub fn json_in<R: Record>(line: &str) -> Option<&str> {
    let at = line.find(R::PREFIX)?;
    let rest = &line[at + R::PREFIX.len()..];
    Some(if rest.starts_with('{') { rest } else { "" })
}

/// An address or other machine word, written as a hex JSON string.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex(pub u64);

impl Hex {
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for Hex {
    fn from(v: u64) -> Hex {
        Hex(v)
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// `"0x1f"` (or `"0X1F"`) as a number; nothing else.
pub fn parse_hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hex, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Hex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex string such as \"0x1f\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Hex, E> {
                parse_hex(s)
                    .map(Hex)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// An enum whose variants each have one spelling, used on the command line,
/// in records and in reports alike: `as_str`, `from_name`, `ALL`, `Display`,
/// and serde as that string. One list of names, nowhere repeated.
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one spelling of this value.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Its position in `ALL` (for atomics that hold one).
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The value at `index` in `ALL`.
            pub fn from_index(index: usize) -> Option<$name> {
                $name::ALL.get(index).copied()
            }

            /// The value spelled `s`, if any.
            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                        f.write_str(concat!("one of: ", $($text, " "),+))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::from_name(s).ok_or_else(|| {
                            E::invalid_value(serde::de::Unexpected::Str(s), &self)
                        })
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use core::fmt::Debug;
    use serde::de::DeserializeOwned;

    /// What the guest prints for `record`, read back the way the runner
    /// reads it, must be `record` again.
    pub fn round_trip<'a, R>(record: &R, buf: &'a mut [u8]) -> &'a str
    where
        R: Record + Deserialize<'a> + PartialEq + Debug,
    {
        let line = encode(record, buf).expect("fits");
        let json = json_in::<R>(line).expect("has the prefix");
        let back: R = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(&back, record, "{line}");
        line
    }

    /// The same for owned records (no borrowed strings).
    pub fn round_trip_owned<R>(record: &R) -> std::string::String
    where
        R: Record + DeserializeOwned + PartialEq + Debug,
    {
        let mut buf = [0u8; 4096];
        let line = encode(record, &mut buf).expect("fits");
        let back: R = serde_json::from_str(json_in::<R>(line).unwrap()).unwrap();
        assert_eq!(&back, record, "{line}");
        line.into()
    }

    extern crate std;

    #[test]
    fn hex_is_a_string_both_ways() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            a: Hex,
        }
        impl Record for T {
            const PREFIX: &'static str = "T ";
            fn scenario(&self) -> &str {
                "t"
            }
        }
        for v in [0, 1, 0xffffc90000004000, u64::MAX] {
            let line = round_trip_owned(&T { a: Hex(v) });
            assert_eq!(line, std::format!("T {{\"a\":\"{:#x}\"}}", v));
        }
        for bad in [
            "\"ffff\"",
            "\"0x\"",
            "\"0xg\"",
            "12",
            "\"0x1ffffffffffffffff\"",
        ] {
            let json = std::format!("{{\"a\":{bad}}}");
            assert!(serde_json::from_str::<T>(&json).is_err(), "{bad}");
        }
        assert_eq!(parse_hex("0X1F"), Some(0x1f));
    }

    #[test]
    fn a_record_that_does_not_fit_says_so_and_names_its_scenario() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            scenario: std::string::String,
            a: Hex,
        }
        impl Record for T {
            const PREFIX: &'static str = "T ";
            fn scenario(&self) -> &str {
                &self.scenario
            }
        }
        let t = T {
            scenario: "stack.recursion".into(),
            a: Hex(u64::MAX),
        };
        let mut small = [0u8; 20];
        assert_eq!(encode(&t, &mut small), Err(EncodeError::TooLong));
        let line = std::format!("{}", too_long_line(&t));
        let json = json_in::<T>(&line).unwrap();
        assert!(json.contains("\"scenario\":\"stack.recursion\""), "{line}");
        assert!(serde_json::from_str::<T>(json).is_err());
        assert_eq!(json_in::<T>("T garbage"), Some(""));
        assert_eq!(json_in::<T>("nothing here"), None);
        assert_eq!(json_in::<T>("cpu1 noiseT {}"), Some("{}"));
    }
}
