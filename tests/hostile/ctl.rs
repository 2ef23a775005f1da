//! Hostile input: ctl (filled by issue #14's work).
