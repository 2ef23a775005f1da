//! Hostile input: bus (filled by issue #14's work).
