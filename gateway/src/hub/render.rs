//! The wire formats as the hub knows them: a slot number per socket, and one renderer that
//! turns a publication into a format's frame. What the formats are is the protocols' business
//! (`crate::protocols::Protocol` implements `Renderer`); the hub only renders a publication at
//! most once per slot and hands every member of that slot the same bytes.

use axum::extract::ws::Utf8Bytes;
use shared::event::Envelope;

/// How many formats a node can serve at once: the size of a publication's render cache.
pub(crate) const FORMATS: usize = 8;

/// A socket's wire format: a slot of the render cache, below `FORMATS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format(u8);

impl Format {
    /// Panics on a slot out of range: formats are compile-time constants of the protocols.
    pub(crate) const fn new(slot: u8) -> Self {
        assert!((slot as usize) < FORMATS, "a format's slot is below FORMATS");
        Self(slot)
    }

    pub(crate) fn slot(self) -> usize {
        self.0 as usize
    }
}

/// A frame for sockets with the `seq` of the publication it was rendered from, beside its bytes
/// (which carry it too, as their first field): nothing reads the number back out of the text.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// `None` for a frame of no numbered publication.
    pub(crate) seq: Option<u64>,
    pub(crate) bytes: Utf8Bytes,
}

impl Frame {
    /// A frame of no numbered publication.
    pub(crate) fn plain(bytes: Utf8Bytes) -> Self {
        Self { seq: None, bytes }
    }
}

/// Turns publications into frames, per format.
pub(crate) trait Renderer: Send + Sync {
    /// `format`'s frame for `envelope`, or `None` if sockets of that format do not receive it; its
    /// `seq` set when its bytes carry one.
    fn render(&self, format: Format, envelope: &Envelope) -> Option<Frame>;
}
