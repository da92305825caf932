//! Just enough JSON to print one flat object on one line, without a heap
//! (the fault handlers must not allocate).
use core::fmt::{self, Write};

pub struct Obj<'a, W: Write> {
    w: &'a mut W,
    first: bool,
}

impl<'a, W: Write> Obj<'a, W> {
    pub fn begin(w: &'a mut W) -> Result<Self, fmt::Error> {
        w.write_char('{')?;
        Ok(Obj { w, first: true })
    }

    fn key(&mut self, k: &str) -> fmt::Result {
        if !self.first {
            self.w.write_char(',')?;
        }
        self.first = false;
        write!(self.w, "\"{k}\":")
    }

    pub fn str(&mut self, k: &str, v: &str) -> fmt::Result {
        self.key(k)?;
        self.w.write_char('"')?;
        for c in v.chars() {
            match c {
                '"' => self.w.write_str("\\\"")?,
                '\\' => self.w.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(self.w, "\\u{:04x}", c as u32)?,
                c => self.w.write_char(c)?,
            }
        }
        self.w.write_char('"')
    }

    /// Addresses as hex strings, so no reader rounds them through a double.
    pub fn hex(&mut self, k: &str, v: u64) -> fmt::Result {
        self.key(k)?;
        write!(self.w, "\"{v:#x}\"")
    }

    pub fn num(&mut self, k: &str, v: u64) -> fmt::Result {
        self.key(k)?;
        write!(self.w, "{v}")
    }

    pub fn opt_num(&mut self, k: &str, v: Option<u64>) -> fmt::Result {
        self.key(k)?;
        match v {
            Some(v) => write!(self.w, "{v}"),
            None => self.w.write_str("null"),
        }
    }

    pub fn bool(&mut self, k: &str, v: bool) -> fmt::Result {
        self.key(k)?;
        write!(self.w, "{v}")
    }

    pub fn hex_list(&mut self, k: &str, vs: &[u64]) -> fmt::Result {
        self.key(k)?;
        self.w.write_char('[')?;
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.w.write_char(',')?;
            }
            write!(self.w, "\"{v:#x}\"")?;
        }
        self.w.write_char(']')
    }

    /// A list of flat objects, each written by `each`.
    pub fn obj_list<T>(
        &mut self,
        k: &str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Obj<'_, W>, T) -> fmt::Result,
    ) -> fmt::Result {
        self.key(k)?;
        self.w.write_char('[')?;
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.w.write_char(',')?;
            }
            let mut o = Obj::begin(&mut *self.w)?;
            each(&mut o, item)?;
            o.end()?;
        }
        self.w.write_char(']')
    }

    pub fn end(self) -> fmt::Result {
        self.w.write_char('}')
    }
}
