//! Hostile input: http (filled by issue #14's work).
