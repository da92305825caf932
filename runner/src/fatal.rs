//! Errors that end the runner before (or instead of) judging any boot.

use crate::status;
use std::fmt;

#[derive(Debug)]
pub struct Fatal {
    pub status: i32,
    pub message: String,
}

impl Fatal {
    pub fn usage(message: impl Into<String>) -> Fatal {
        Fatal {
            status: status::USAGE,
            message: message.into(),
        }
    }

    pub fn setup(message: impl Into<String>) -> Fatal {
        Fatal {
            status: status::SETUP,
            message: message.into(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
